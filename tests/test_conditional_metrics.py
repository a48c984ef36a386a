"""Intra-class FID against its closed form and the classification accuracy score on separable data."""

from __future__ import annotations

import pytest
import torch

from genlab import metrics as M
from genlab.metrics.cas import classification_accuracy_score
from genlab.metrics.featurenet import Recipe
from genlab.metrics.intra_fid import intra_class_fid


def _features(n_per_class=200, k=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(n_per_class)
    feats = torch.randn(len(labels), d, generator=g, dtype=torch.float64) + 5 * labels[:, None]
    return feats, labels


def test_intra_class_fid_of_shifted_classes_is_the_mean_squared_shift():
    ref, labels = _features()
    shifts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [1, 1, 1]], dtype=torch.float64)
    feats = ref + shifts[labels]  # a translation keeps each class's covariance: FID_k = ||shift_k||^2
    r = intra_class_fid(feats, labels, ref, labels, 4)
    assert r["per_class"] == pytest.approx([0.0, 1.0, 4.0, 3.0], abs=1e-6)
    assert r["intra_fid"] == pytest.approx(2.0, abs=1e-6)


def test_intra_class_fid_sees_wrong_labels_that_the_marginal_fid_misses():
    ref, labels = _features()
    swapped = (labels + 1) % 4  # the right images under the wrong labels: the same marginal
    assert M.fid_from_features(ref, ref) == pytest.approx(0.0, abs=1e-6)
    assert intra_class_fid(ref, swapped, ref, labels, 4)["intra_fid"] > 20  # class means are 5 apart
    with pytest.raises(ValueError, match="class 3 has 1 and 200"):
        intra_class_fid(ref[:601], labels[:601], ref, labels, 4)


def _squares(n, seed):
    """Images whose class is the position of a bright square (10 classes), in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.2 - 1
    for i, k in enumerate(y.tolist()):
        r, c = (k // 5) * 8, (k % 5) * 3
        x[i, 0, r:r + 6, c:c + 3] = 1.0
    return x, y


def test_classification_accuracy_score_is_high_for_class_true_samples_and_low_for_mislabelled_ones():
    samples, y = _squares(300, 0)
    test, test_y = _squares(100, 1)
    test8 = ((test + 1) * 127.5).round().to(torch.uint8)
    recipe = Recipe(dataset="squares", shape=(1, 16, 16), num_classes=10, n_train=300, epochs=4, batch_size=32,
                    width=8, feature_dim=32)
    good = classification_accuracy_score(samples, y, test8, test_y, recipe)
    wrong = classification_accuracy_score(samples, (y + 1) % 10, test8, test_y, recipe)
    # trained on labels shifted by one class and scored on the true ones: at or below chance (0.1)
    assert good > 0.9 and wrong <= 0.15
