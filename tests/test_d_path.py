"""The one path of D's inputs (GAN.discriminate + augmentation), steps that adapt from their own logs
with state in buffers (checkpointed, resumed bit-exactly), and StyleGAN2's lazy-R1 optimizer rescaling."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from genlab.commands.train import train
from genlab.models import augment as aug
from genlab.models.base import Batch, Spec, StepContext
from genlab.models.conditional import ConditionalGAN
from genlab.models.gan import GAN
from tests.conftest import assert_same_state, compose

CTX = StepContext(0)
MLP = {"arch": "mlp", "hidden": 8, "depth": 1}


class Recorder(aug.Augment):
    """Adds a known offset and records every input it is given."""

    def __init__(self, cfg=None, spec=None):
        super().__init__(cfg, spec)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if not self.training:
            return x
        self.seen.append(x.detach().clone())
        return x + 100.0


class Adaptive(aug.Augment):
    """ADA's control in miniature: p moves by 0.125 towards making E[sign D(real)] reach 0.6, in a buffer."""

    def __init__(self, cfg=None, spec=None):
        super().__init__(cfg, spec)
        self.register_buffer("p", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        if not self.training:
            return x
        keep = (torch.rand(len(x), *[1] * (x.dim() - 1), device=x.device) >= self.p).to(x.dtype)
        return x * keep + x.flip(-1) * (1 - keep)

    def adapt(self, logs):
        self.p.add_(0.125 * torch.sign(logs["real_sign"] - 0.6)).clamp_(0, 1)
        self.updates += 1


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(aug.AUGMENTS, "recorder", f"{__name__}.Recorder")
    monkeypatch.setitem(aug.AUGMENTS, "adaptive", f"{__name__}.Adaptive")


def _gan(cls=GAN, num_classes=None, **over):
    cfg = OmegaConf.merge(OmegaConf.structured(cls.Config), {"generator": MLP, "discriminator": MLP, "z_dim": 2,
                                                              **over})
    return cls(cfg, Spec("points", (2,), num_classes))


def test_every_discriminator_input_goes_through_the_augmentation(registered):
    model = _gan(augment="recorder", gp_weight=1.0, r1_weight=1.0)
    real = torch.randn(6, 2)
    torch.manual_seed(0)
    model.discriminator_step(Batch(real), CTX)
    torch.manual_seed(0)
    fake = model.generator(torch.randn(6, 2)).detach()  # the D step's first draw: the fakes' noise
    seen = model.augment.seen
    assert len(seen) == 4  # real, fake, the gradient penalty's interpolates, R1's reals
    assert torch.equal(seen[0], real) and torch.allclose(seen[1], fake)
    alpha = (seen[2] - fake) / (real - fake)  # interpolates: one alpha per sample on the real-fake line
    assert torch.allclose(alpha[:, 0], alpha[:, 1], atol=1e-4) and ((alpha >= 0) & (alpha <= 1)).all()
    assert torch.equal(seen[3], real)
    # G's step: its fakes (and D(real) for losses that need it) go the same way
    seen.clear()
    model.generator_step(Batch(real), CTX)
    assert len(seen) == 1 and seen[0].shape == (6, 2)
    # lazy R1 too, and the augmentation changes what D scores (x + 100 here)
    seen.clear()
    lazy = _gan(augment="recorder", r1_weight=1.0, r1_every=4)
    lazy.r1_step(Batch(real), CTX)
    assert len(lazy.augment.seen) == 1 and torch.equal(lazy.augment.seen[0], real)
    assert torch.allclose(lazy.discriminate(real)[0], lazy.discriminator(real + 100.0))
    # in eval mode (visuals, heat-maps) D sees its inputs unaugmented
    lazy.eval()
    assert torch.allclose(lazy.critic_values(real), lazy.discriminator(real))


def test_conditional_wrong_labels_also_pass_through_discriminate(registered):
    model = _gan(ConditionalGAN, augment="recorder", num_classes=3, d_conditioning="projection",
                 wrong_label_weight=0.5)
    model.discriminator_step(Batch(torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])), CTX)
    assert len(model.augment.seen) == 3  # real, fake, real under wrong labels


def test_no_variant_may_override_discriminate():
    with pytest.raises(TypeError, match="heads"):
        class Bad(GAN):  # noqa: F841 - the class statement itself must fail
            def discriminate(self, x, cond=None):
                return self.heads(x, cond)


def test_unknown_augmentation_is_a_config_problem():
    cfg = OmegaConf.merge(OmegaConf.structured(GAN.Config), {"augment": "nope"})
    assert "unknown model.augment=nope" in GAN.check(cfg, Spec("points", (2,)))


def test_after_hooks_get_the_step_logs_and_adaptive_buffers_resume_bit_exactly(registered, tmp_path):
    over = ["model=gan", "dataset=grid25", "dataset.n_train=256", "dataset.n_test=64", "trainer=debug",
            "trainer.progress=false", "model.generator.hidden=16", "model.discriminator.hidden=16",
            "model.augment=adaptive", "model.n_critic=2", "trainer.sample_every=0"]
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    train(compose([*over, "trainer.max_steps=6"]), straight)
    train(compose([*over, "trainer.max_steps=3"]), first)
    train(compose([*over, "trainer.max_steps=6", f"trainer.resume={first}"]), second)
    load = lambda d: torch.load(d / "checkpoints" / "last.pt", weights_only=True)  # noqa: E731
    a, mid, b = load(straight), load(first), load(second)
    assert int(a["model"]["augment.updates"]) == 6 * 2  # adapt() ran after every D update, none after G's
    assert int(mid["model"]["augment.updates"]) == 3 * 2
    p = float(a["model"]["augment.p"])
    assert 0 <= p <= 1 and p != 0.0  # the logs reached it and moved p
    assert_same_state(a, b)  # p, the counter and every weight: bit-identical across the resume


def test_lazy_r1_rescales_the_discriminators_adam_as_stylegan2(tmp_path):
    from genlab.engine.trainer import Trainer

    cfg = compose(["model=gan", "dataset=grid25", "dataset.n_train=64", "dataset.n_test=32", "trainer=debug",
                   "model.r1_weight=1", "model.r1_every=4", "optimizer.lr=0.001", "optimizer.paper={}",
                   "optimizer.betas=[0.5,0.99]"])
    from genlab import data as data_lib
    from genlab.config import build_model

    data = data_lib.build(cfg.dataset)
    model = build_model(cfg, data.spec)
    trainer = Trainer(cfg, tmp_path)
    trainer.setup(model, data)
    d, g = trainer.optimizers["discriminator"].param_groups[0], trainer.optimizers["generator"].param_groups[0]
    c = 4 / 5
    assert d["lr"] == pytest.approx(0.001 * c) and d["betas"] == pytest.approx((0.5 ** c, 0.99 ** c))
    assert g["lr"] == pytest.approx(0.001) and g["betas"] == pytest.approx((0.5, 0.99))
    # not lazy: as configured
    assert _gan(r1_weight=1.0, r1_every=1).optimizer_ratio("discriminator") == 1.0


def test_cyclegan_is_the_template_over_two_pairs(registered):
    from genlab.config import build_model
    from genlab.models.cyclegan import CycleGAN

    cfg = compose(["model=cyclegan", "model.generator.base_channels=4", "model.generator.n_blocks=1",
                   "model.discriminator.base_channels=4", "model.discriminator.n_layers=1", "model.pool_size=0",
                   "model.augment=recorder", "model.gp_weight=1", "model.ema_decay=0.5"])
    model = build_model(cfg, Spec("image", (1, 16, 16), None, domains=2))
    assert isinstance(model, CycleGAN) and isinstance(model, GAN)
    a, b = torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1
    model.generator_step(Batch(a, b), CTX)
    assert len(model.augment.seen) == 2  # G(a) judged by D_B, F(b) by D_A
    model.augment.seen.clear()
    _, logs = model.discriminator_step(Batch(a, b), CTX)
    # per domain: real, pooled fake, the penalty's interpolates
    assert len(model.augment.seen) == 6 and torch.equal(model.augment.seen[0], a) and torch.equal(model.augment.seen[3], b)
    assert "real_sign" in logs and "D_a_gradient_penalty" in logs
    steps = {s.name: s for s in model.schedule()}
    assert steps["discriminator"].after == model.after_discriminator and steps["generator"].after == model.update_ema
    assert model.sampler is model.generator_ema  # the template's EMA, over both generators


def _small_cyclegan(*over):
    from genlab.config import build_model

    cfg = compose(["model=cyclegan", "model.generator.base_channels=4", "model.generator.n_blocks=1",
                   "model.discriminator.base_channels=4", "model.discriminator.n_layers=1", "model.pool_size=0", *over])
    return build_model(cfg, Spec("image", (1, 16, 16), None, domains=2))


def test_cyclegan_takes_lecam_with_anchors_per_discriminator():
    """LeCam is the template's regulariser on each of CycleGAN's two discriminators, each with its own anchors;
    on the first step (anchors 0) R_LC is E[D(real)^2] + E[D(fake)^2] of that D."""
    model = _small_cyclegan("model.lecam_weight=0.5")
    keys = {k for k in model.state_dict() if k.startswith("lecam.")}
    assert keys == {f"lecam.{d}.anchor_{s}" for d in "ab" for s in ("real", "fake")}
    a, b = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    model.generator_step(Batch(a, b), CTX)
    fakes = dict(model._fakes)
    with torch.no_grad():
        expect = {k: model.discriminator[k](r).pow(2).mean() + model.discriminator[k](fakes[k]).pow(2).mean()
                  for k, r in (("a", a), ("b", b))}
        d_real_b = model.discriminator["b"](b).mean()
    loss, logs = model.discriminator_step(Batch(a, b), CTX)
    for k in "ab":
        assert torch.allclose(logs[f"D_{k}_lecam"], expect[k], rtol=1e-5)
    assert torch.allclose(model.lecam["b"].anchor_real, (1 - 0.99) * d_real_b, rtol=1e-5)
    assert not torch.equal(model.lecam["a"].anchor_real, model.lecam["b"].anchor_real)


def test_cyclegan_packs_its_discriminators_inputs():
    model = _small_cyclegan("model.pack=2")
    first = next(m for m in model.discriminator["a"].modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 2  # two 1-channel images joined along channels
    x = torch.rand(6, 1, 16, 16)
    assert model.discriminate(x, "a")[0].shape[0] == 3  # one patch map per pack
    loss, logs = model.discriminator_step(Batch(x, x.flip(0)), CTX)
    assert torch.isfinite(loss)
