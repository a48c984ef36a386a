"""Data layer: IDX loading, offline errors, image folders, toy geometry, the batch sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genlab import data as data_lib
from genlab.data.images import read_idx
from genlab.errors import GenlabError
from tests.conftest import compose, make_mnist, run_cli, write_idx

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def test_idx_roundtrip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, size=(5, 3, 4)).astype(np.uint8)
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        write_idx(tmp_path / name, a)
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(GenlabError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", a)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-7])
    with pytest.raises(GenlabError, match="truncated"):
        read_idx(tmp_path / "short")


def test_mnist_loader_on_tiny_idx_files(mnist_root):
    cfg = compose(["dataset=mnist", f"dataset.root={mnist_root}"]).dataset
    d = data_lib.build(cfg)
    assert d.kind == "image" and d.shape == (1, 28, 28) and d.num_classes == 10
    assert len(d) == 64 and len(d.raw("test")) == 32
    assert d.raw().dtype == torch.uint8
    x = d.train_x
    assert x.min() >= -1 and x.max() <= 1 and x.max() == 1.0  # 255 -> +1
    assert d.train_y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert data_lib.expected_spec(cfg).shape == d.spec.shape


def test_resize_channels_and_class_filter(mnist_root):
    cfg = compose(["dataset=mnist", f"dataset.root={mnist_root}", "dataset.image_size=32",
                   "dataset.channels=3", "dataset.classes=[3,7]"]).dataset
    d = data_lib.build(cfg)
    assert d.shape == (3, 32, 32)
    assert set(d.train_y.tolist()) == {3, 7} and set(d.test_y.tolist()) == {3, 7}
    assert data_lib.expected_spec(cfg).shape == (3, 32, 32)


def test_missing_dataset_offline_is_one_clear_line(tmp_path):
    cfg = compose(["dataset=mnist", f"dataset.root={tmp_path}", "dataset.download=false"]).dataset
    with pytest.raises(GenlabError, match="dataset mnist not found") as e:
        data_lib.build(cfg)
    assert str(tmp_path) in str(e.value) and "dataset.root" in str(e.value)


def test_cli_missing_dataset_offline(tmp_path):
    # With no network the download fails; the user gets one line naming where genlab looked.
    r = run_cli(["train", "dataset=mnist", "trainer=debug", f"dataset.root={tmp_path / 'd'}",
                 "trainer.progress=false"], tmp_path, timeout=300)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "dataset mnist not found" in lines[0] and "looked in" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert "Error downloading" not in lines[0]  # the reason, not torchvision's dangling header
    # checked before Hydra makes a run folder; the failed download removed the folders it made
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "d").exists()


@pytest.mark.skipif(not FASHION_SYSTEM.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    cfg = compose(["dataset=fashion_mnist", f"dataset.root={tmp_path}", "dataset.download=false",
                   "dataset.limit=1000"]).dataset
    d = data_lib.build(cfg)
    assert d.shape == (1, 28, 28) and len(d) == 1000 and len(d.raw("test")) == 10000
    assert d.class_names[7] == "sneaker"


def _png_folder(root: Path, n: int, size=(40, 30), classes=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / (classes[i % len(classes)] if classes else "")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3)).astype(np.uint8)).save(sub / f"{i}.png")


def test_image_folder(tmp_path):
    _png_folder(tmp_path / "imgs", 10)
    cfg = compose(["dataset=image_folder", f"dataset.path={tmp_path / 'imgs'}", "dataset.image_size=16",
                   "dataset.test_fraction=0.2"]).dataset
    d = data_lib.build(cfg)
    assert d.shape == (3, 16, 16) and len(d) == 8 and len(d.raw("test")) == 2
    assert d.train_y is None and d.num_classes is None

    _png_folder(tmp_path / "labelled", 6, classes=["cats", "dogs"])
    cfg = compose(["dataset=image_folder", f"dataset.path={tmp_path / 'labelled'}", "dataset.image_size=8",
                   "dataset.channels=1"]).dataset
    d = data_lib.build(cfg)
    assert d.num_classes == 2 and d.class_names == ["cats", "dogs"] and d.shape == (1, 8, 8)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    cfg = compose(["dataset=image_folder", f"dataset.path={tmp_path / 'empty'}"]).dataset
    with pytest.raises(GenlabError, match="no images found"):
        data_lib.build(cfg)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    cfg = compose(["dataset=image_folder", f"dataset.path={tmp_path / 'bad'}"]).dataset
    with pytest.raises(GenlabError, match="cannot read image"):
        data_lib.build(cfg)
    cfg = compose(["dataset=image_folder"]).dataset
    with pytest.raises(GenlabError, match="needs dataset.path"):
        data_lib.build(cfg)


@pytest.mark.parametrize("name, n_modes, std", [("ring8", 8, 0.01), ("grid25", 25, 0.05)])
def test_toy_mixture_geometry(name, n_modes, std):
    cfg = compose([f"dataset={name}", "dataset.n_train=20000", "dataset.n_test=100"]).dataset
    d = data_lib.build(cfg)
    x, k = d.train_x.double(), d.train_y
    centers = d.info["centers"].double()
    assert len(centers) == n_modes and d.shape == (2,)
    resid = x - centers[k]
    assert resid.std().item() == pytest.approx(std, rel=0.05)
    counts = torch.bincount(k, minlength=n_modes).double()
    assert (counts / counts.sum() - 1 / n_modes).abs().max() < 0.02
    if name == "ring8":
        assert centers.norm(dim=1).allclose(torch.ones(8, dtype=torch.float64))
    else:
        assert sorted(set(centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


def test_batches_cover_each_epoch_once_and_resume_exactly():
    cfg = compose(["dataset=grid25", "dataset.n_train=10", "dataset.n_test=5"]).dataset
    d = data_lib.build(cfg, seed=3)
    epoch = torch.cat([d.next(4).x, d.next(4).x, d.next(2).x])
    assert torch.unique(epoch, dim=0).shape[0] == 10  # a permutation: every point exactly once
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in d.state_dict().items()}
    ahead = [d.next(3).x for _ in range(5)]
    d.load_state_dict(state)
    again = [d.next(3).x for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(ahead, again))
