"""The objectives' maths on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlab.data.base import Spec
from genlab.models.base import StepContext
from genlab.models.losses import build_loss
from genlab.models.penalties import clip_weights, gradient_penalty, interpolates
from genlab.models.vae import VAE, gaussian_kl
from tests.conftest import compose


class Linear(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("norm", [0.0, 0.5, 1.0, 3.0])
def test_gradient_penalty_of_linear_critic(norm):
    # f(x) = w.x has gradient w everywhere, so the penalty is (||w|| - 1)^2 exactly.
    w = torch.randn(12, dtype=torch.float64)
    w = w / w.norm() * norm
    critic = Linear(w)
    real, fake = torch.randn(16, 3, 2, 2, dtype=torch.float64), torch.randn(16, 3, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(critic, interpolates(real, fake))
    assert gp.item() == pytest.approx((norm - 1) ** 2, abs=1e-6)
    # zero-centred variant: E[||grad||^2]
    assert gradient_penalty(critic, real, center=0.0).item() == pytest.approx(norm ** 2, abs=1e-6)


def test_gradient_penalty_under_loss_scaling_is_unchanged():
    # The fp16 recipe scales the output given to autograd.grad and unscales the result.
    critic = Linear(torch.full((4,), 1.0))
    x = torch.randn(8, 4, dtype=torch.float64)
    plain = gradient_penalty(critic, x)
    scaled = gradient_penalty(critic, x, StepContext(0, scale=lambda t: t * 65536.0, inv_scale=lambda: 1 / 65536.0))
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-12)
    assert plain.item() == pytest.approx((2.0 - 1.0) ** 2)


def test_gradient_penalty_is_differentiable_wrt_critic():
    critic = Linear(torch.tensor([3.0, 4.0]))
    gp = gradient_penalty(critic, torch.randn(5, 2, dtype=torch.float64))
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 4 * w / 5
    assert critic.w.grad.tolist() == pytest.approx([2 * 4 * 3 / 5, 2 * 4 * 4 / 5])


def test_interpolates_one_alpha_per_sample():
    real, fake = torch.zeros(1000, 3, 4, 4), torch.ones(1000, 3, 4, 4)
    x = interpolates(real, fake)
    per_sample = x.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))  # same alpha within a sample
    alpha = 1 - per_sample[:, 0]
    assert 0.45 < alpha.mean().item() < 0.55 and alpha.min() >= 0 and alpha.max() <= 1


def test_weight_clipping_bounds():
    net = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(100)
    clip_weights(net, 0.01)
    assert all(p.abs().max() <= 0.01 for p in net.parameters())


def test_ns_and_minimax_generator_gradients():
    # At D(G(z)) -> 0 (logit very negative) the minimax loss saturates; the NS loss does not.
    logit = torch.tensor([-8.0], requires_grad=True)
    build_loss("minimax").generator(None, logit).backward()
    g_minimax = logit.grad.abs().item()
    logit.grad = None
    build_loss("ns").generator(None, logit).backward()
    g_ns = logit.grad.abs().item()
    assert g_minimax == pytest.approx(torch.sigmoid(torch.tensor(-8.0)).item(), rel=1e-5)
    assert g_ns == pytest.approx(1 - torch.sigmoid(torch.tensor(-8.0)).item(), rel=1e-5)
    assert g_ns > 1000 * g_minimax
    # the discriminator loss is the binary cross-entropy: log 4 at D = 1/2 on both
    assert build_loss("ns").discriminator(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(4))


def test_kl_matches_closed_form_and_torch_distributions():
    mu, logvar = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected)
    # one-dimensional closed form: KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1)/2 - log s
    m, s = 1.5, 0.3
    got = gaussian_kl(torch.tensor([[m]]), torch.tensor([[2 * math.log(s)]])).item()
    assert got == pytest.approx((m * m + s * s - 1) / 2 - math.log(s))


def test_gaussian_decoder_is_a_density():
    cfg = compose(["model=vae", "dataset=grid25", "model.gaussian_std=0.5"])
    from genlab.config import typed_model_config

    vae = VAE(typed_model_config(cfg), Spec("points", (2,)))
    out, x = torch.randn(6, 2), torch.randn(6, 2)
    expected = torch.distributions.Normal(out, 0.5).log_prob(x).sum(1)
    assert torch.allclose(vae.log_px_z(out, x), expected, atol=1e-6)


def test_elbo_is_below_the_exact_likelihood_on_a_linear_gaussian_model():
    # With a perfect posterior the ELBO equals log p(x); any other q gives less (by the KL gap).
    torch.manual_seed(0)
    # p(z) = N(0,1), p(x|z) = N(z, s^2) => p(x) = N(0, 1 + s^2); q*(z|x) = N(x/(1+s^2), s^2/(1+s^2)).
    s2 = 0.25
    x = torch.randn(4000, 1, dtype=torch.float64) * math.sqrt(1 + s2)
    log_px = torch.distributions.Normal(0, math.sqrt(1 + s2)).log_prob(x).squeeze(1)
    mu, var = x / (1 + s2), torch.full_like(x, s2 / (1 + s2))
    z = mu + var.sqrt() * torch.randn_like(mu)
    rec = torch.distributions.Normal(z, math.sqrt(s2)).log_prob(x).squeeze(1)
    elbo = rec - gaussian_kl(mu, var.log())
    assert elbo.mean().item() == pytest.approx(log_px.mean().item(), abs=0.03)
    # q = the prior N(0, 1): a worse posterior, so a strictly lower bound
    z0 = torch.randn_like(x)
    elbo_prior = torch.distributions.Normal(z0, math.sqrt(s2)).log_prob(x).squeeze(1)
    assert elbo_prior.mean().item() < log_px.mean().item() - 0.1
