"""Classification Accuracy Score (Ravuri & Vinyals 2019): a classifier trained only on a conditional
model's samples (x ~ G(z, y), label y) and tested on real held-out data. It rewards samples that carry
their class, in the variety a classifier needs; the floor is the same classifier trained on as many
real images."""

from __future__ import annotations

import torch

from genlab.metrics.featurenet import Recipe, _accuracy, fit_classifier
from genlab.pixels import to_levels


def classification_accuracy_score(samples: torch.Tensor, labels: torch.Tensor, test_x: torch.Tensor,
                                  test_y: torch.Tensor, recipe: Recipe, device="cpu") -> float:
    """Test accuracy on real 8-bit test_x of the recipe's classifier trained on samples in [-1, 1] with their labels."""
    # Samples leave the model as 8-bit images, as they do at every boundary (and as the real data is stored).
    x8 = to_levels(samples.float()).to(torch.uint8)
    net = fit_classifier(x8, labels.long(), recipe, device, "cas classifier").to(device)
    return _accuracy(net, test_x, test_y, device)
