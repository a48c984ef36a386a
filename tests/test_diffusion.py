"""DDPM and flow matching against closed forms: the forward process, the posterior, the optimal
predictors on one-dimensional Gaussian data, the samplers' marginals, the bound against the exact
NLL, and classifier-free guidance."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from genlab.models.diffusion import DDPM, DDPMConfig, FlowMatching, FlowMatchingConfig, beta_schedule
from genlab.types import Spec

M, S = 0.5, 0.6  # the 1-D data: x_0 ~ N(M, S^2)


def make(cls, config, spec=Spec("points", (1,)), **over):
    cfg = OmegaConf.merge(OmegaConf.structured(config), over)
    assert cls.check(cfg, spec) is None
    return cls(cfg, spec).double()


class OptimalEps(nn.Module):
    """E[eps | x_t] for x_0 ~ N(m, s^2): sigma (x_t - a m) / (a^2 s^2 + sigma^2), a^2 = abar_t."""

    def __init__(self, abar, T, m=M, s=S):
        super().__init__()
        self.abar, self.T, self.m, self.s = abar.double(), T, m, s
        self.unused = nn.Parameter(torch.zeros(()))  # where the model reads its device from

    def forward(self, x, t, y=None):
        idx = (t.double() * self.T - 1).round().long()
        a2 = self.abar[idx].view(-1, 1)
        a, sig = a2.sqrt(), (1 - a2).sqrt()
        return sig * (x.double() - a * self.m) / (a2 * self.s ** 2 + sig ** 2)


class OptimalVelocity(nn.Module):
    """E[x_1 - x_0 | x_t] on x_t = t x_1 + (1 - t) x_0, x_1 ~ N(m, s^2), x_0 ~ N(0, 1)."""

    def __init__(self, m=M, s=S):
        super().__init__()
        self.m, self.s = m, s
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y=None):
        t = t.double().view(-1, 1)
        var = t ** 2 * self.s ** 2 + (1 - t) ** 2
        return self.m + (t * self.s ** 2 - (1 - t)) / var * (x.double() - t * self.m)


class Shifted(nn.Module):
    """Another predictor: net's output times `scale` plus `shift`."""

    def __init__(self, net, scale=1.0, shift=0.0):
        super().__init__()
        self.net, self.scale, self.shift = net, scale, shift

    def forward(self, x, t, y=None):
        return self.scale * self.net(x, t, y) + self.shift


def with_net(model, net):
    model.net, model.net_ema = net, None
    return model


def normal_nll(x, m=M, s=S):
    return 0.5 * ((x - m) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)


# ---- the forward process ----------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_and_the_moments_of_q_xt_given_x0(schedule):
    m = make(DDPM, DDPMConfig, schedule=schedule)
    betas = beta_schedule(schedule, 1000)
    if schedule == "linear":
        assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    else:  # abar_t = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), where no beta is clipped
        t = torch.arange(1, 1001, dtype=torch.float64)
        f = lambda u: torch.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        closed = f(t) / f(torch.zeros(1, dtype=torch.float64))
        assert torch.allclose(m.abar[:900].double(), closed[:900], rtol=1e-5)
    assert torch.allclose(m.abar.double(), torch.cumprod(1 - betas, 0), rtol=1e-5)
    x0 = torch.full((200_000, 1), 0.8, dtype=torch.float64)
    for t in (0, 250, 999):
        xt = m.q_sample(x0, torch.full((len(x0),), t), torch.randn_like(x0))
        a = float(m.abar[t])
        assert float(xt.mean()) == pytest.approx(math.sqrt(a) * 0.8, abs=4 * math.sqrt((1 - a) / len(x0)) + 1e-6)
        assert float(xt.var()) == pytest.approx(1 - a, rel=0.02, abs=1e-6)


def test_posterior_against_gaussian_conditioning():
    """q(x_{t-1} | x_t, x_0) from conditioning the joint of (x_{t-1}, x_t) given x_0 by hand."""
    m = make(DDPM, DDPMConfig)
    x0 = torch.tensor([[0.3], [-0.7]], dtype=torch.float64)
    xt = torch.tensor([[0.1], [1.2]], dtype=torch.float64)
    for t in (1, 10, 500, 999):
        ab_prev, beta = float(m.abar[t - 1]), float(m.betas[t])
        alpha = 1 - beta
        cov = math.sqrt(alpha) * (1 - ab_prev)  # Cov(x_{t-1}, x_t | x_0)
        var_t = alpha * (1 - ab_prev) + beta  # Var(x_t | x_0) = 1 - abar_t
        mean = math.sqrt(ab_prev) * x0 + cov / var_t * (xt - math.sqrt(alpha * ab_prev) * x0)
        var = (1 - ab_prev) - cov ** 2 / var_t
        got_mean, got_var = m.posterior(x0, xt, torch.full((2,), t))
        assert torch.allclose(got_mean, mean, rtol=1e-5, atol=1e-7)
        assert torch.allclose(got_var, torch.full_like(xt, var), rtol=1e-4)


# ---- the optimal predictors -------------------------------------------------------------------

def _regress(x, y):
    """Least-squares slope and intercept of y on x."""
    a = torch.stack([x.reshape(-1), torch.ones(x.numel(), dtype=x.dtype)], 1)
    sol = torch.linalg.lstsq(a, y.reshape(-1, 1)).solution
    return float(sol[0]), float(sol[1])


@pytest.mark.parametrize("target", ["eps", "v"])
def test_the_regression_target_has_the_closed_form_optimum(target):
    """The training targets' conditional mean given x_t (linear for Gaussian data) is the closed-form predictor."""
    m = make(DDPM, DDPMConfig, target=target)
    n = 400_000
    x0 = M + S * torch.randn(n, 1, dtype=torch.float64)
    for t in (50, 400, 900):
        tt = torch.full((n,), t)
        eps = torch.randn_like(x0)
        xt = m.q_sample(x0, tt, eps)
        slope, icpt = _regress(xt, m.target(x0, eps, tt))
        a2 = float(m.abar[t])
        a, sig, den = math.sqrt(a2), math.sqrt(1 - a2), a2 * S ** 2 + (1 - a2)
        if target == "eps":  # E[eps | x_t] = sig (x_t - a M) / den
            want = (sig / den, -sig * a * M / den)
        else:  # v = a eps - sig x_0: E[v | x_t] = a E[eps | x_t] - sig E[x_0 | x_t]
            e0 = (a * S ** 2 / den, M - a * S ** 2 * a * M / den)  # E[x_0 | x_t] = M + a S^2 (x_t - a M) / den
            want = (a * sig / den - sig * e0[0], -a * sig * a * M / den - sig * e0[1])
        assert slope == pytest.approx(want[0], abs=0.01)
        assert icpt == pytest.approx(want[1], abs=0.01)


def test_the_flow_matching_target_has_the_closed_form_optimal_velocity():
    fm = make(FlowMatching, FlowMatchingConfig)
    n = 400_000
    x1 = M + S * torch.randn(n, 1, dtype=torch.float64)
    noise = torch.randn_like(x1)
    v_star = OptimalVelocity()
    for t in (0.1, 0.5, 0.9):
        xt = t * x1 + (1 - t) * noise
        slope, icpt = _regress(xt, x1 - noise)  # what FlowMatching.loss regresses onto
        probe = torch.tensor([[-1.0], [0.0]], dtype=torch.float64)
        vs = v_star(probe, torch.full((2,), t)).reshape(-1)
        assert icpt == pytest.approx(float(vs[1]), abs=0.01)
        assert slope == pytest.approx(float(vs[1] - vs[0]), abs=0.01)
    # and the loss the model computes is smallest at the optimum
    fm = with_net(fm, v_star)
    best = fm.loss(x1[:50_000], None)[0]
    fm.net = Shifted(v_star, shift=0.1)
    assert float(fm.loss(x1[:50_000], None)[0]) > float(best) + 0.005


def test_the_ddpm_loss_is_smallest_at_the_optimal_eps_predictor():
    m = make(DDPM, DDPMConfig)
    opt = OptimalEps(m.abar, m.T)
    x0 = M + S * torch.randn(50_000, 1, dtype=torch.float64)
    with_net(m, opt)
    torch.manual_seed(1)
    best = float(m.loss(x0, None)[0])
    m.net = Shifted(opt, scale=1.05)
    torch.manual_seed(1)
    assert float(m.loss(x0, None)[0]) > best


# ---- samplers ---------------------------------------------------------------------------------

def _moments(x):
    return float(x.mean()), float(x.std())


def test_ancestral_step_is_the_posterior_at_the_predicted_x0():
    """One step of the ancestral chain draws from q(x_{t-1} | x_t, x0_hat) with sigma_t^2 the posterior's."""
    m = make(DDPM, DDPMConfig, variance="small")
    with_net(m, OptimalEps(m.abar, m.T))
    t = 700
    m.timesteps_for = lambda steps: list(range(t, -1, -1))  # start the chain at index t
    x_t = torch.randn(5, 1, dtype=torch.float64)
    tt = torch.full((5,), t)
    x0_hat, _ = m.split(m.net(x_t, m.time_input(tt)), x_t, tt, False)
    mean, var = m.posterior(x0_hat, x_t, tt)
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5), dtype=x_t.dtype)
    _, got = next(m.chain(x_t, m.net, 1000, "ddpm", None, torch.Generator().manual_seed(5)))
    assert torch.allclose(got, mean + var.sqrt() * z, atol=1e-9)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ancestral_sampling_with_the_optimal_predictor_reproduces_the_data(variance):
    m = make(DDPM, DDPMConfig, variance=variance)
    with_net(m, OptimalEps(m.abar, m.T))
    x = m.sample(20_000, generator=torch.Generator().manual_seed(0))
    mean, std = _moments(x)
    assert mean == pytest.approx(M, abs=0.02)
    assert std == pytest.approx(S, rel=0.03)


def test_ddim_eta1_over_all_steps_matches_ancestral_and_eta0_is_deterministic():
    m = make(DDPM, DDPMConfig, variance="small")
    with_net(m, OptimalEps(m.abar, m.T))
    anc = m.sample(20_000, generator=torch.Generator().manual_seed(0))
    ddim1 = m.sample(20_000, generator=torch.Generator().manual_seed(1), eta=1.0, steps=1000)
    for a, b in zip(_moments(anc), _moments(ddim1)):
        assert a == pytest.approx(b, abs=0.02)
    # eta = 0 integrates the probability-flow ODE, whose map from noise to Gaussian data is affine,
    # x_0 = M + S z: its error shrinks with the steps
    z = torch.randn(5000, 1, dtype=torch.float64)
    errors = []
    for steps in (50, 200, 1000):
        d0 = m.sample(5000, noise=z, eta=0.0, steps=steps, generator=torch.Generator().manual_seed(2))
        assert torch.equal(d0, m.sample(5000, noise=z, eta=0.0, steps=steps, generator=torch.Generator().manual_seed(3)))
        errors.append(float((d0 - (M + S * z)).abs().max()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02


@pytest.mark.parametrize("sampler,steps", [("heun", 20), ("euler", 200)])
def test_the_flow_matching_ode_transports_noise_to_the_data(sampler, steps):
    fm = with_net(make(FlowMatching, FlowMatchingConfig, sampler=sampler), OptimalVelocity())
    z = torch.randn(20_000, 1, dtype=torch.float64)
    x = fm.sample(20_000, noise=z, steps=steps)
    # the optimal flow of two Gaussians is affine: x_1 = M + S z exactly in the limit
    assert torch.allclose(x.double(), M + S * z, atol=0.01 if sampler == "heun" else 0.02)


# ---- likelihoods ------------------------------------------------------------------------------

def test_the_bound_equals_the_exact_nll_when_the_reverse_process_is_exact():
    """Data N(0, 1) keeps every marginal N(0, 1): with sigma_t^2 = beta_t and the optimal predictor each
    reverse step is the true one, so E[-ELBO] is the entropy 0.5 log(2 pi e); otherwise it bounds it."""
    m = make(DDPM, DDPMConfig, variance="large")
    with_net(m, OptimalEps(m.abar, m.T, 0.0, 1.0))
    x = torch.randn(4000, 1, dtype=torch.float64)
    bound = m.bound(x)
    exact = normal_nll(x, 0.0, 1.0)
    assert float(bound.mean()) == pytest.approx(float(exact.mean()), abs=0.03)
    assert float((bound - exact).mean()) == pytest.approx(0.0, abs=0.02)

    x = M + S * torch.randn(4000, 1, dtype=torch.float64)
    gaps = {}
    for variance in ("large", "small"):
        m = make(DDPM, DDPMConfig, variance=variance)
        with_net(m, OptimalEps(m.abar, m.T))
        gaps[variance] = float((m.bound(x) - normal_nll(x)).mean())
    # other data: an upper bound, tighter with beta_t than with the posterior's variance (Ho et al. Table 2)
    assert 0.0 < gaps["large"] < gaps["small"]


def test_the_estimated_bound_is_unbiased_for_the_full_sum():
    m = make(DDPM, DDPMConfig)
    with_net(m, OptimalEps(m.abar, m.T))
    x = torch.full((20_000, 1), 0.9, dtype=torch.float64)
    full = float(m.bound(x[:200]).mean())
    est = m.bound(x, terms=10)
    assert float(est.mean()) == pytest.approx(full, abs=4 * float(est.std()) / math.sqrt(len(x)) + 0.01)


def test_the_ode_log_density_matches_the_exact_density():
    fm = with_net(make(FlowMatching, FlowMatchingConfig), OptimalVelocity())
    x = torch.tensor([[-1.0], [0.0], [0.5], [1.7]], dtype=torch.float64)
    lp = fm.ode_log_density(x, steps=100)
    assert torch.allclose(lp, -normal_nll(x).reshape(-1), atol=1e-3)


def test_ddpm_bits_per_dim_on_images_is_a_discrete_bound():
    """Images: L_0 is a discretised Gaussian, so the bound is >= 0 nats and bits/dim is its share per sub-pixel."""
    spec = Spec("image", (1, 8, 8))
    m = make(DDPM, DDPMConfig, spec, timesteps=20, schedule="cosine", **{"net": {"channel_mult": [1, 2], "base_channels": 8}})
    x = torch.randint(0, 256, (6, 1, 8, 8)).double() / 127.5 - 1
    b = m.bound(x)
    assert torch.isfinite(b).all() and (b > 0).all()
    assert float(m.bits_per_dim(b.mean())) == pytest.approx(float(b.mean()) / (64 * math.log(2)))


# ---- guidance ---------------------------------------------------------------------------------

def test_guidance_zero_is_the_unconditional_sampler_and_w_mixes_the_two():
    spec = Spec("points", (2,), num_classes=3)
    m = make(DDPM, DDPMConfig, spec, conditional=True, timesteps=50)
    y = torch.tensor([0, 1, 2, 1])
    noise = torch.randn(4, 2, dtype=torch.float64)
    unc = m.sample(4, noise=noise, labels=torch.full((4,), 3), generator=torch.Generator().manual_seed(0))
    w0 = m.sample(4, noise=noise, labels=y, guidance=0.0, generator=torch.Generator().manual_seed(0))
    w1 = m.sample(4, noise=noise, labels=y, guidance=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(unc, w0) and not torch.allclose(w0, w1)
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    out_c, out_u = m.net_ema(x, t, y), m.net_ema(x, t, torch.full((4,), 3))
    assert torch.allclose(m.guided(m.net_ema, y, 2.5)(x, t), out_u + 2.5 * (out_c - out_u), atol=1e-10)
    assert m.sampling_problem(guidance=2.0) is None
    unconditional = make(DDPM, DDPMConfig)
    assert "class-conditional" in unconditional.sampling_problem(guidance=2.0)


def test_label_dropout_uses_the_null_label_at_the_configured_rate():
    spec = Spec("points", (2,), num_classes=3)
    m = make(DDPM, DDPMConfig, spec, conditional=True, cond_drop=0.25)
    seen = []
    m.loss = lambda x, y: seen.append(y) or (x.sum(), {})
    from genlab.types import Batch, StepContext

    y = torch.randint(0, 3, (40_000,))
    m.train_step(Batch(torch.zeros(40_000, 2), y), StepContext(0))
    dropped = seen[0] == 3
    assert float(dropped.float().mean()) == pytest.approx(0.25, abs=0.01)
    assert torch.equal(seen[0][~dropped], y[~dropped])
