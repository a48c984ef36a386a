"""Classification Accuracy Score (Ravuri & Vinyals 2019): a classifier trained only on a conditional
model's samples (x ~ G(z, y), label y) and tested on real held-out data. It rewards samples that carry
their class, in the variety a classifier needs; the floor is the same classifier trained on as many
real training images. The classifier is the domain feature network's recipe (eval.featurenet)."""

from __future__ import annotations

import dataclasses

import torch

from genlab.metrics.featurenet import Recipe, _accuracy, fit_classifier, recipe_for
from genlab.metrics.records import Entry, Scoring
from genlab.pixels import to_levels


def classification_accuracy_score(samples: torch.Tensor, labels: torch.Tensor, test_x: torch.Tensor,
                                  test_y: torch.Tensor, recipe: Recipe, device="cpu") -> float:
    """Test accuracy on real 8-bit test_x of the recipe's classifier trained on samples in [-1, 1] with their labels."""
    # Samples leave the model as 8-bit images, as they do at every boundary (and as the real data is stored).
    x8 = to_levels(samples.float()).to(torch.uint8)
    net = fit_classifier(x8, labels.long(), recipe, device, "cas classifier").to(device)
    return _accuracy(net, test_x, test_y, device)


def score(s: Scoring) -> dict[str, Entry]:
    """CAS of a conditional model's samples; for the floor, the classifier trained on as many real training images."""
    data = s.ev.data
    fn = {k: v for k, v in s.ev.settings.featurenet.items() if k not in ("cache_dir", "limit")}
    recipe = dataclasses.replace(recipe_for(data, **fn), n_train=len(s.x))
    test_x, test_y = data.raw("test"), data.test_y
    if s.floor:
        # Trained on training images: the floor's own held-out images may be the test split it is tested on.
        net = fit_classifier(data.raw("train")[:len(s.x)], data.train_y[:len(s.x)], recipe, s.ev.device,
                             "cas floor classifier")
        acc = _accuracy(net.to(s.ev.device), test_x, test_y, s.ev.device)
    elif s.labels is None:
        return {}
    else:
        acc = classification_accuracy_score(s.x, s.labels, test_x, test_y, recipe, s.ev.device)
    return {"cas": Entry(acc, len(s.x), len(test_y), recipe.id, {"epochs": recipe.epochs, "tested_on": "test"})}
