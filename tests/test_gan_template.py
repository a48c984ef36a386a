"""The GAN template: RaGAN's optimum against a closed form, R1 (lazy and not) for every variant, the
gradient penalty in every variant, declared Config/check on every model, typed loss parameters, and
steps that run every N trainer steps or draw no data."""

import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from genlab.cli import group_options
from genlab.config import build_model, model_class, validate
from genlab.errors import GenlabError
from genlab.models.base import Model
from genlab.models.gan import GAN
from genlab.models.losses import LOSSES, RelativisticAverage, build_loss, loss_problem
from genlab.types import Batch, Spec, StepContext
from tests.conftest import TINY, compose, nets_for
from tests.test_gan_family import Fixed

DTYPE = torch.float64
CTX = StepContext(0)
SUPPORT = torch.tensor([[-1.0], [1.0]], dtype=DTYPE)
GAN_VARIANTS = ["gan", "dcgan", "lsgan", "hinge", "sngan", "fgan", "wgan", "wgan_gp", "ragan", "cgan", "acgan",
                "infogan", "ebgan"]
SMALL = ["model.generator.base_channels=8", "model.discriminator.base_channels=8", "model.generator.hidden=16",
         "model.discriminator.hidden=16"]
IMAGES = Spec("image", (1, 28, 28), 10)


class Lookup2(nn.Module):
    """A discriminator whose output at each of the two support points is a parameter."""

    def __init__(self):
        super().__init__()
        self.values = nn.Parameter(torch.zeros(2, dtype=DTYPE))

    def forward(self, x):
        return self.values[torch.cdist(x.to(DTYPE), SUPPORT).argmin(1)]


def ragan_with_oracles(real_counts, fake_counts):
    """A RaGAN on two points whose batches hold each point as often as its count (exact expectations)."""
    model = GAN(OmegaConf.merge(OmegaConf.structured(GAN.Config), {"loss": "ragan"}), Spec("points", (1,)))
    real = SUPPORT[torch.repeat_interleave(torch.arange(2), torch.tensor(real_counts))]
    model.generator = Fixed(SUPPORT[torch.repeat_interleave(torch.arange(2), torch.tensor(fake_counts))])
    model.discriminator = Lookup2()
    return model, Batch(real)


# ---------------------------------------------------------------------------------------------------
# RaGAN


def test_ragan_losses_at_known_points():
    sp = torch.nn.functional.softplus
    real, fake = torch.tensor([2.0, 0.0], dtype=DTYPE), torch.tensor([-1.0, 1.0], dtype=DTYPE)
    # mean C(real) = 1, mean C(fake) = 0: real relative to the average fake is (2, 0); fake relative to real (-2, 0).
    loss = RelativisticAverage()
    assert loss.discriminator(real, fake).item() == pytest.approx(((sp(-real) + sp(fake - 1)) / 2).sum().item())
    assert loss.generator(real, fake).item() == pytest.approx(((sp(real) + sp(-(fake - 1))) / 2).sum().item())
    assert loss.generator_needs_real and loss.role == "discriminator"


def test_ragan_optimal_discriminator_matches_the_closed_form():
    """P = (2/3, 1/3), Q = (1/3, 2/3) on two points: only d = C(x1) - C(x2) matters, and dL_D/dd = 0 gives
    4 sigmoid(-2d/3) = sigmoid(d/3), i.e. u = e^(d/3) solves u^3 - 3u - 4 = 0: u = cbrt(2 + sqrt 3) + cbrt(2 - sqrt 3)."""
    model, batch = ragan_with_oracles([2, 1], [1, 2])
    opt = torch.optim.LBFGS(model.discriminator.parameters(), lr=1, max_iter=200, tolerance_grad=1e-14,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = model.discriminator_step(batch, CTX)[0]
        loss.backward()
        return loss

    opt.step(closure)
    u = (2 + math.sqrt(3)) ** (1 / 3) + (2 - math.sqrt(3)) ** (1 / 3)
    d_star = 3 * math.log(u)
    c = model.discriminator.values.detach()
    assert (c[0] - c[1]).item() == pytest.approx(d_star, rel=1e-7)
    sp = lambda t: math.log1p(math.exp(t))  # noqa: E731
    p, q = 2 / 3, 1 / 3
    l_star = p * sp(-(1 - q) * d_star) + (1 - p) * sp(q * d_star) + q * sp((1 - p) * d_star) + (1 - q) * sp(-p * d_star)
    assert model.discriminator_step(batch, CTX)[0].item() == pytest.approx(l_star, rel=1e-10)
    assert l_star < math.log(4)


def test_ragan_at_p_equals_q_is_log_4_at_every_constant_critic_and_above_elsewhere():
    model, batch = ragan_with_oracles([1, 2], [1, 2])
    model.discriminator.values.data = torch.tensor([0.7, 0.7], dtype=DTYPE)
    loss = model.discriminator_step(batch, CTX)[0]
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4))
    assert model.discriminator.values.grad.abs().max().item() < 1e-12
    for c in torch.randn(20, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(0)):
        model.discriminator.values.data = c
        assert model.discriminator_step(batch, CTX)[0].item() >= math.log(4) - 1e-12


def test_ragan_generator_step_draws_real_data_and_other_losses_do_not():
    steps = {s.name: s for s in build_model(compose(["model=ragan", "dataset=grid25"]), Spec("points", (2,))).schedule()}
    assert steps["generator"].needs_data
    steps = {s.name: s for s in build_model(compose(["model=gan", "dataset=grid25"]), Spec("points", (2,))).schedule()}
    assert not steps["generator"].needs_data and steps["discriminator"].needs_data


# ---------------------------------------------------------------------------------------------------
# Every variant: the gradient penalty and R1 are configuration only


def _model(name, *over):
    torch.manual_seed(0)
    cfg = compose([f"model={name}", "dataset=fashion_mnist", *nets_for(SMALL, "image"), *over])
    return build_model(cfg, IMAGES)


def _batch():
    g = torch.Generator().manual_seed(1)
    return Batch(torch.rand(6, 1, 28, 28, generator=g) * 2 - 1, torch.arange(6) % 10)


def _d_loss(model):
    torch.manual_seed(2)
    return model.discriminator_step(_batch(), CTX)


@pytest.mark.parametrize("name", GAN_VARIANTS)
def test_gp_weight_changes_the_discriminator_loss_of_every_variant(name):
    plain, plain_logs = _d_loss(_model(name, "model.gp_weight=0"))
    gp, logs = _d_loss(_model(name, "model.gp_weight=5"))
    assert "gradient_penalty" not in plain_logs and logs["gradient_penalty"].item() > 0
    assert gp.item() == pytest.approx(plain.item() + 5 * logs["gradient_penalty"].item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", GAN_VARIANTS)
def test_lazy_r1_is_a_step_every_r1_every_steps_scaled_by_the_interval_in_every_variant(name):
    model = _model(name, "model.r1_weight=2", "model.r1_every=16")
    steps = {s.name: s for s in model.schedule()}
    assert steps["r1"].every == 16 and steps["r1"].optimizer == "discriminator"
    assert [s.due(k) for s in [steps["r1"]] for k in (0, 1, 15, 16, 32, 33)] == [True, False, False, True, True, False]
    loss, logs = model.r1_step(_batch(), CTX)
    assert logs["r1_penalty"].item() > 0
    assert loss.item() == pytest.approx(0.5 * 2 * 16 * logs["r1_penalty"].item(), rel=1e-6)
    # r1_every = 1: R1 joins every discriminator step, unscaled; no separate step.
    plain, _ = _d_loss(_model(name))
    eager = _model(name, "model.r1_weight=2")
    assert "r1" not in {s.name for s in eager.schedule()}
    loss, logs = _d_loss(eager)
    assert loss.item() == pytest.approx(plain.item() + logs["r1_penalty"].item(), rel=1e-5, abs=1e-6)


def _cyclegan(*over):
    torch.manual_seed(0)
    cfg = compose(["model=cyclegan", "model.generator.base_channels=4", "model.generator.n_blocks=1",
                   "model.discriminator.base_channels=4", "model.discriminator.n_layers=1", "model.pool_size=0",
                   *over])
    return build_model(cfg, Spec("image", (1, 16, 16), None, domains=2))


def _cyclegan_d_loss(model):
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.rand(4, 1, 16, 16, generator=g) * 2 - 1, torch.rand(4, 1, 16, 16, generator=g) * 2 - 1)
    torch.manual_seed(2)
    return model.discriminator_step(batch, CTX), batch


def test_cyclegan_takes_the_same_penalties_clipping_and_lazy_r1_as_every_gan():
    (plain, plain_logs), _ = _cyclegan_d_loss(_cyclegan())
    (gp, logs), _ = _cyclegan_d_loss(_cyclegan("model.gp_weight=5"))
    assert not any("gradient_penalty" in k for k in plain_logs)
    both = logs["D_a_gradient_penalty"].item() + logs["D_b_gradient_penalty"].item()
    assert min(logs["D_a_gradient_penalty"].item(), logs["D_b_gradient_penalty"].item()) > 0
    assert gp.item() == pytest.approx(plain.item() + 5 * both, rel=1e-5, abs=1e-6)
    # lazy R1: its own step on both discriminators, scaled by the interval
    model = _cyclegan("model.r1_weight=2", "model.r1_every=16")
    steps = {s.name: s for s in model.schedule()}
    assert steps["r1"].every == 16 and steps["r1"].optimizer == "discriminator"
    _, batch = _cyclegan_d_loss(model)
    loss, logs = model.r1_step(batch, CTX)
    r1 = logs["D_a_r1_penalty"].item() + logs["D_b_r1_penalty"].item()
    assert loss.item() == pytest.approx(0.5 * 2 * 16 * r1, rel=1e-6) and r1 > 0
    # clipping after every discriminator update
    model = _cyclegan("model.clip=0.01")
    steps = {s.name: s for s in model.schedule()}
    steps["discriminator"].after({})
    assert max(p.abs().max().item() for p in model.discriminator.parameters()) <= 0.01
    assert steps["generator"].after is not None  # the EMA hook stays
    assert "discriminator" not in _cyclegan("model.gp_weight=1").compile_targets()


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    model = GAN(OmegaConf.merge(OmegaConf.structured(GAN.Config), {"r1_weight": 3.0, "r1_every": 4}),
                Spec("points", (3,)))
    linear = nn.Linear(3, 1)
    linear.weight.data = torch.tensor([[1.0, -2.0, 2.0]])
    model.discriminator = linear
    loss, logs = model.r1_step(Batch(torch.randn(5, 3)), CTX)
    assert logs["r1_penalty"].item() == pytest.approx(9.0)
    assert loss.item() == pytest.approx(0.5 * 3.0 * 4 * 9.0)


def test_trainer_runs_lazy_r1_on_the_right_steps(tmp_path, monkeypatch):
    import genlab.models.penalties as penalties
    from genlab.commands.train import train

    calls = []
    real_r1 = penalties.r1_penalty

    def spy(critic, real, ctx=None, group=1):
        calls.append(ctx.step)
        return real_r1(critic, real, ctx, group)

    monkeypatch.setattr(penalties, "r1_penalty", spy)
    over = ["model=gan", "dataset=grid25", "dataset.n_train=256", "dataset.n_test=64", *TINY, *nets_for(SMALL, "points"),
            "trainer.max_steps=7", "trainer.sample_every=0", "model.r1_weight=1", "model.r1_every=3"]
    train(compose(over), tmp_path)
    assert calls == [0, 3, 6]


def test_generator_steps_that_need_no_data_draw_none(tmp_path):
    """The data sampler's position after k steps counts only the batches that were drawn."""
    from genlab.commands.train import train

    pos = {}
    for name in ("gan", "ragan"):
        over = [f"model={name}", "dataset=grid25", "dataset.n_train=256", "dataset.n_test=64", *TINY, *nets_for(SMALL, "points"),
                "trainer.max_steps=3", "trainer.batch_size=16", "trainer.sample_every=0"]
        train(compose(over), tmp_path / name)
        pos[name] = torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["data"]["pos"]
    assert pos == {"gan": 3 * 16, "ragan": 3 * 2 * 16}


# ---------------------------------------------------------------------------------------------------
# Declared capabilities, typed configs


@pytest.mark.parametrize("name", group_options("model"))
def test_every_model_declares_config_and_check(name):
    import dataclasses

    cfg = compose([f"model={name}"])
    cls = model_class(cfg)
    assert dataclasses.is_dataclass(cls.Config) and callable(cls.check)
    for flag in ("conditional", "slow_sampling", "translates", "accepts_temperature"):
        assert isinstance(getattr(cls, flag), bool), flag
    assert cls.family in ("adversarial", "likelihood")


def test_a_model_without_config_or_check_gets_the_defaults():
    class Bare(Model):
        pass

    assert Bare.check(OmegaConf.structured(Bare.Config), IMAGES) is None
    assert not (Bare.conditional or Bare.translates or Bare.accepts_temperature or Bare.slow_sampling)


@pytest.mark.parametrize("over, message", [
    (["model=fgan", "model.loss_params.divergence=kll"], "unknown f-divergence 'kll'"),
    (["model=fgan", "model.loss_params.generator_loss=x"], "generator_loss must be"),
    (["model=lsgan", "model.loss_params.a=abc"], "loss_params.a"),
    (["model=lsgan", "+model.loss_params.d=1"], "Key 'd' not in"),
    (["model=gan", "model.loss=rgan"], "model.loss=rgan is unknown"),
    (["model=gan", "model.r1_every=0"], "model.r1_every must be >= 1"),
])
def test_loss_params_are_typed_and_checked_before_any_data(over, message):
    with pytest.raises(GenlabError, match=re.escape(message)):
        validate(compose(over + ["dataset=grid25"]))


def test_loss_table_parameters():
    assert loss_problem("ls", {"a": -1, "c": 0}) is None and build_loss("ls", a="-1").a == -1.0
    assert "margin" in loss_problem("ebgan", {})
    assert set(LOSSES) >= {"ns", "minimax", "wasserstein", "ls", "hinge", "ragan", "fgan", "ebgan"}


def test_ebgan_config_default_margin_is_the_yaml_one():
    from genlab.models.ebgan import EBGAN

    assert EBGAN.Config().margin == compose(["model=ebgan"]).model.margin == 0.1


def test_no_code_outside_the_loss_table_compares_loss_names():
    root = Path(__file__).resolve().parents[1] / "genlab"
    names = "|".join(LOSSES)
    pattern = re.compile(rf"""loss\s*(==|!=|in)\s*[\(\[]?\s*["']({names})["']""")
    hits = [f"{p.name}: {line.strip()}" for p in root.rglob("*.py") if p.name != "losses.py"
            for line in p.read_text().splitlines() if pattern.search(line)]
    assert not hits


def test_resume_is_bit_identical_with_lazy_r1_and_a_relativistic_generator(tmp_path):
    """RaGAN (G draws real data) with R1 every 2 steps, resumed at an odd step: the same weights."""
    from genlab.commands.train import train

    def run(steps, out, *extra):
        over = ["model=ragan", "dataset=grid25", "dataset.n_train=256", "dataset.n_test=64", *TINY, *nets_for(SMALL, "points"),
                f"trainer.max_steps={steps}", "trainer.sample_every=0", "model.r1_weight=1", "model.r1_every=2",
                *extra]
        train(compose(over), tmp_path / out)
        return torch.load(tmp_path / out / "checkpoints" / "last.pt", weights_only=True)

    straight = run(6, "straight")
    run(3, "first")
    resumed = run(6, "resumed", f"trainer.resume={tmp_path / 'first'}")
    assert straight["step"] == resumed["step"] == 6
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
