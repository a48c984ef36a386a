"""The adversarial loss table against cases with a known answer."""

import math

import pytest
import torch

from genlab.models.losses import (
    DIVERGENCES,
    EBGAN,
    FGAN,
    LOSSES,
    AdversarialLoss,
    Hinge,
    LeastSquares,
    Minimax,
    NonSaturating,
    Wasserstein,
    build_loss,
    pulling_away_term,
)

DTYPE = torch.float64

# Two distributions on four points with probabilities in tenths, so an expectation is exactly the
# mean over a batch holding each point as many times as its tenths: the losses' means become E_P, E_Q.
P_COUNTS = [1, 2, 3, 4]
Q_COUNTS = [4, 3, 2, 1]
P = torch.tensor(P_COUNTS, dtype=DTYPE) / 10
Q = torch.tensor(Q_COUNTS, dtype=DTYPE) / 10
REAL_IDX = torch.repeat_interleave(torch.arange(4), torch.tensor(P_COUNTS))
FAKE_IDX = torch.repeat_interleave(torch.arange(4), torch.tensor(Q_COUNTS))


def t(*values):
    return torch.tensor(values, dtype=DTYPE)


def f_divergence(name, p, q):
    """D_f(P || Q) = sum_x q(x) f(p(x) / q(x)), straight from the definition."""
    return (q * DIVERGENCES[name].f(p / q)).sum()


# ---------------------------------------------------------------------------------------------------
# The registry


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_entry_builds_and_returns_scalars_on_logit_maps(name):
    kwargs = {"margin": 1.0} if name == "ebgan" else {}
    loss = build_loss(name, **kwargs)
    assert isinstance(loss, AdversarialLoss)
    real, fake = torch.rand(4, 1, 3, 3, dtype=DTYPE), torch.rand(4, 1, 3, 3, dtype=DTYPE)  # a PatchGAN map
    for value in (loss.discriminator(real, fake), loss.generator(real, fake)):
        assert value.shape == () and torch.isfinite(value)


def test_build_loss_passes_parameters():
    loss = build_loss("ls", a=-1, b=1, c=0)
    assert (loss.a, loss.b, loss.c) == (-1.0, 1.0, 0.0)
    assert build_loss("fgan", divergence="kl").divergence is DIVERGENCES["kl"]
    assert build_loss("ebgan", margin=3).margin == 3.0


# ---------------------------------------------------------------------------------------------------
# ns, minimax, wasserstein, hinge at known inputs


def test_non_saturating_and_minimax_at_known_points():
    zero = torch.zeros(3, dtype=DTYPE)
    # D(x) = sigmoid(0) = 1/2 everywhere: -log 1/2 - log 1/2.
    assert NonSaturating().discriminator(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert NonSaturating().generator(None, zero).item() == pytest.approx(math.log(2))
    assert Minimax().generator(None, zero).item() == pytest.approx(-math.log(2))
    real, fake = t(2.0), t(-1.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = -math.log(sig(2.0)) - math.log(1 - sig(-1.0))
    assert NonSaturating().discriminator(real, fake).item() == pytest.approx(expected)
    assert NonSaturating().generator(None, fake).item() == pytest.approx(-math.log(sig(-1.0)))
    assert Minimax().generator(None, fake).item() == pytest.approx(math.log(1 - sig(-1.0)))


def test_non_saturating_is_stable_at_large_logits():
    big = t(-200.0, 200.0)
    assert NonSaturating().discriminator(big, big).item() == pytest.approx(200.0)  # (200 + 0) + (0 + 200), halved


def test_wasserstein_at_known_points():
    real, fake = t(1.0, 3.0), t(0.0, 2.0)
    assert Wasserstein().discriminator(real, fake).item() == pytest.approx(-1.0)
    assert Wasserstein().generator(None, fake).item() == pytest.approx(-1.0)


def test_hinge_is_zero_with_margins_met_and_exact_elsewhere():
    real = t(1.0, 2.5, 7.0).requires_grad_()
    fake = t(-1.0, -4.0, -1.5).requires_grad_()
    loss = Hinge().discriminator(real, fake)
    loss.backward()
    assert loss.item() == 0.0
    assert real.grad.abs().sum() == 0 and fake.grad.abs().sum() == 0
    assert Hinge().discriminator(t(0.0), t(0.0)).item() == pytest.approx(2.0)
    # relu(1 - [0.5, 2]) = [0.5, 0]; relu(1 + [-0.5, -3]) = [0.5, 0]
    assert Hinge().discriminator(t(0.5, 2.0), t(-0.5, -3.0)).item() == pytest.approx(0.5)
    assert Hinge().discriminator(t(-1.0), t(2.0)).item() == pytest.approx(5.0)
    assert Hinge().generator(None, t(0.5, -1.5)).item() == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------
# LSGAN


def test_least_squares_values_with_the_0_1_coding():
    loss = LeastSquares()
    assert (loss.a, loss.b, loss.c) == (0.0, 1.0, 1.0)
    assert loss.discriminator(t(1.0), t(0.0)).item() == 0.0
    assert loss.discriminator(t(0.0), t(1.0)).item() == pytest.approx(1.0)
    assert loss.generator(None, t(1.0)).item() == 0.0
    assert loss.generator(None, t(3.0)).item() == pytest.approx(2.0)


@pytest.mark.parametrize("a,b,c", [(0.0, 1.0, 1.0), (-1.0, 1.0, 0.0)])
def test_least_squares_discriminator_optimum(a, b, c):
    loss = LeastSquares(a, b, c)
    d_star = (b * P + a * Q) / (P + Q)  # Mao et al. 2017, eq. (4)

    def d_loss(d):
        return loss.discriminator(d[REAL_IDX], d[FAKE_IDX])

    best = d_loss(d_star)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert d_loss(d_star + 0.05 * torch.randn(4, generator=g, dtype=DTYPE)) > best
    d = d_star.clone().requires_grad_()
    d_loss(d).backward()
    assert d.grad.abs().max() < 1e-12


def test_least_squares_generator_is_half_pearson_chi2_theorem_1():
    # b - c = 1 and b - a = 2: at D*, the generator's objective (with the E_p term that does not
    # depend on G) is 1/2 chi^2_Pearson(p + q || 2q) in Mao et al.'s notation, i.e.
    # 1/2 * sum (2q - (p + q))^2 / (p + q); in Nowozin et al.'s convention that is D_f(2q || p + q)
    # with the Pearson f.
    loss = LeastSquares(a=-1.0, b=1.0, c=0.0)
    d_star = (loss.b * P + loss.a * Q) / (P + Q)
    objective = loss.generator(None, d_star[REAL_IDX]) + loss.generator(None, d_star[FAKE_IDX])
    chi2 = ((2 * Q - (P + Q)) ** 2 / (P + Q)).sum()
    assert objective.item() == pytest.approx(0.5 * chi2.item(), rel=1e-12)
    assert objective.item() == pytest.approx(0.5 * f_divergence("pearson", 2 * Q, P + Q).item(), rel=1e-12)


# ---------------------------------------------------------------------------------------------------
# f-GAN


DIV_NAMES = sorted(DIVERGENCES)


def test_table_has_the_required_divergences():
    assert {"kl", "reverse_kl", "pearson", "squared_hellinger", "js", "gan"} <= set(DIVERGENCES)


@pytest.mark.parametrize("name", DIV_NAMES)
def test_fenchel_identity(name):
    # f*(f'(u)) = u f'(u) - f(u): the sup in f*(t) = sup_u (t u - f(u)) is attained where f'(u) = t.
    d = DIVERGENCES[name]
    u = torch.logspace(-2, 1.5, 200, dtype=DTYPE)
    u = u[(u - 1).abs() > 1e-9]  # total variation's f is not differentiable at 1
    tu = d.f_prime(u)
    assert d.in_domain(tu).all()
    torch.testing.assert_close(d.conjugate(tu), u * tu - d.f(u), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", DIV_NAMES)
def test_output_activation_maps_into_the_conjugates_domain(name):
    d = DIVERGENCES[name]
    v = torch.linspace(-20, 20, 401, dtype=DTYPE)
    tv = d.activation(v)
    assert d.in_domain(tv).all()
    assert (tv[1:] >= tv[:-1]).all()  # T increases with V, so a larger V always means "more real"


@pytest.mark.parametrize("name", DIV_NAMES)
def test_f_is_normalised_convex_and_zero_divergence_at_equality(name):
    d = DIVERGENCES[name]
    one = t(1.0)
    # Every f has f(1) = 0 except GAN's, whose D_f(P || P) is -log 4 (Nowozin et al., Table 1).
    expected = -math.log(4) if name == "gan" else 0.0
    assert d.f(one).item() == pytest.approx(expected, abs=1e-12)
    assert f_divergence(name, P, P).item() == pytest.approx(expected, abs=1e-12)
    u = torch.logspace(-2, 1.5, 100, dtype=DTYPE)
    fu = d.f(u)
    # Convexity: the chord midpoint lies above the function.
    assert (d.f((u[1:] + u[:-1]) / 2) <= (fu[1:] + fu[:-1]) / 2 + 1e-12).all()


def test_js_and_gan_rows_against_jensen_shannon():
    m = (P + Q) / 2
    js = 0.5 * (P * torch.log(P / m)).sum() + 0.5 * (Q * torch.log(Q / m)).sum()
    assert f_divergence("js", P, Q).item() == pytest.approx(2 * js.item(), rel=1e-12)
    assert f_divergence("gan", P, Q).item() == pytest.approx(2 * js.item() - math.log(4), rel=1e-12)
    assert f_divergence("kl", P, Q).item() == pytest.approx((P * torch.log(P / Q)).sum().item(), rel=1e-12)


@pytest.mark.parametrize("name", DIV_NAMES)
def test_stable_conjugate_of_activation_agrees_and_stays_finite(name):
    d = DIVERGENCES[name]
    v = torch.linspace(-5, 5, 101, dtype=DTYPE)
    torch.testing.assert_close(d.conjugate_of_activation(v), d.conjugate(d.activation(v)), rtol=1e-9, atol=1e-9)
    # In float32 the naive composition overflows for GAN/JS at v = 30 (1 - exp(g(v)) rounds to 0).
    extreme = torch.tensor([-30.0, 30.0])
    assert torch.isfinite(d.conjugate_of_activation(extreme)).all()


def test_gan_conjugate_is_accurate_near_zero_and_far_below():
    conj = DIVERGENCES["gan"].conjugate
    for x in (-1e-12, -1e-3, -0.5, -5.0, -60.0):
        assert conj(t(x)).item() == pytest.approx(-math.log(-math.expm1(x)), rel=1e-12)


@pytest.mark.parametrize("name", DIV_NAMES)
def test_optimal_variational_function_attains_the_divergence(name):
    # T*(x) = f'(p(x) / q(x)) turns the lower bound E_P[T] - E_Q[f*(T)] into D_f(P || Q) exactly.
    d = DIVERGENCES[name]
    t_star = d.f_prime(P / Q)
    bound = (P * t_star).sum() - (Q * d.conjugate(t_star)).sum()
    assert bound.item() == pytest.approx(f_divergence(name, P, Q).item(), rel=1e-12, abs=1e-12)
    # Any other T in the domain gives a smaller bound.
    lo, hi = d.domain
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = (t_star + 0.05 * torch.randn(4, generator=g, dtype=DTYPE)).clamp(lo + 1e-6, hi - 1e-6)
        assert (P * other).sum() - (Q * d.conjugate(other)).sum() <= bound + 1e-12


@pytest.mark.parametrize("name", [n for n in DIV_NAMES if n != "total_variation"])
def test_fgan_discriminator_loss_minimum_is_minus_the_divergence(name):
    # Train V (one value per support point) on the loss itself: the loss goes to -D_f(P || Q) and
    # T = g_f(V) to f'(p / q). (Total variation's optimum sits at V = +-inf, so it is left out here.)
    loss = FGAN(name)
    v = torch.zeros(4, dtype=DTYPE, requires_grad=True)
    opt = torch.optim.LBFGS([v], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss.discriminator(v[REAL_IDX], v[FAKE_IDX])
        value.backward()
        return value

    opt.step(closure)
    d = DIVERGENCES[name]
    final = loss.discriminator(v[REAL_IDX], v[FAKE_IDX]).item()
    assert -final == pytest.approx(f_divergence(name, P, Q).item(), rel=1e-6, abs=1e-8)
    torch.testing.assert_close(d.activation(v.detach()), d.f_prime(P / Q), rtol=1e-4, atol=1e-5)


# Closed forms for N(0, 1) against N(mu, 1).
MU = 1.0
GAUSSIAN_DIVERGENCES = {
    "kl": MU**2 / 2,
    "reverse_kl": MU**2 / 2,
    "pearson": math.exp(MU**2) - 1,
    "squared_hellinger": 2 - 2 * math.exp(-(MU**2) / 8),
}


@pytest.mark.parametrize("name", sorted(GAUSSIAN_DIVERGENCES))
def test_optimal_bound_on_two_gaussians_by_monte_carlo(name):
    d = DIVERGENCES[name]
    g = torch.Generator().manual_seed(1)
    n = 400_000
    x_p = torch.randn(n, generator=g, dtype=DTYPE)
    x_q = torch.randn(n, generator=g, dtype=DTYPE) + MU

    def ratio(x):  # p(x) / q(x) for unit variances
        return torch.exp(-0.5 * x**2 + 0.5 * (x - MU) ** 2)

    bound = d.f_prime(ratio(x_p)).mean() - d.conjugate(d.f_prime(ratio(x_q))).mean()
    assert bound.item() == pytest.approx(GAUSSIAN_DIVERGENCES[name], rel=0.03)


def test_fgan_with_the_gan_divergence_is_the_non_saturating_gan():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(16, generator=g, dtype=DTYPE), torch.randn(16, generator=g, dtype=DTYPE)
    fgan, ns = FGAN("gan"), NonSaturating()
    torch.testing.assert_close(fgan.discriminator(real, fake), ns.discriminator(real, fake))
    torch.testing.assert_close(fgan.generator(None, fake), ns.generator(None, fake))


def test_fgan_generator_losses():
    fake = t(-1.0, 0.5, 2.0)
    d = DIVERGENCES["kl"]
    assert FGAN("kl").generator_loss == "alternative"  # the paper's choice (section 3.2)
    torch.testing.assert_close(FGAN("kl").generator(None, fake), -fake.mean())  # -E_Q[g_f(V)], g_f(v) = v
    torch.testing.assert_close(FGAN("kl", generator_loss="saturating").generator(None, fake),
                               -d.conjugate(d.activation(fake)).mean())
    with pytest.raises(ValueError, match="choose one of"):
        FGAN("bogus")
    with pytest.raises(ValueError):
        FGAN("kl", generator_loss="bogus")


# ---------------------------------------------------------------------------------------------------
# EBGAN


def test_ebgan_margin():
    loss = EBGAN(margin=2.0)
    # Fake energies at or above m cost D nothing and give it no gradient.
    fake = t(2.0, 5.0).requires_grad_()
    value = loss.discriminator(t(0.5, 1.5), fake)
    value.backward()
    assert value.item() == pytest.approx(1.0)
    assert fake.grad.abs().sum() == 0
    # Below m: D pays m - D(G(z)).
    assert loss.discriminator(t(0.0), t(0.5)).item() == pytest.approx(1.5)
    assert loss.discriminator(t(1.0, 3.0), t(0.0, 1.0)).item() == pytest.approx(2.0 + 1.5)
    assert loss.generator(None, t(0.5, 1.5)).item() == pytest.approx(1.0)


def test_pulling_away_term():
    assert pulling_away_term(torch.eye(5, 8, dtype=DTYPE) * 3).item() == pytest.approx(0.0, abs=1e-12)
    same = torch.randn(1, 8, dtype=DTYPE).repeat(6, 1) * torch.arange(1, 7, dtype=DTYPE)[:, None]
    assert pulling_away_term(same).item() == pytest.approx(1.0)
    # Two vectors 60 degrees apart: cos^2 = 1/4 for both ordered pairs.
    sixty = t(1.0, 0.0, 0.5, math.sqrt(3) / 2).reshape(2, 2)
    assert pulling_away_term(sixty).item() == pytest.approx(0.25)
    # Feature maps are flattened per sample.
    assert pulling_away_term(torch.eye(4, dtype=DTYPE).reshape(4, 1, 2, 2)).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        pulling_away_term(torch.ones(1, 3))
