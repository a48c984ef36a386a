"""Intra-class FID against its closed form and the classification accuracy score on separable data."""

from __future__ import annotations

import pytest
import torch

from genlab import metrics as M
from genlab.errors import GenlabError
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


def test_intra_fid_and_cas_are_rows_of_genlab_eval_for_conditional_models(mnist_root, tmp_path):
    from genlab.commands.eval import evaluate_run
    from genlab.metrics import table
    from tests.test_eval import TINY_FN, eval_cfg, train_run

    assert table.better("intra_fid[lenet-mnist]") == "lower" and table.better("cas") == "higher"
    small = ["++model.generator.base_channels=8", "++model.discriminator.base_channels=8", f"dataset.root={mnist_root}"]
    run = train_run(tmp_path, "cgan", ["model=cgan", *small])
    settings = ["num_samples=40", f"featurenet.cache_dir={tmp_path / 'fn'}", *TINY_FN]
    rows = {r["metric"]: r for r in evaluate_run(eval_cfg(run, "metrics=[intra_fid,cas]", *settings))["metrics"]}
    assert set(rows) == {"intra_fid[lenet-mnist]", "cas"}
    intra, cas = rows["intra_fid[lenet-mnist]"], rows["cas"]
    assert intra["value"] >= 0 and intra["better"] == "lower" and intra["num_samples"] == 40
    assert len(intra["per_class"]) == 10
    assert 0 <= cas["value"] <= 1 and cas["better"] == "higher" and cas["num_reference"] == 32  # the test split
    # the floors: held-out real images per class; a classifier trained on as many real training images
    assert intra["floor"] is not None and intra["floor"] >= 0 and 0 <= cas["floor"] <= 1
    # an unconditional model has no labels to ask for: the rows do not apply, a one-line error
    plain = train_run(tmp_path, "gan", ["model=gan", *small])
    with pytest.raises(GenlabError, match=r"none of metrics=\['intra_fid', 'cas'\] applies to mnist / gan"):
        evaluate_run(eval_cfg(plain, "metrics=[intra_fid,cas]", *settings))
