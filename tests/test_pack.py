"""PacGAN packing (model.pack=m): layout, D's input size, the gradient penalty per pack, the checks, a run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose

from genlab.config import validate
from genlab.errors import GenlabError
from genlab.models.gan import pack
from genlab.models.penalties import gradient_penalty, interpolates, r1_penalty


def test_pack_joins_consecutive_samples_along_dim_1():
    x = torch.arange(12.0).view(6, 2)
    p = pack(x, 3)
    assert p.shape == (2, 6)
    assert torch.equal(p[1], torch.cat([x[3], x[4], x[5]]))
    imgs = torch.randn(4, 3, 8, 8)
    q = pack(imgs, 2)
    assert q.shape == (2, 6, 8, 8)
    assert torch.equal(q[1, 3:], imgs[3]) and torch.equal(q[0, :3], imgs[0])


def test_penalties_are_per_pack():
    """A linear critic on packs of 2 points: ||grad|| of a pack is ||w|| (closed form), not ||w|| / sqrt(2)."""
    w = torch.tensor([3.0, 0.0, 0.0, 4.0])  # ||w|| = 5; each half has norm 3 and 4

    def critic(x):
        return pack(x, 2) @ w

    x = torch.randn(8, 2)
    assert math.isclose(float(gradient_penalty(critic, x, group=2)), (5 - 1) ** 2, rel_tol=1e-6)
    assert math.isclose(float(r1_penalty(critic, x, group=2)), 25.0, rel_tol=1e-6)
    real, fake = torch.zeros(6, 2), torch.ones(6, 2)
    alpha = interpolates(real, fake, group=3)[:, 0]
    assert torch.equal(alpha[:3], alpha[0].expand(3)) and torch.equal(alpha[3:], alpha[3].expand(3))


def test_packed_discriminator_sees_m_samples(tmp_path):
    from genlab.config import build_model
    from genlab.data import expected_spec

    cfg = compose(["model=wgan_gp", "dataset=grid25", "model.pack=4", "trainer.batch_size=64"])
    validate(cfg)
    model = build_model(cfg, expected_spec(cfg.dataset))
    assert model.discriminator.body[0].in_features == 8  # 4 points of 2 coordinates
    from genlab.types import Batch, StepContext

    loss, logs = model.discriminator_step(Batch(torch.randn(64, 2)), StepContext(0))
    assert torch.isfinite(loss) and "gradient_penalty" in logs
    assert model.discriminate(torch.randn(64, 2))[0].shape == (16,)
    assert model.critic_values(torch.randn(10, 2)).shape == (10,)  # the heat-map: one score per point


@pytest.mark.parametrize("overrides, message", [
    (["model=cgan", "dataset=fashion_mnist", "model.pack=2"], "cannot be packed"),
    (["model=gan", "dataset=grid25", "model.pack=0"], "model.pack must be >= 1"),
    (["model=gan", "dataset=grid25", "model.pack=3", "trainer.batch_size=64"], "divisible"),
])
def test_bad_packing_is_refused(overrides, message):
    with pytest.raises(GenlabError, match=message):
        validate(compose(overrides))


def test_packed_gan_trains_and_images_pack_along_channels(tmp_path, mnist_root, monkeypatch):
    from genlab.commands.train import train

    monkeypatch.setenv("GENLAB_DATA", str(mnist_root))
    cfg = compose(["model=dcgan", "dataset=fashion_mnist", "trainer=debug", "trainer.progress=false", "model.pack=2",
                   "model.discriminator.base_channels=8", "model.generator.base_channels=8"])
    last = train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert math.isfinite(float(last["discriminator/loss"]))
