"""Stacked MNIST / Fashion-MNIST: three base images as the RGB channels, their classes the mode."""

from __future__ import annotations

import torch
from conftest import compose

from genlab import data as data_lib


def test_stacked_channels_are_base_images(mnist_root, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(mnist_root))
    for name, base in (("stacked_mnist", "mnist"), ("stacked_fashion_mnist", "fashion_mnist")):
        cfg = compose([f"dataset={name}", "dataset.n_train=50", "dataset.n_test=20"]).dataset
        d = data_lib.build(cfg)
        assert d.shape == (3, 28, 28) and len(d) == 50 and len(d.raw("test")) == 20
        assert data_lib.expected_spec(cfg).shape == (3, 28, 28)
        b = data_lib.build(compose([f"dataset={base}"]).dataset)
        ytr, _ = d.info["stacked_labels"]
        flat = b.raw("train")[:, 0].reshape(len(b), -1)
        for i in range(10):
            digits = []
            for ch in range(3):
                hit = (flat == d.raw("train")[i, ch].reshape(1, -1)).all(1).nonzero()[:, 0]
                assert len(hit) >= 1  # the channel is one of the base images
                digits.append(int(b.train_y[hit[0]]))
            assert int(ytr[i]) == digits[0] * 100 + digits[1] * 10 + digits[2]
        again = data_lib.build(cfg)
        assert torch.equal(again.raw("train"), d.raw("train"))  # drawn once, the same every time


def test_stacked_modes_and_kl_against_brute_force():
    import math

    from collections import Counter

    from genlab.metrics.stacked import mode_counts, stacked_metrics

    g = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 4, (500, 3), generator=g)  # only digits 0..3 occur: at most 64 triples
    counts = mode_counts(classes)
    brute = Counter(tuple(map(int, c)) for c in classes)
    assert counts.sum() == 500 and int((counts > 0).sum()) == len(brute)
    assert counts[1 * 100 + 2 * 10 + 3] == brute[(1, 2, 3)]
    r = stacked_metrics(counts)
    kl = sum(n / 500 * math.log(n / 500 * 1000.0) for n in brute.values())
    assert r["stacked_modes"] == len(brute) and abs(r["stacked_kl"] - kl) < 1e-9
    collapsed = stacked_metrics(mode_counts(torch.zeros(10, 3, dtype=torch.long)))
    assert collapsed["stacked_modes"] == 1 and abs(collapsed["stacked_kl"] - torch.log(torch.tensor(1000.0)).item()) < 1e-6


def test_gaussian_blur_closed_form():
    import math

    from genlab.pixels import gaussian_blur

    flat = torch.full((2, 3, 9, 9), 0.25)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)  # a constant image stays constant
    delta = torch.zeros(1, 1, 15, 15)
    delta[0, 0, 7, 7] = 1.0
    out = gaussian_blur(delta, 1.0)[0, 0]
    assert abs(float(out.sum()) - 1.0) < 1e-6
    z = sum(math.exp(-t * t / 2) for t in range(-3, 4))
    assert abs(float(out[7, 8]) - math.exp(-0.5) / z ** 2) < 1e-6 and abs(float(out[7, 7]) - 1 / z ** 2) < 1e-6


def test_stacked_floor_counts_the_true_triples(mnist_root, monkeypatch):
    """Held-out stacked images scored by the base classifier: at most as many modes as true triples there."""
    from genlab.metrics.evaluator import Evaluator

    monkeypatch.setenv("GENLAB_DATA", str(mnist_root))
    d = data_lib.build(compose(["dataset=stacked_mnist", "dataset.n_train=64", "dataset.n_test=20"]).dataset)
    from genlab.metrics.records import EvalSettings

    ev = Evaluator(d, EvalSettings(num_samples=20, featurenet={"epochs": 1}), metrics=["stacked"])
    out = ev.floor(["stacked"])
    true = len(set(d.info["stacked_labels"][1].tolist()))
    assert 1 <= out["stacked_modes"].value <= true and out["stacked_kl"].value >= 0
