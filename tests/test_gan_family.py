"""The GAN family at model level, on cases with a known answer: f-GAN's optimal critic, LSGAN and hinge
at their optima, spectral norm in every variant's discriminator, the cGAN wrong-label term, AC-GAN's
class loss, InfoGAN's mutual-information bound, CycleGAN's cycle loss, EBGAN's energies, generator EMA,
and the unpaired two-domain data."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from genlab.data.base import Data, Spec
from genlab.models.ema import EMA
from genlab.models.base import Batch, StepContext
from genlab.models.conditional import (
    ACGAN,
    ConditionalGAN,
    discriminator_loss_with_wrong_labels,
    one_hot_input,
    wrong_labels,
)
from genlab.models.cyclegan import CycleGAN, ImagePool
from genlab.models.ebgan import EBGAN
from genlab.models.gan import GAN
from genlab.models.infogan import InfoGAN, categorical_mi_bound
from genlab.models.losses import DIVERGENCES, build_loss
from genlab.nets.spectral import largest_singular_value

DTYPE = torch.float64
CTX = StepContext(0)
POINTS1 = Spec("points", (1,), None)
IMAGES = Spec("image", (1, 28, 28), 10)

# Two distributions on four points, probabilities in tenths: a batch holding each point as many times
# as its tenths makes every batch mean an exact expectation.
SUPPORT = torch.tensor([[-1.5], [-0.5], [0.5], [1.5]], dtype=DTYPE)
P = torch.tensor([1, 2, 3, 4], dtype=DTYPE) / 10
Q = torch.tensor([4, 3, 2, 1], dtype=DTYPE) / 10
REAL = SUPPORT[torch.repeat_interleave(torch.arange(4), torch.tensor([1, 2, 3, 4]))]
FAKE = SUPPORT[torch.repeat_interleave(torch.arange(4), torch.tensor([4, 3, 2, 1]))]


def config(cls, **over):
    """cls.Config with overrides, as the config layer builds it."""
    return OmegaConf.merge(OmegaConf.structured(cls.Config), over)


class Fixed(nn.Module):
    """A 'generator' that ignores its input and returns the batch `out` (Q's points)."""

    def __init__(self, out):
        super().__init__()
        self.register_buffer("out", out)
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, z, *args):
        return self.out + 0 * self.w


class Lookup(nn.Module):
    """A discriminator whose output at each support point is given."""

    def __init__(self, values):
        super().__init__()
        self.values = nn.Parameter(values.clone())

    def forward(self, x):
        idx = torch.cdist(x.to(DTYPE), SUPPORT).argmin(1)
        return self.values[idx]


def with_oracles(model, d_values):
    model.generator = Fixed(FAKE)
    model.discriminator = Lookup(d_values)
    return model


# ---------------------------------------------------------------------------------------------------
# f-GAN, LSGAN, hinge through the GAN model


def _inverse_activation(name, t):
    """V with g_f(V) = t for the divergences used below."""
    if name in ("kl", "pearson"):
        return t
    if name in ("js", "gan"):
        return None  # handled by the closed form V* = log(p/q)
    if name in ("reverse_kl",):
        return -torch.log(-t)
    if name == "squared_hellinger":
        return -torch.log1p(-t)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "pearson", "squared_hellinger", "js", "gan"])
def test_fgan_model_with_the_optimal_critic_attains_minus_the_divergence(name):
    d = DIVERGENCES[name]
    u = P / Q
    # T* = f'(p/q); for js and gan g_f(log u) = f'(u) in closed form.
    v = torch.log(u) if name in ("js", "gan") else _inverse_activation(name, d.f_prime(u))
    assert torch.allclose(d.activation(v), d.f_prime(u), atol=1e-12)
    model = with_oracles(GAN(config(GAN, loss="fgan", loss_params={"divergence": name}), POINTS1), v)
    loss, _ = model.discriminator_step(Batch(REAL), CTX)
    divergence = (Q * d.f(u)).sum()
    assert loss.item() == pytest.approx(-divergence.item(), rel=1e-9, abs=1e-12)
    # Any other critic gives a looser bound: a higher discriminator loss.
    for delta in (-0.1, 0.1):
        worse = with_oracles(GAN(config(GAN, loss="fgan", loss_params={"divergence": name}), POINTS1), v + delta)
        assert worse.discriminator_step(Batch(REAL), CTX)[0].item() > loss.item()


@pytest.mark.parametrize("a,b,c", [(0.0, 1.0, 1.0), (-1.0, 1.0, 0.0)])
def test_lsgan_model_at_the_optimal_discriminator(a, b, c):
    d_star = (b * P + a * Q) / (P + Q)  # Mao et al. eq. (4)
    cfg = config(GAN, loss="ls", loss_params={"a": a, "b": b, "c": c})
    model = with_oracles(GAN(cfg, POINTS1), d_star)
    loss = model.discriminator_step(Batch(REAL), CTX)[0]
    grad, = torch.autograd.grad(loss, model.discriminator.values)
    assert torch.allclose(grad, torch.zeros(4, dtype=DTYPE), atol=1e-12)  # a stationary point of a convex loss
    if (a, b, c) == (-1.0, 1.0, 0.0):
        # Theorem 1: then 2 * G's loss (with the real-data term, constant in G) = Pearson chi^2(P+Q || 2Q).
        g = model.generator_step(Batch(REAL), CTX)[0] + 0.5 * (model.discriminator(REAL) - c).pow(2).mean()
        chi2 = ((2 * Q - (P + Q)) ** 2 / (P + Q)).sum()  # the paper writes it with (p_d + p_g) below
        assert (2 * g).item() == pytest.approx(chi2.item(), rel=1e-9)


class Separator(nn.Module):
    """+1 on the real support, -1 beyond 3 (where the fixed fakes sit)."""

    def forward(self, x):
        return torch.where(x.squeeze(1) > 3, -1.0, 1.0).to(DTYPE)


def test_hinge_model_is_zero_once_the_margins_hold_and_counts_violations_otherwise():
    model = with_oracles(GAN(config(GAN, loss="hinge"), POINTS1), torch.tensor([-2.0, -1.0, 1.0, 3.0], dtype=DTYPE))
    # Real mass sits where D >= 1 only on the last two points; fakes on the first two have D <= -1.
    loss = model.discriminator_step(Batch(REAL), CTX)[0].item()
    expected = (P * torch.relu(1 - model.discriminator.values.detach())).sum() + \
        (Q * torch.relu(1 + model.discriminator.values.detach())).sum()
    assert loss == pytest.approx(expected.item())
    perfect = with_oracles(GAN(config(GAN, loss="hinge"), POINTS1), torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=DTYPE))
    perfect.generator = Fixed(torch.full((10, 1), 5.0, dtype=DTYPE))
    perfect.discriminator = Separator()
    assert perfect.discriminator_step(Batch(REAL), CTX)[0].item() == 0.0


# ---------------------------------------------------------------------------------------------------
# Spectral norm in every variant's discriminator


def _weight_layers(module):
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding))]


@pytest.mark.parametrize("cls,spec,arch", [(GAN, IMAGES, "conv"), (GAN, POINTS1, "mlp"),
                                            (ConditionalGAN, IMAGES, "conv"), (ACGAN, IMAGES, "conv"),
                                            (InfoGAN, IMAGES, "conv")])
def test_spectral_norm_switch_keeps_every_discriminator_layer_near_unit_sigma(cls, spec, arch):
    torch.manual_seed(0)
    net = {"arch": arch, "base_channels": 8, "hidden": 16, "norm": "none", "spectral_norm": True}
    model = cls(config(cls, loss="hinge", discriminator=net, generator={"base_channels": 8, "hidden": 16}), spec)
    d = model.discriminator.body if hasattr(model.discriminator, "body") else model.discriminator
    layers = [m for m in _weight_layers(d)]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    # Power iterations run in train-mode forward passes; after some, sigma(W_SN) is 1 for every layer.
    x = torch.randn(4, *spec.shape)
    y = torch.arange(4) % 10
    for _ in range(30):
        model.discriminator(x, y) if cls is ConditionalGAN or cls is ACGAN else model.discriminator(x)
    for m in layers:
        assert largest_singular_value(m) == pytest.approx(1.0, abs=0.05)


def test_projection_embedding_is_spectrally_normalised_too():
    net = {"base_channels": 8, "norm": "none", "spectral_norm": True}
    model = ConditionalGAN(config(ConditionalGAN, discriminator=net, generator={"base_channels": 8}), IMAGES)
    assert torch.nn.utils.parametrize.is_parametrized(model.discriminator.embed, "weight")


# ---------------------------------------------------------------------------------------------------
# cGAN and AC-GAN


def test_wrong_labels_always_differ_and_cover_the_other_classes():
    torch.manual_seed(0)
    y = torch.full((20000,), 3)
    w = wrong_labels(y, 10)
    assert (w != y).all()
    counts = torch.bincount(w, minlength=10).double() / len(w)
    assert counts[3] == 0 and torch.allclose(counts[torch.arange(10) != 3], torch.full((9,), 1 / 9, dtype=DTYPE), atol=0.01)


def test_wrong_label_term_mixes_only_the_fake_side():
    loss = build_loss("ns")
    d_real, d_fake, d_wrong = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.5]), torch.tensor([0.3, -2.0])
    sp = torch.nn.functional.softplus
    w = 0.5
    expected = sp(-d_real).mean() + (1 - w) * sp(d_fake).mean() + w * sp(d_wrong).mean()
    got = discriminator_loss_with_wrong_labels(loss, d_real, d_fake, d_wrong, w)
    assert got.item() == pytest.approx(expected.item())
    assert discriminator_loss_with_wrong_labels(loss, d_real, d_fake, d_wrong, 0.0).item() == \
        pytest.approx(loss.discriminator(d_real, d_fake).item())


class LabelMatch(nn.Module):
    """D(x, y) = +s if the image's class (encoded in its mean) equals y, else -s."""

    def __init__(self, s):
        super().__init__()
        self.s = s
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x, y):
        cls = x.flatten(1).mean(1).round().long()
        return torch.where(cls == y, self.s, -self.s) + 0 * self.p, None


def test_cgan_discriminator_step_sees_real_images_with_wrong_labels_as_fake():
    torch.manual_seed(0)
    cfg = config(ConditionalGAN, wrong_label_weight=0.5, generator={"base_channels": 8},
                 discriminator={"base_channels": 8})
    model = ConditionalGAN(cfg, IMAGES)
    s = 3.0
    model.discriminator = LabelMatch(s)
    y = torch.arange(8) % 10
    x = y.float().view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone()  # image mean = its class
    fake = y.float().view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone() + 20  # never matches any label
    model.generator = Fixed(fake)
    loss, logs = model.discriminator_step(Batch(x, y), CTX)
    sp = torch.nn.functional.softplus
    # real with right labels scores +s; fakes and real-with-wrong-labels score -s.
    expected = sp(torch.tensor(-s)) + 0.5 * sp(torch.tensor(-s)) + 0.5 * sp(torch.tensor(-s))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["D_x_wrong_label"].item() == pytest.approx(torch.sigmoid(torch.tensor(-s)).item(), rel=1e-6)


def test_concat_conditioning_appends_one_hot_planes():
    x = torch.zeros(2, 1, 4, 4)
    out = one_hot_input(x, torch.tensor([0, 2]), 3)
    assert out.shape == (2, 4, 4, 4)
    assert out[0, 1].eq(1).all() and out[0, 2:].eq(0).all() and out[1, 3].eq(1).all()


def test_acgan_class_loss_with_an_uninformed_and_a_perfect_classifier():
    torch.manual_seed(0)
    cfg = config(ACGAN, generator={"base_channels": 8}, discriminator={"base_channels": 8})
    model = ACGAN(cfg, IMAGES)
    nn.init.zeros_(model.discriminator.classifier.weight)
    nn.init.zeros_(model.discriminator.classifier.bias)
    batch = Batch(torch.rand(6, 1, 28, 28) * 2 - 1, torch.arange(6))
    _, logs = model.discriminator_step(batch, CTX)
    assert logs["class_loss"].item() == pytest.approx(2 * math.log(10), rel=1e-6)  # real + fake, uniform logits
    _, logs = model.generator_step(batch, CTX)
    assert logs["class_loss"].item() == pytest.approx(math.log(10), rel=1e-6)
    logits = torch.full((4, 10), -50.0)
    y = torch.tensor([1, 5, 7, 9])
    logits[torch.arange(4), y] = 50.0
    assert model.class_loss(logits, y).item() == pytest.approx(0.0, abs=1e-12)


def test_conditional_models_need_labels_and_sample_the_asked_classes():
    cfg = config(ConditionalGAN)
    assert "no class labels" in ConditionalGAN.check(cfg, Spec("image", (1, 28, 28), None))
    assert ConditionalGAN.check(cfg, IMAGES) is None
    assert "d_conditioning" in ConditionalGAN.check(config(ConditionalGAN, d_conditioning="film"), IMAGES)
    model = ConditionalGAN(config(ConditionalGAN, generator={"base_channels": 8}, discriminator={"base_channels": 8}),
                           IMAGES).eval()
    assert model.labels_for(12, None, "cpu").tolist() == [i % 10 for i in range(12)]
    assert model.labels_for(3, 4, "cpu").tolist() == [4, 4, 4]
    z = model.latent(2)
    # The same z with different labels gives different images: the label reaches G.
    a, b = model.sample(2, noise=z, labels=torch.tensor([0, 0])), model.sample(2, noise=z, labels=torch.tensor([1, 1]))
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------------------------------------------
# InfoGAN


def test_categorical_mi_bound_is_log_k_for_a_perfect_q_and_zero_for_an_uninformed_one():
    c = torch.arange(10).repeat(3)
    perfect = torch.full((30, 10), -60.0)
    perfect[torch.arange(30), c] = 60.0
    assert categorical_mi_bound(perfect, c).item() == pytest.approx(math.log(10), abs=1e-6)
    assert categorical_mi_bound(torch.zeros(30, 10), c).item() == pytest.approx(0.0, abs=1e-6)
    # A symmetric channel: x = c with probability 0.7, else one of the other 9 classes. With Q the true
    # posterior (0.7 on x, 0.3/9 elsewhere) the bound is tight: it equals I(c; x) = log K - H(c | x).
    c = torch.arange(10).repeat_interleave(10)
    x = c.clone()
    for k in range(10):
        x[10 * k + 7:10 * k + 10] = (k + torch.tensor([1, 2, 3])) % 10
    q = torch.full((100, 10), 0.3 / 9)
    q[torch.arange(100), x] = 0.7
    mi = math.log(10) + 0.7 * math.log(0.7) + 0.3 * math.log(0.3 / 9)
    assert categorical_mi_bound(q.log(), c).item() == pytest.approx(mi, rel=1e-5)
    # Any other Q is a looser bound (Barber & Agakov): here a sharper but wrong-calibrated one.
    q2 = torch.full((100, 10), 0.1 / 9)
    q2[torch.arange(100), x] = 0.9
    assert categorical_mi_bound(q2.log(), c).item() < mi


def test_infogan_codes_round_trip_and_the_model_bound_with_an_uninformed_q():
    torch.manual_seed(0)
    cfg = config(InfoGAN, categorical=[10, 3], continuous=2, z_dim=5,
                 generator={"base_channels": 8}, discriminator={"base_channels": 8})
    model = InfoGAN(cfg, IMAGES)
    g = model.latent(16)
    assert g.shape == (16, 5 + 13 + 2)
    z, idx, cont = model.decode(g)
    assert torch.equal(model.encode(z, idx, cont), g)
    assert ((cont >= -1) & (cont <= 1)).all()
    last = model.discriminator.q[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    _, logs = model.discriminator_step(Batch(torch.zeros(8, 1, 28, 28)), CTX)
    assert logs["mi_lower_bound"].item() == pytest.approx(0.0, abs=1e-6)
    # info loss = CE(10) + CE(3) + 0.5 E[c^2] for Q predicting zeros; E[c^2] = 1/3 per U(-1, 1) code.
    info, bound = model.info_loss(torch.zeros(20000, 15), *model.codes(20000, "cpu")[0:1], model.codes(20000, "cpu")[1])
    assert info.item() == pytest.approx(math.log(10) + math.log(3) + 0.5 * 2 / 3, abs=0.02)


def test_infogan_visuals_vary_one_code():
    torch.manual_seed(0)
    cfg = config(InfoGAN, categorical=[10], continuous=2, generator={"base_channels": 8},
                 discriminator={"base_channels": 8})
    model = InfoGAN(cfg, IMAGES).eval()

    class D:
        kind = "image"

    out = model.visuals({"n": 16, "noise": model.latent(16)}, D())
    assert set(out) == {"samples", "categorical_0", "continuous_0", "continuous_1"}
    # 10 rows (categories) of 10 columns of 28 px images with 2 px padding.
    assert out["categorical_0"].shape == (3, 2 + 10 * 30, 2 + 10 * 30)
    assert out["continuous_1"].shape == (3, 2 + 10 * 30, 2 + 10 * 30)


# ---------------------------------------------------------------------------------------------------
# CycleGAN


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + 0 * self.w


def _cyclegan(**over):
    g = {"base_channels": 8, "n_blocks": 1}
    d = {"base_channels": 8}
    return CycleGAN(config(CycleGAN, generator=g, discriminator=d, **over), Spec("image", (1, 28, 28), None, domains=2))


def test_cyclegan_cycle_and_identity_losses_are_zero_for_identity_generators():
    torch.manual_seed(0)
    model = _cyclegan(identity_weight=5.0)
    model.generator = nn.ModuleDict({"a2b": Identity(), "b2a": Identity()})
    a, b = torch.rand(4, 1, 28, 28) * 2 - 1, torch.rand(4, 1, 28, 28) * 2 - 1
    loss, logs = model.generator_step(Batch(a, b), CTX)
    assert logs["cycle_a"].item() == 0.0 and logs["cycle_b"].item() == 0.0 and logs["identity"].item() == 0.0
    adv = 2.0 * (logs["adversarial_a2b"] + logs["adversarial_b2a"])
    assert loss.item() == pytest.approx(adv.item())


def test_cyclegan_cycle_loss_is_the_l1_of_the_round_trip():
    model = _cyclegan()

    class Shift(Identity):
        def forward(self, x):
            return x + 0.25 + 0 * self.w

    model.generator = nn.ModuleDict({"a2b": Shift(), "b2a": Identity()})
    a, b = torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 28, 28)
    _, logs = model.generator_step(Batch(a, b), CTX)
    assert logs["cycle_a"].item() == pytest.approx(0.25) and logs["cycle_b"].item() == pytest.approx(0.25)


def test_cyclegan_needs_two_domains_and_keeps_shapes():
    cfg = config(CycleGAN)
    assert "two unpaired image domains" in CycleGAN.check(cfg, IMAGES)
    assert CycleGAN.check(cfg, Spec("image", (3, 32, 32), None, domains=2)) is None
    model = _cyclegan().eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert model.translate(x, "a2b").shape == x.shape and model.translate(x, "b2a").shape == x.shape


def test_image_pool_returns_new_images_until_full_then_mixes_history():
    torch.manual_seed(0)
    pool = ImagePool(1000, (1,))
    first = torch.arange(1000.0).view(1000, 1)
    assert torch.equal(pool.query(first), first) and int(pool.count) == 1000
    out = pool.query(torch.full((1000, 1), 5000.0))
    from_history = (out < 5000).float().mean().item()
    # Each new image goes back to D with p = 1/2, else an old one does (unless it was replaced already).
    # An old image comes back once per slot the new ones replaced (a slot can be hit twice: 1 - e^-1/2).
    assert from_history == pytest.approx(1 - math.exp(-0.5), abs=0.05)
    assert (pool.images == 5000).float().mean().item() == pytest.approx(from_history)
    assert torch.equal(ImagePool(0, (1,)).query(first), first)


# ---------------------------------------------------------------------------------------------------
# EBGAN


def test_ebgan_energy_is_the_reconstruction_error_and_the_margin_stops_the_push():
    torch.manual_seed(0)
    cfg = config(EBGAN, margin=0.5, generator={"base_channels": 8}, discriminator={"base_channels": 8})
    model = EBGAN(cfg, IMAGES)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    energy, code = model.discriminator(x)
    rec = model.discriminator.decoder(model.discriminator.encoder(x))
    assert torch.allclose(energy, (rec - x).pow(2).flatten(1).mean(1), atol=1e-6) and code.shape == (4, 64)
    # An energy function that is 0 on real data and above m on fakes leaves D nothing to do.

    class Energy(nn.Module):
        def forward(self, t):
            return (t.flatten(1).mean(1) > 5).float() * 0.7, torch.randn(len(t), 3)

    model.discriminator = Energy()
    model.generator = Fixed(torch.full((4, 1, 28, 28), 10.0))
    loss, logs = model.discriminator_step(Batch(torch.zeros(4, 1, 28, 28)), CTX)
    assert loss.item() == 0.0 and logs["fakes_below_margin"].item() == 0.0
    assert "model.loss must be ebgan" in EBGAN.check(config(EBGAN, loss="ns"), IMAGES)


def test_ebgan_default_margin_is_inside_the_energy_scale_of_images():
    # The margin is in per-pixel squared error for images in [-1, 1]. Above the error of a trivial
    # auto-encoder (reconstruct every image as the data's mean image) every fake stays under the margin,
    # the hinge never switches off and G does not learn (m = 1.0 did that on Fashion-MNIST: 0.35 there).
    import gzip
    from pathlib import Path

    import numpy as np
    from conftest import compose

    margin = compose(["model=ebgan", "dataset=fashion_mnist"]).model.margin
    path = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    if not path.exists():
        pytest.skip("offline Fashion-MNIST not present")
    x = np.frombuffer(gzip.open(path).read()[16:], np.uint8).reshape(-1, 784)[:5000] / 127.5 - 1
    trivial_energy = ((x - x.mean(0)) ** 2).mean()
    assert margin < trivial_energy / 2
    # The hinge is live at this scale: a fake with the trivial energy no longer pushes D.
    loss = build_loss("ebgan", margin=margin)
    assert loss.discriminator(torch.zeros(4), torch.full((4,), float(trivial_energy))).item() == 0.0


# ---------------------------------------------------------------------------------------------------
# Generator EMA


def test_ema_update_rule_buffers_and_sampling():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(net, 0.9)
    before = ema.shadow[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net(torch.randn(8, 2))  # moves BN running statistics
    ema.update(net)
    assert torch.allclose(ema.shadow[0].weight, 0.9 * before + 0.1 * net[0].weight)
    assert torch.equal(ema.shadow[1].running_mean, net[1].running_mean)
    assert not any(p.requires_grad for p in ema.parameters())

    model = GAN(config(GAN, ema_decay=0.5, generator={"arch": "mlp", "hidden": 8},
                       discriminator={"arch": "mlp", "hidden": 8}), Spec("points", (2,), None))
    assert any(k.startswith("generator_ema.") for k in model.state_dict())
    step = [s for s in model.schedule() if s.name == "generator"][0]
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    step.after({})
    model.eval()
    z = model.latent(5)
    assert torch.allclose(model.sample(5, noise=z), model.generator_ema(z))
    assert not torch.allclose(model.sample(5, noise=z), model.generator(z))
    assert "ema_decay" in GAN.check(config(GAN, ema_decay=1.5), Spec("points", (2,), None))


# ---------------------------------------------------------------------------------------------------
# Unpaired data


def _domain(label, n, seed):
    x = torch.full((n, 1, 8, 8), label * 20, dtype=torch.uint8)
    return Data(f"d{label}", "image", x, torch.full((n,), label), x[:2], torch.full((2,), label), seed=seed)


def test_unpaired_batches_draw_each_domain_independently_and_resume_exactly():
    from genlab.data.unpaired import UnpairedData

    data = UnpairedData("a<->b", _domain(1, 10, 0), _domain(5, 7, 1))
    assert data.spec.domains == 2 and data.spec.shape == (1, 8, 8)
    batch = data.next(6)
    assert torch.allclose(batch.x, torch.tensor(20 / 127.5 - 1)) and torch.allclose(batch.y, torch.tensor(100 / 127.5 - 1))
    state = data.state_dict()
    a = [data.next(4) for _ in range(3)]
    data.load_state_dict(state)
    b = [data.next(4) for _ in range(3)]
    assert all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(a, b))


def test_unpaired_domain_configs_take_shared_keys_and_pick_a_loader():
    from genlab.data.unpaired import domain_config

    cfg = OmegaConf.create({"name": "pair", "_target_": "x", "root": "/r", "image_size": 32, "channels": 3,
                            "domain_a": {"name": "fashion_mnist", "classes": [7]}, "domain_b": {"path": "/imgs"}})
    a, b = domain_config(cfg, "domain_a"), domain_config(cfg, "domain_b")
    assert a._target_.endswith("torchvision_dataset") and list(a.classes) == [7] and a.image_size == 32
    assert b._target_.endswith("image_folder") and b.path == "/imgs" and b.root == "/r" and b.channels == 3


def test_norm_auto_is_batch_norm_in_conv_discriminators_and_none_in_mlps():
    from genlab import nets
    from genlab.models.base import NetConfig

    cfg = OmegaConf.structured(NetConfig(norm="auto", base_channels=8, hidden=8))
    conv = nets.discriminator(cfg, IMAGES)
    mlp = nets.discriminator(cfg, Spec("points", (2,), None))
    assert any(isinstance(m, nn.BatchNorm2d) for m in conv.modules())
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) for m in mlp.modules())
    # The first conv layer stays unnormalised (the DCGAN rule), as with norm=batch.
    assert isinstance(conv.body[1], nn.LeakyReLU)


def test_cgan_generator_takes_the_one_hot_label_by_default_or_a_learned_embedding():
    small = {"base_channels": 8}
    one_hot = ConditionalGAN(config(ConditionalGAN, generator=small, discriminator=small), IMAGES)
    assert one_hot.generator.embed is None and one_hot.generator.net.in_dim == 64 + 10
    learned = ConditionalGAN(config(ConditionalGAN, embed_dim=16, generator=small, discriminator=small), IMAGES)
    assert isinstance(learned.generator.embed, nn.Embedding) and learned.generator.net.in_dim == 64 + 16
