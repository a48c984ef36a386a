"""The GAN tricks against closed forms: DRAGAN's and WGAN-div's penalties on a linear critic, LeCam on
known anchors, BEGAN's k_t controller, top-k selection, DiffAugment's gradients to G, ADA's controller;
each trick end to end from the config, and exact resume with ADA's p and BEGAN's k_t in play."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from genlab.commands.train import train
from genlab.config import build_model, validate
from genlab.errors import GenlabError
from genlab.models import augment as A
from genlab.models.began import control, convergence
from genlab.models.generator_objective import feature_matching, top_k, topk_count
from genlab.models.penalties import LeCam, Regularisers, divergence_penalty, gradient_penalty, penalty_terms, perturbed
from genlab.types import Batch, Spec, StepContext
from tests.conftest import assert_same_state, compose

DTYPE = torch.float64
CTX = StepContext(0)
SMALL = ["model.generator.base_channels=8", "model.discriminator.base_channels=8", "model.generator.hidden=16",
         "model.discriminator.hidden=16"]


def linear_critic(dim: int) -> nn.Linear:
    """D(x) = w.x + b: grad_x D = w everywhere, so every gradient penalty has a closed form in ||w||."""
    torch.manual_seed(3)
    lin = nn.Linear(dim, 1).double()
    return lin


def _critic(lin):
    return lambda x: lin(x.flatten(1)).squeeze(1)


def _regs(**kw):
    return OmegaConf.merge(OmegaConf.structured(Regularisers), kw)


def test_wgan_div_penalty_on_a_linear_critic_is_k_times_norm_w_to_the_p():
    lin = linear_critic(6)
    w = lin.weight.detach().norm().item()
    real, fake = torch.randn(32, 6, dtype=DTYPE), torch.randn(32, 6, dtype=DTYPE) + 3
    for p in (2.0, 6.0, 3.5):
        assert divergence_penalty(_critic(lin), real, CTX, p).item() == pytest.approx(w ** p, rel=1e-6)
    extra, logs = penalty_terms(_regs(div_weight=2.0, div_power=6.0), _critic(lin), real, fake, CTX)
    assert extra.item() == pytest.approx(2.0 * w ** 6, rel=1e-6)
    assert logs["div_penalty"].item() == pytest.approx(w ** 6, rel=1e-6) and "gradient_penalty" not in logs


def test_wgan_div_penalty_is_taken_at_interpolates_of_real_and_fake():
    """On D(x) = ||x||^2 / 2 (grad = x) the penalty is E||x_hat||^p at x_hat = a x_real + (1 - a) x_fake."""
    real, fake = torch.randn(16, 4, dtype=DTYPE), torch.randn(16, 4, dtype=DTYPE) + 2
    torch.manual_seed(5)
    alpha = torch.rand(16, 1, dtype=DTYPE)
    expect = (alpha * real + (1 - alpha) * fake).norm(dim=1).pow(6).mean()
    torch.manual_seed(5)
    _, logs = penalty_terms(_regs(div_weight=2.0), lambda x: 0.5 * x.pow(2).sum(1), real, fake, CTX)
    assert logs["div_penalty"].item() == pytest.approx(expect.item(), rel=1e-6)


def test_dragan_penalty_on_a_linear_critic_is_lambda_times_norm_w_minus_one_squared():
    lin = linear_critic(5)
    w = lin.weight.detach().norm().item()
    real, fake = torch.randn(32, 5, dtype=DTYPE), torch.randn(32, 5, dtype=DTYPE)
    extra, logs = penalty_terms(_regs(dragan_weight=10.0), _critic(lin), real, fake, CTX)
    assert extra.item() == pytest.approx(10.0 * (w - 1) ** 2, rel=1e-6)
    assert set(logs) == {"dragan_penalty"}


def test_dragan_points_lie_between_the_data_and_its_noisy_copy_and_ignore_the_fakes():
    real = torch.randn(64, 3, dtype=DTYPE)
    torch.manual_seed(1)
    noise = 0.5 * real.std() * torch.rand_like(real)
    alpha = torch.rand(64, 1, dtype=DTYPE)
    expect = alpha * (real + noise) + (1 - alpha) * real
    torch.manual_seed(1)
    x_p = perturbed(real, 0.5)
    assert torch.allclose(x_p, expect)
    d = x_p - real
    assert (d >= 0).all() and (d <= 0.5 * real.std()).all() and d.abs().max() > 0
    # On D(x) = ||x||^2 / 2 the penalty is E[(||x_p|| - 1)^2]: it reads the real side only.
    quad = lambda x: 0.5 * x.pow(2).sum(1)  # noqa: E731
    torch.manual_seed(1)
    _, logs = penalty_terms(_regs(dragan_weight=1.0), quad, real, real + 100, CTX)
    assert logs["dragan_penalty"].item() == pytest.approx(((expect.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-6)
    assert gradient_penalty(quad, expect).item() == pytest.approx(logs["dragan_penalty"].item(), rel=1e-6)


def test_lecam_value_on_known_anchors_and_the_anchor_update():
    reg = LeCam(decay=0.9)
    reg.anchor_real.fill_(0.5)
    reg.anchor_fake.fill_(-0.25)
    d_real, d_fake = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([-1.0, 0.5])
    # E[(D(x) - a_F)^2] + E[(D(G(z)) - a_R)^2]
    expect = ((1.25 ** 2 + 2.25 ** 2 + 0.25 ** 2) / 3) + ((1.5 ** 2 + 0.0 ** 2) / 2)
    assert reg(d_real, d_fake).item() == pytest.approx(expect, rel=1e-6)
    assert reg.anchor_real.item() == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)
    assert reg.anchor_fake.item() == pytest.approx(0.9 * -0.25 + 0.1 * -0.25)
    assert {k for k, _ in reg.named_buffers()} == {"anchor_real", "anchor_fake"}  # so checkpoints carry them


def test_began_k_update_over_a_few_steps_matches_the_controller():
    k, gamma, lam = torch.tensor(0.0), 0.5, 0.001
    energies = [(0.8, 0.1), (0.7, 0.2), (0.6, 0.5), (0.5, 0.9)]  # (L(x), L(G(z)))
    ks = []
    for r, f in energies:
        k = control(k, torch.tensor(r), torch.tensor(f), gamma, lam)
        ks.append(k.item())
    # k += lambda_k (gamma L(x) - L(G(z))): +0.3e-3, +0.15e-3, -0.2e-3, then -0.65e-3 clipped at 0
    assert ks == pytest.approx([0.3e-3, 0.45e-3, 0.25e-3, 0.0], abs=1e-9)
    assert control(torch.tensor(0.9995), torch.tensor(1.0), torch.tensor(0.0), 0.5, 0.001).item() == 1.0
    assert convergence(torch.tensor(0.6), torch.tensor(0.5), 0.5).item() == pytest.approx(0.6 + 0.2)


def _model(name, *over, dataset="grid25"):
    torch.manual_seed(0)
    cfg = compose([f"model={name}", f"dataset={dataset}", *SMALL, *(["model.code_dim=8"] if name == "began" else []),
                   *over])
    spec = Spec("points", (2,)) if dataset == "grid25" else Spec("image", (1, 28, 28), 10)
    return build_model(cfg, spec)


def test_began_model_steps_k_from_each_discriminator_steps_energies():
    model = _model("began")
    batch = Batch(torch.randn(32, 2))
    k = 0.0
    for _ in range(3):
        assert model.k.item() == pytest.approx(k, abs=1e-7)
        loss, logs = model.discriminator_step(batch, CTX)
        model.after_discriminator(logs)  # the D step's after hook, as the trainer calls it
        r, f = logs["energy_real"].item(), logs["energy_fake"].item()
        assert loss.item() == pytest.approx(r - k * f, rel=1e-5)  # L(x) - k_t L(G(z)) with the k before the update
        assert logs["M_global"].item() == pytest.approx(r + abs(0.5 * r - f), rel=1e-5)
        k = min(1.0, max(0.0, k + 0.001 * (0.5 * r - f)))
    assert model.k.item() == pytest.approx(k, abs=1e-7) and k > 0
    assert "k" in dict(model.named_buffers())


def test_top_k_selects_the_k_fakes_judged_most_real():
    scores = torch.tensor([0.3, -2.0, 5.0, 1.0, 0.9, -0.1])
    assert sorted(top_k(scores, 3).tolist()) == [2, 3, 4]
    assert sorted(top_k(scores, 2, lowest=True).tolist()) == [1, 5]  # energies: low = judged real
    maps = torch.stack([torch.full((2, 2), v) for v in scores.tolist()])  # PatchGAN maps rank by their mean
    assert sorted(top_k(maps, 1).tolist()) == [2]
    # k starts at the batch and decays by gamma every `every` steps down to nu * batch
    assert [topk_count(64, s, 0.5, 0.99, 10) for s in (0, 9, 10, 100, 10_000)] == \
        [64, 64, math.ceil(64 * 0.99), math.ceil(64 * 0.99 ** 10), 32]


def test_topk_generator_loss_is_the_loss_over_the_best_k_fakes():
    model = _model("wgan", "model.topk=0.25", "model.topk_every=1", "model.topk_gamma=0.5")
    n = 16
    for step, k in ((0, 16), (1, 8), (5, 4)):
        torch.manual_seed(7)
        loss, logs = model.generator_step(Batch.of_size(n), StepContext(step))
        torch.manual_seed(7)
        d = model.discriminate(model.fake(n)[0], None)[0]
        assert logs["topk"].item() == k
        assert loss.item() == pytest.approx(-d.sort().values[-k:].mean().item(), rel=1e-5)


def test_feature_matching_matches_the_mean_of_d_features():
    real, fake = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)
    fm = feature_matching(real, fake)
    assert fm.item() == pytest.approx((2 - 1) ** 2 + (3 - 1) ** 2)
    fm.backward()
    assert torch.allclose(fake.grad, torch.tensor([[-1.0, -2.0], [-1.0, -2.0]]))  # d/df of ||m_r - m_f||^2
    model = _model("gan", "model.feature_matching_weight=2")
    assert next(s for s in model.schedule() if s.name == "generator").needs_data  # G now reads real data
    batch = Batch(torch.randn(16, 2))
    torch.manual_seed(4)
    loss, logs = model.generator_step(batch, CTX)
    torch.manual_seed(4)
    with torch.no_grad():
        fake = model.generator(torch.randn(16, model.cfg.z_dim))
        expect = feature_matching(model.discriminator.features(batch.x), model.discriminator.features(fake))
    assert logs["feature_matching"].item() == pytest.approx(expect.item(), rel=1e-5) and expect.item() > 0
    assert loss.item() == pytest.approx(logs["adversarial"].item() + 2 * expect.item(), rel=1e-5)


def _generator_and_images():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(8, 3 * 16 * 16), nn.Tanh(), nn.Unflatten(1, (3, 16, 16)))
    return g, g(torch.randn(4, 8))


@pytest.mark.parametrize("op", [A.translation, A.cutout, A.brightness, A.saturation, A.contrast])
def test_diffaugment_ops_keep_a_finite_nonzero_gradient_to_g(op):
    g, x = _generator_and_images()
    d = nn.Conv2d(3, 1, 3)
    d(op(x)).mean().backward()
    grads = torch.cat([p.grad.flatten() for p in g.parameters()])
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0
    assert op(x).shape == x.shape


def test_translation_shifts_by_at_most_an_eighth_with_zero_fill_and_cutout_zeroes_a_half_side_square():
    x = torch.ones(64, 1, 32, 32)
    torch.manual_seed(0)
    t = A.translation(x)
    zero_rows = (t == 0).all(dim=3).sum(dim=(1, 2))  # rows filled from outside the image
    zero_cols = (t == 0).all(dim=2).sum(dim=(1, 2))
    assert zero_rows.max() == 4 and zero_cols.max() == 4 and (zero_rows + zero_cols).min() == 0
    assert ((t == 0) | (t == 1)).all()
    c = A.cutout(x)
    area = (c == 0).flatten(1).sum(1)
    assert area.max() == 16 * 16 and area.min() > 0  # a 16x16 square, clipped where it overhangs
    # a translation of a distinct pattern is the same pattern moved: row r of the output is row r - dy
    ramp = torch.arange(32.0).view(1, 1, 32, 1).expand(1, 1, 32, 32).contiguous()
    for _ in range(5):
        out = A.translation(ramp)[0, 0, :, 16]
        inside = out[4:28]
        dy = int(inside[0] - 4)
        assert torch.equal(inside, torch.arange(32.0)[4 + dy:28 + dy])


def _augment_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(A.Augmentation), kw)


def test_diffaug_applies_every_op_in_training_and_ada_at_p_zero_is_the_identity():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    torch.manual_seed(0)
    diffaug = A.DiffAugment(_augment_cfg(augment="diffaug"))
    y = diffaug(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    assert torch.equal(diffaug.eval()(x), x)  # evaluation and pictures see D's inputs unaugmented
    ada = A.ADA(_augment_cfg(augment="ada"))
    assert torch.equal(ada(x), x)
    ada.p.fill_(1.0)
    torch.manual_seed(0)
    assert not torch.equal(ada(x), x)


def test_ada_p_rises_while_r_t_is_above_target_and_falls_below_it():
    ada = A.ADA(_augment_cfg(augment="ada", augment_policy=["translation"], ada_target=0.6, ada_interval=4,
                             ada_kimg=1.0))
    ada(torch.zeros(32, 1, 8, 8))  # the D input's batch size sets the size of p's steps
    step = 32 * 4 / 1000

    def update(sign: float):
        ada.adapt({"real_sign": torch.tensor(sign)})
        return ada.p.item()

    # p moves once every `interval` updates, by batch * interval / (kimg * 1000), up while r_t = 0.75 > 0.6
    ps = [update(0.75) for _ in range(12)]
    assert ps == pytest.approx([0, 0, 0, step, step, step, step, 2 * step, 2 * step, 2 * step, 2 * step, 3 * step])
    # r_t is the mean over the interval: 1, 1, 1, -1 averages 0.5 < 0.6 although most steps were above it
    assert [update(s) for s in (1.0, 1.0, 1.0, -1.0)][-1] == pytest.approx(2 * step)
    ps = [update(0.0) for _ in range(8)]  # r_t = 0 < 0.6: down
    assert ps[3] == pytest.approx(step) and ps[7] == pytest.approx(0.0)
    for _ in range(40):
        update(-1.0)
    assert ada.p.item() == 0.0  # clipped at 0


@pytest.mark.parametrize("over, message", [
    (["model=gan", "model.augment=flip"], "unknown model.augment=flip; choose one of none, diffaug, ada"),
    (["model=gan", "model.augment=diffaug", "model.augment_policy=[color,rotate]"], "augment_policy takes"),
    (["model=gan", "model.augment=diffaug"], "transforms images; the dataset has points"),
    (["model=ebgan", "model.augment=ada", "dataset=mnist"], "energies"),
    (["model=gan", "model.topk=1.5"], "model.topk must be in (0, 1]"),
    (["model=gan", "model.lecam_weight=-1"], "model.lecam_weight must be >= 0"),
    (["model=dragan", "model.dragan_scale=0"], "model.dragan_scale"),
    (["model=began", "model.gamma=0"], "model.gamma must be in (0, 1]"),
    (["model=began", "model.loss=ns"], "model.loss must be began"),
])
def test_bad_trick_settings_are_config_errors(over, message):
    cfg = compose(["dataset=grid25", *over])
    with pytest.raises(GenlabError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        validate(cfg)


TRICKS = {
    "dragan": (["model=dragan"], {"discriminator/dragan_penalty"}),
    "wgan_div": (["model=wgan_div"], {"critic/div_penalty", "critic/wasserstein"}),
    "lecam": (["model=gan", "model.lecam_weight=0.3"], {"discriminator/lecam"}),
    "feature_matching": (["model=gan", "model.feature_matching_weight=1"], {"generator/feature_matching"}),
    "topk": (["model=gan", "model.topk=0.5"], {"generator/topk"}),
    "diffaug": (["model=gan", "model.augment=diffaug"], {"discriminator/D_x"}),
    "ada": (["model=gan", "model.augment=ada"], {"discriminator/ada_p", "discriminator/real_sign"}),
    "began": (["model=began"], {"discriminator/k", "discriminator/M_global", "discriminator/energy_real"}),
}


@pytest.mark.parametrize("trick", TRICKS)
def test_each_trick_trains_from_the_cli_config_and_logs_its_terms(trick, mnist_root, tmp_path):
    from tests.test_train import scalars

    over, tags = TRICKS[trick]
    cfg = compose([*over, "dataset=mnist", f"dataset.root={mnist_root}", "dataset.download=false", "trainer=debug",
                   "trainer.progress=false", "trainer.sample_every=0", *SMALL[:2]])
    last = train(cfg, tmp_path)
    assert all(math.isfinite(v) for v in last.values())
    assert tags <= set(scalars(tmp_path)["scalars"])


@pytest.mark.parametrize("over, buffer", [
    (["model=gan", "model.augment=ada", "model.ada_kimg=0.5", "model.ada_interval=1"], "augment.p"),
    (["model=began", "model.lambda_k=0.05"], "k"),
    (["model=gan", "model.lecam_weight=0.3", "model.augment=diffaug"], "lecam.anchor_real"),
])
def test_resume_is_bit_identical_with_adaptive_state_in_play(over, buffer, mnist_root, tmp_path):
    """Stopped at step 3 and resumed to 6: the same weights, optimizer states and adaptive buffers."""
    def run(steps, out, *extra):
        cfg = compose([*over, "dataset=mnist", f"dataset.root={mnist_root}", "dataset.download=false", "trainer=debug",
                       "trainer.progress=false", f"trainer.max_steps={steps}", "trainer.sample_every=0",
                       "trainer.checkpoint_every=0", *SMALL[:2], *extra])
        train(cfg, out)
        return torch.load(out / "checkpoints" / "last.pt", weights_only=True)

    straight = run(6, tmp_path / "straight")
    first = run(3, tmp_path / "first")
    resumed = run(6, tmp_path / "second", f"trainer.resume={tmp_path / 'first'}")
    assert_same_state(straight, resumed)
    value = straight["model"][buffer]
    assert value.abs().item() > 0 and not torch.equal(first["model"][buffer], value)  # the state moved after step 3
