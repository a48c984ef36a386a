"""Likelihood models, the maths: IWAE estimates against an exact likelihood, bits/dim bookkeeping,
proper decoder likelihoods, whole-flow inverses and log-dets against brute force."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.config import typed_model_config
from genlab.data.base import Data, Spec
from genlab.models.flow import Flow
from genlab.models.pixelcnn import PixelCNN
from genlab.models.vae import VAE, active_units, interpolate, manifold_grid
from genlab.nets import flows as F
from tests.conftest import compose

LINEAR = ["model.encoder.arch=mlp", "model.encoder.depth=0", "model.decoder.arch=mlp", "model.decoder.depth=0"]


def _vae(overrides, spec):
    cfg = compose(["model=vae", *overrides])
    return VAE(typed_model_config(cfg), spec)


def _points(x: torch.Tensor) -> Data:
    return Data("linear_gaussian", "points", x, None, x, None)


def _linear_gaussian_vae(exact_posterior: bool, sigma: float = 0.5, k: int = 1000):
    """A VAE whose decoder is x = W z + b + sigma * noise, so log p(x) = log N(x; b, W W^T + sigma^2 I).

    W has orthogonal columns, so the true posterior is diagonal and a linear encoder can represent it
    exactly (exact_posterior=True) or be given a wrong one.
    """
    torch.manual_seed(0)
    vae = _vae([*LINEAR, "model.z_dim=2", f"model.gaussian_std={sigma}", f"model.eval_k={k}",
                "model.eval_chunk=20000", "model.eval_limit=400"], Spec("points", (3,))).double()
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
    dec = vae.decoder.net[0]
    enc = vae.encoder.head
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
        # Posterior N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1 (diagonal here).
        post_var = 1.0 / (1.0 + (w * w).sum(0) / sigma**2)
        a = post_var[:, None] * w.T / sigma**2
        if not exact_posterior:
            a, post_var = 0.7 * a, 2.5 * post_var  # a shrunk mean and an over-dispersed q
        enc.weight.zero_()
        enc.weight[:2] = a
        enc.bias[:2] = -a @ b
        enc.bias[2:] = post_var.log()
    cov = w @ w.T + sigma**2 * torch.eye(3, dtype=torch.float64)
    p_x = torch.distributions.MultivariateNormal(b, cov)
    x = p_x.sample((400,))
    return vae.eval(), x, -p_x.log_prob(x).mean().item()


def test_iwae_estimate_is_exact_with_the_true_posterior():
    vae, x, exact = _linear_gaussian_vae(exact_posterior=True, k=7)
    out = vae.evaluate(_points(x))
    # Every importance weight equals p(x): the estimate is log p(x) for any k, with zero variance.
    assert out["test_nll_nats"] == pytest.approx(exact, abs=1e-9)
    assert out["test_neg_elbo_nats"] == pytest.approx(exact, abs=0.1)  # one-sample reconstruction term


def test_iwae_estimate_bounds_the_exact_nll_and_tightens_with_k():
    torch.manual_seed(1)
    vae, x, exact = _linear_gaussian_vae(exact_posterior=False)
    nll = {}
    for k in (1, 10, 100, 1000):
        vae.cfg.eval_k = k
        nll[k] = vae.evaluate(_points(x))["test_nll_nats"]
    gaps = [nll[k] - exact for k in (1, 10, 100, 1000)]
    assert gaps[0] > 0.3  # a poor q: the ELBO is well below log p(x)
    assert all(g > -0.01 for g in gaps)  # an upper bound on the NLL (in expectation; 400 points)
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]  # tighter with more samples
    assert gaps[3] < 0.05  # and close to exact with k=1000


def test_iwae_training_objective_is_tighter_than_the_elbo():
    torch.manual_seed(2)
    vae, x, exact = _linear_gaussian_vae(exact_posterior=False)
    from genlab.models.base import Batch, StepContext

    vae.cfg.iwae_k = 50
    loss, logs = vae.train_step(Batch(x.double()), StepContext(step=0))
    assert logs["neg_iwae_bound"].item() < logs["neg_elbo"].item()
    assert logs["neg_iwae_bound"].item() > exact - 0.05


def test_kl_warmup_and_free_bits():
    from genlab.models.base import Batch, StepContext

    vae = _vae([*LINEAR, "model.kl_warmup_steps=100", "model.kl_weight=2.0"], Spec("points", (3,)))
    assert [vae.kl_weight(s) for s in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
    torch.manual_seed(0)
    vae = _vae([*LINEAR, "model.free_bits=1000.0", "model.z_dim=4"], Spec("points", (3,)))
    x = torch.randn(64, 3)
    torch.manual_seed(3)
    loss, logs = vae.train_step(Batch(x), StepContext(step=0))
    # every dimension is below its free 1000 nats: the KL term is the constant 4 * 1000
    assert loss.item() == pytest.approx(logs["reconstruction"].item() + 4000.0, rel=1e-6)
    assert logs["neg_elbo"].item() == pytest.approx(logs["reconstruction"].item() + logs["kl"].item(), rel=1e-6)


def test_logistic_decoder_is_a_distribution_over_256_levels():
    vae = _vae(["model.encoder.arch=mlp", "model.decoder.arch=mlp"], Spec("image", (1, 1, 1)))
    assert vae.dist == "logistic"
    levels = torch.arange(256, dtype=torch.float32)
    x = (levels / 127.5 - 1).view(256, 1, 1, 1)
    for mean, log_scale in ((0.3, -3.0), (-0.99, -5.0), (0.0, 1.0)):
        out = torch.tensor([mean, log_scale]).view(1, 2, 1, 1).expand(256, 2, 1, 1)
        total = torch.logsumexp(vae.log_px_z(out, x), 0)
        assert total.item() == pytest.approx(0.0, abs=1e-4)


def test_gaussian_decoder_on_images_bounds_the_discrete_likelihood():
    """Density of dequantised pixels + D log(bin width) <= log of the Gaussian's mass on the bin (Jensen)."""
    vae = _vae(["model.encoder.arch=mlp", "model.decoder.arch=mlp", "model.decoder_dist=gaussian",
                "model.gaussian_std=0.05"], Spec("image", (1, 1, 1)))
    x = torch.full((20000, 1, 1, 1), 10 / 127.5 - 1)
    out = torch.full_like(x, -0.9)
    torch.manual_seed(0)
    bound = vae.log_px_z(out, vae.prepare(x)).mean().item()
    lo = torch.tensor(10 / 127.5 - 1, dtype=torch.float64)
    n = torch.distributions.Normal(torch.tensor(-0.9, dtype=torch.float64), 0.05)
    exact = math.log(n.cdf(lo + 1 / 127.5) - n.cdf(lo))
    assert exact - 0.01 < bound <= exact + 1e-3


def test_bernoulli_decoder_needs_binarised_data():
    cfg = compose(["model=vae", "dataset=fashion_mnist"])
    mcfg = typed_model_config(cfg)
    grey = Spec("image", (1, 28, 28), 10, binarized=False)
    assert VAE.check(mcfg, grey) is None  # auto picks the logistic decoder
    mcfg.decoder_dist = "bernoulli"
    assert "binarize" in VAE.check(mcfg, grey)
    assert VAE.check(mcfg, Spec("image", (1, 28, 28), 10, binarized=True)) is None


def test_vae_bits_per_dim_bookkeeping_and_protocol():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(40, 1, 4, 4, generator=g) * 255).to(torch.uint8)
    data = Data("tiny", "image", imgs, None, imgs, None, binarize="dynamic")
    vae = _vae(["model.encoder.arch=mlp", "model.decoder.arch=mlp", "model.eval_k=5", "model.eval_limit=30"],
               data.spec).eval()
    assert vae.dist == "bernoulli"
    out = vae.evaluate(data)
    assert out["test_bits_per_dim"] == pytest.approx(out["test_nll_nats"] / (16 * math.log(2)))
    assert out["test_elbo_bits_per_dim"] == pytest.approx(out["test_neg_elbo_nats"] / (16 * math.log(2)))
    assert out["test_nll_nats"] <= out["test_neg_elbo_nats"] + 0.5
    assert (out["binarize"], out["decoder"], out["eval_k"], out["eval_images"]) == ("dynamic", "bernoulli", 5, 30)
    # dynamic binarisation: training batches are resampled, the test split is binary and fixed
    assert set(data.raw("test").unique().tolist()) <= {0, 255}
    assert torch.equal(data.raw("test"), Data("tiny", "image", imgs, None, imgs, None, binarize="dynamic").raw("test"))


def test_flow_bits_per_dim_of_a_uniform_density_is_n_bits():
    imgs = (torch.rand(30, 1, 4, 4) * 255).to(torch.uint8)
    data = Data("tiny", "image", imgs, None, imgs, None)
    for n_bits in (8, 5):
        flow = Flow(typed_model_config(compose(["model=realnvp", "model.n_scales=1", f"model.n_bits={n_bits}"])),
                    data.spec)
        flow.log_prob = lambda x: torch.zeros(len(x))  # uniform on [0, 1)^D
        out = flow.evaluate(data)
        assert out["test_bits_per_dim"] == n_bits
        assert out["test_nll_nats"] == pytest.approx(16 * n_bits * math.log(2))


def test_pixelcnn_with_zero_logits_scores_exactly_8_bits_per_dim():
    imgs = (torch.rand(30, 1, 5, 5) * 255).to(torch.uint8)
    data = Data("tiny", "image", imgs, None, imgs, None)
    m = PixelCNN(typed_model_config(compose(["model=pixelcnn", "model.hidden=8", "model.n_layers=2"])), data.spec)
    torch.nn.init.zeros_(m.net.head[-1].weight)
    torch.nn.init.zeros_(m.net.head[-1].bias)
    out = m.evaluate(data)
    assert out["test_bits_per_dim"] == pytest.approx(8.0, abs=1e-6)
    assert out["test_nll_nats"] == pytest.approx(25 * 8 * math.log(2), rel=1e-6)


def _perturbed_flow(kind: str, shape=(1, 4, 4)):
    torch.manual_seed(0)
    over = ["model=realnvp" if kind == "realnvp" else "model=glow", "model.hidden=8", "model.n_blocks=1",
            "model.steps_per_scale=2", "model.n_scales=2"]
    m = Flow(typed_model_config(compose(over)), Spec("image", shape)).double()
    m.train()
    y = torch.rand(16, *shape, dtype=torch.float64)
    m.flow(F.logit_transform(y, m.cfg.logit_alpha)[0] if m.cfg.logit else y - 0.5)  # ActNorm's data-dependent init
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from the identity start
    return m.eval()


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_whole_flow_inverse_and_logdet_against_brute_force(kind):
    m = _perturbed_flow(kind)
    assert sum(isinstance(layer, F.ActNorm) for layer in m.modules()) > 0  # realnvp normalises too now
    z0 = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    zs, logdet = m.flow(z0)
    torch.testing.assert_close(m.flow.inverse(zs), z0, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(m.flow.inverse(m.flow.flatten(zs)), z0, atol=1e-10, rtol=1e-10)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: m.flow.flatten(m.flow(v.view(1, 1, 4, 4))[0])[0],
                                                 z0[i].flatten())
        assert logdet[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-8)


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_flow_sample_then_encode_recovers_the_latent(kind):
    m = _perturbed_flow(kind)
    z = 0.1 * torch.randn(4, 16, dtype=torch.float64)
    x = m.sample(4, noise=z, temperature=1.0).double()  # in [-1, 1]
    assert x.abs().max() < 1  # not clamped
    y = (x + 1) / 2
    z0, _ = F.logit_transform(y, m.cfg.logit_alpha) if m.cfg.logit else (y - 0.5, None)
    torch.testing.assert_close(m.flow.flatten(m.flow(z0)[0]), z, atol=1e-5, rtol=1e-5)  # float32 samples
    # temperature scales the latent
    x_cold = m.sample(4, noise=z, temperature=0.0)
    assert torch.allclose(x_cold, m.sample(4, noise=torch.zeros_like(z)))


def test_vae_pictures_helpers():
    mu = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 2.0], [4.0, 0.0]])
    path = interpolate(mu, 5)
    assert path.shape == (10, 2)
    torch.testing.assert_close(path[:5], torch.tensor([[0.0, 0.0], [0.25, 0.5], [0.5, 1.0], [0.75, 1.5], [1.0, 2.0]]))
    g = manifold_grid(4)
    assert g.shape == (16, 2) and torch.allclose(g[:, 0].view(4, 4), g[:4, 0].expand(4, 4))
    assert g[0, 1] > 0 > g[-1, 1]  # top row is high z2
    mu = torch.cat([torch.randn(500, 3), torch.zeros(500, 2) + 1e-3 * torch.randn(500, 2)], 1)
    assert active_units(mu) == 3
