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
