"""genlab sample: NPZ contract, reproducible seeds, interpolation, traversal, truncation, temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import TINY, compose

TOY = ["dataset.n_train=500", "dataset.n_test=200", "++model.generator.hidden=16", "++model.generator.depth=1",
       "++model.discriminator.hidden=16", "++model.discriminator.depth=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from genlab.commands.train import train
    from tests.conftest import make_mnist

    tmp = tmp_path_factory.mktemp("runs")
    root = make_mnist(tmp / "data")
    out = {}
    out["points"] = tmp / "points"
    train(compose([*TINY, "model=gan", "dataset=ring8", *TOY]), out["points"])
    out["image"] = tmp / "image"
    train(compose([*TINY, "model=gan", f"dataset.root={root}", "++model.generator.base_channels=8",
                   "++model.discriminator.base_channels=8"]), out["image"])
    return out


def do_sample(run, tmp_path, name, *overrides):
    from genlab.commands.sample import sample

    out = tmp_path / name
    sample(compose([f"run={run}", f"out={out}", *overrides], config_name="sample"))
    return np.load(out) if out.suffix == ".npz" else out


def test_npz_shapes_and_dtypes(runs, tmp_path):
    img = do_sample(runs["image"], tmp_path, "i.npz", "num_samples=12")
    assert set(img.files) == {"images"} and img["images"].shape == (12, 28, 28, 1) and img["images"].dtype == np.uint8
    pts = do_sample(runs["points"], tmp_path, "p.npz", "num_samples=7")
    assert set(pts.files) == {"points"} and pts["points"].shape == (7, 2) and pts["points"].dtype == np.float32


def test_same_seed_same_samples(runs, tmp_path):
    a = do_sample(runs["image"], tmp_path, "a.npz", "num_samples=9", "seed=3")["images"]
    b = do_sample(runs["image"], tmp_path, "b.npz", "num_samples=9", "seed=3")["images"]
    c = do_sample(runs["image"], tmp_path, "c.npz", "num_samples=9", "seed=4")["images"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # the batch size does not change what a seed gives
    d = do_sample(runs["image"], tmp_path, "d.npz", "num_samples=9", "seed=3", "batch_size=4")["images"]
    assert np.array_equal(a, d)


def test_slerp_endpoints_and_norm():
    from genlab.commands.sample import slerp

    a, b = torch.randn(3, 16, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # equal norms
    path = slerp(a, b, 7)
    assert path.shape == (3, 7, 16)
    assert torch.allclose(path[:, 0], a) and torch.allclose(path[:, -1], b)
    # on the great circle: the norm stays that of the endpoints (a straight line would dip)
    assert torch.allclose(path.norm(dim=2), a.norm(dim=1, keepdim=True).expand(3, 7))


def test_interp_and_traverse_modes(runs, tmp_path):
    x = do_sample(runs["image"], tmp_path, "interp.npz", "mode=interp", "num_samples=20", "path_length=5")["images"]
    assert x.shape == (20, 28, 28, 1)  # 4 rows of 5
    png = do_sample(runs["image"], tmp_path, "interp.png", "mode=interp", "num_samples=20", "path_length=5")
    from PIL import Image

    w, h = Image.open(png).size
    assert w == 5 * 30 + 2 and h == 4 * 30 + 2  # 5 per row, 4 rows (28 px + 2 px padding)
    t = do_sample(runs["points"], tmp_path, "trav.npz", "mode=traverse", "num_samples=6", "path_length=3")["points"]
    assert t.shape == (6, 2)


def test_traversal_latents_vary_one_coordinate():
    from genlab.commands.sample import traversal_latents

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def latent(self, n, generator=None):
            return torch.randn(n, 4, generator=generator)

    z = traversal_latents(M(), rows=2, steps=3, seed=0).view(2, 3, 4)
    assert torch.equal(z[0, :, 0], torch.tensor([-2.5, 0.0, 2.5])) and torch.equal(z[1, :, 1], torch.tensor([-2.5, 0.0, 2.5]))
    assert torch.equal(z[0, :, 1:], z[0, :1, 1:].expand(3, 3))  # the other coordinates are fixed


def test_truncation_bounds_the_latent(runs):
    from genlab.commands.common import load_run
    from genlab.commands.sample import truncated_latent

    model = load_run(str(runs["points"]), "last", "cpu").model
    z = truncated_latent(model, 2000, 0.5, torch.Generator().manual_seed(0))
    assert z.shape == (2000, 64) and z.abs().max() <= 0.5 and z.std() > 0.2


def test_temperature_is_for_flows(runs, tmp_path):
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match="temperature= applies to flows"):
        do_sample(runs["points"], tmp_path, "t.npz", "temperature=0.7")
    with pytest.raises(GenlabError, match="mode=bogus"):
        do_sample(runs["points"], tmp_path, "t.npz", "mode=bogus")
