"""Flow layers against brute force: log-determinants from autograd Jacobians, exact inverses, constants."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from genlab.metrics.likelihood import dequantize, to_levels
from genlab.metrics.likelihood import dequantized_bits_per_dim as bits_per_dim
from genlab.nets.flows import (
    ActNorm,
    Coupling,
    DiagonalScaling,
    InvConv1x1,
    VectorFlow,
    Squeeze,
    build_flow,
    inverse_logit_transform,
    logit_transform,
    standard_normal_log_prob,
    supports,
)


def perturb(module, std=0.1):
    """Move every parameter off its (often zero / identity) initial value, in float64."""
    module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))
    return module


def flat_forward(f):
    """forward(x) -> z as one flat tensor per example, whether z is a tensor or a list of tensors."""

    def g(x):
        z = f(x)[0]
        return torch.cat([t.flatten(1) for t in z], 1) if isinstance(z, list) else z.flatten(1)

    return g


def brute_logdet(f, x):
    """log|det dz/dx| per example from the full autograd Jacobian of one example at a time."""
    g = flat_forward(f)
    out = []
    for xi in x:
        jac = jacobian(lambda v: g(v.unsqueeze(0))[0], xi)
        out.append(torch.linalg.slogdet(jac.reshape(xi.numel(), xi.numel()))[1])
    return torch.stack(out)


def check_layer(layer, x, atol=1e-8):
    """logdet == brute force, inverse(forward(x)) == x, forward(inverse(z)) == z."""
    layer.eval()
    z, logdet = layer(x)
    assert logdet.shape == (x.shape[0],)
    torch.testing.assert_close(logdet, brute_logdet(layer, x), atol=atol, rtol=1e-6)
    torch.testing.assert_close(layer.inverse(z), x, atol=1e-5, rtol=0)
    z2 = torch.randn_like(z) if torch.is_tensor(z) else [torch.randn_like(t) for t in z]
    z2_again = layer(layer.inverse(z2))[0]
    if torch.is_tensor(z2):
        torch.testing.assert_close(z2_again, z2, atol=1e-5, rtol=0)
    else:
        for a, b in zip(z2_again, z2):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("scale", ["tanh", "sigmoid"])
@pytest.mark.parametrize("mask,channels", [("checkerboard", 1), ("checkerboard", 3), ("channel", 4), ("channel", 3)])
@pytest.mark.parametrize("parity", [0, 1])
def test_coupling_image_logdet_and_inverse(mask, channels, parity, scale):
    layer = perturb(Coupling(channels, mask, parity, hidden=8, n_blocks=1, rule=scale), std=0.3)
    check_layer(layer, torch.randn(2, channels, 4, 4, dtype=torch.float64))


@pytest.mark.parametrize("scale", ["tanh", "sigmoid"])
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("dim", [2, 5])
def test_coupling_vector_logdet_and_inverse(dim, parity, scale):
    layer = perturb(Coupling(dim, "alternate", parity, hidden=16, n_blocks=2, rule=scale), std=0.3)
    check_layer(layer, torch.randn(3, dim, dtype=torch.float64))


def test_coupling_keeps_the_conditioning_half():
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    layer = perturb(Coupling(2, "checkerboard", 1, hidden=8, n_blocks=1), std=0.3)
    z, _ = layer(x)
    keep = ((torch.arange(4).view(-1, 1) + torch.arange(4) + 1) % 2 == 0).expand(2, 2, 4, 4)
    assert torch.equal(z[keep], x[keep]) and not torch.allclose(z[~keep], x[~keep])
    layer = perturb(Coupling(4, "channel", 1, hidden=8, n_blocks=1), std=0.3)
    z, _ = layer(x.repeat(1, 2, 1, 1))
    assert torch.equal(z[:, 2:], x.repeat(1, 2, 1, 1)[:, 2:])


def test_fresh_coupling_is_identity_for_tanh_and_glow_contraction_for_sigmoid():
    x = torch.randn(2, 4, 4, 4)
    z, logdet = Coupling(4, "channel", rule="tanh")(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(2))
    z, logdet = Coupling(4, "channel", rule="sigmoid")(x)
    s = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(z[:, 2:], s * x[:, 2:])
    torch.testing.assert_close(logdet, torch.full((2,), 2 * 16 * math.log(s)))


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 5)])
def test_actnorm_logdet_and_inverse(shape):
    layer = ActNorm(shape[1]).double()
    layer(torch.randn(*shape, dtype=torch.float64) * 3 + 1)  # data-dependent init
    perturb(layer)
    check_layer(layer, torch.randn(*shape, dtype=torch.float64))


def test_actnorm_initialises_once_and_survives_reload():
    layer = ActNorm(3).double()
    x = torch.randn(16, 3, 5, 5, dtype=torch.float64) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + 4
    z, _ = layer(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    var = z.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(var, torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)  # eps=1e-6 on std
    assert bool(layer.initialized)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    assert "initialized" in state

    # The same layer does not re-initialise on a second batch ...
    layer(torch.randn(16, 3, 5, 5, dtype=torch.float64))
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in state.items())
    # ... and neither does a fresh layer loaded from its state_dict.
    fresh = ActNorm(3).double()
    fresh.load_state_dict(state)
    other = torch.randn(16, 3, 5, 5, dtype=torch.float64) * 10
    torch.testing.assert_close(fresh(other)[0], layer(other)[0])
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    # Evaluation mode never initialises.
    idle = ActNorm(3).eval()
    idle(x.float())
    assert not bool(idle.initialized) and torch.equal(idle.log_scale, torch.zeros(3))


@pytest.mark.parametrize("lu", [True, False])
def test_invconv_logdet_is_hw_times_slogdet_of_w(lu):
    layer = perturb(InvConv1x1(4, lu=lu))
    w = layer.weight_matrix()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    _, logdet = layer(x)
    torch.testing.assert_close(logdet, torch.full((2,), 15 * torch.linalg.slogdet(w)[1].item(), dtype=torch.float64))
    check_layer(layer, x)
    # The 1x1 convolution really is W applied at every pixel.
    torch.testing.assert_close(layer(x)[0], torch.einsum("oc,nchw->nohw", w, x))


def test_invconv_starts_orthogonal_and_lu_assembles_w():
    layer = InvConv1x1(6).double()
    w = layer.weight_matrix()
    torch.testing.assert_close(w @ w.T, torch.eye(6, dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(layer.log_s.sum().item()) < 1e-5
    check_layer(perturb(layer), torch.randn(3, 6, dtype=torch.float64))  # vectors too


def test_squeeze_is_a_permutation():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).view(2, 3, 4, 6)
    z, logdet = Squeeze()(x)
    assert z.shape == (2, 12, 2, 3) and torch.equal(logdet, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(z.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    # Channel 4c + 2dy + dx holds the pixel (2i + dy, 2j + dx) of channel c.
    assert torch.equal(z[:, 4 * 1 + 2 * 1 + 0], x[:, 1, 1::2, 0::2])
    check_layer(Squeeze(), torch.randn(2, 2, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="even"):
        Squeeze()(torch.randn(1, 1, 3, 4))


# ----------------------------------------------------------------------------- whole flows


def initialised_flow(kind, shape, n_scales=2, steps=2):
    flow = build_flow(kind, shape, n_scales=n_scales, steps_per_scale=steps, hidden=8, n_blocks=1).double()
    flow.train()
    flow(torch.randn(8, *shape, dtype=torch.float64))  # ActNorm data-dependent init
    return perturb(flow, std=0.05).eval()


@pytest.mark.parametrize("kind,shape", [("realnvp", (1, 4, 4)), ("realnvp", (2, 4, 4)), ("glow", (2, 4, 4))])
def test_multiscale_logdet_inverse_and_log_prob(kind, shape):
    flow = initialised_flow(kind, shape)
    x = torch.randn(2, *shape, dtype=torch.float64)
    check_layer(flow, x, atol=1e-7)
    zs, logdet = flow(x)
    assert [tuple(z.shape[1:]) for z in zs] == flow.z_shapes
    assert sum(math.prod(s) for s in flow.z_shapes) == flow.num_dims == math.prod(shape)
    # log p(x) = sum over latents of log N(z; 0, I) + log|det|, with the 2 pi constants.
    z = flow.flatten(zs)
    expected = -0.5 * (z**2).sum(1) - 0.5 * flow.num_dims * math.log(2 * math.pi) + logdet
    torch.testing.assert_close(flow.log_prob(x), expected)
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-5, rtol=0)


def test_glow_actnorms_initialise_on_first_training_forward():
    flow = build_flow("glow", (1, 4, 4), n_scales=2, steps_per_scale=2, hidden=8, n_blocks=1)
    norms = [m for m in flow.modules() if isinstance(m, ActNorm)]
    assert len(norms) == 4 and not any(bool(m.initialized) for m in norms)
    flow(torch.randn(32, 1, 4, 4) * 3)
    assert all(bool(m.initialized) for m in norms)


def test_multiscale_shapes_for_mnist_and_unsupported_sizes():
    assert supports((1, 28, 28), 3, "realnvp")
    assert supports((1, 28, 28), 2, "glow")
    assert not supports((1, 28, 28), 3, "glow")
    assert not supports((1, 28, 28), 4, "realnvp")
    assert supports((3, 32, 32), 5, "glow")
    flow = build_flow("glow", (1, 28, 28), n_scales=2, steps_per_scale=1, hidden=4, n_blocks=1)
    assert flow.z_shapes == [(2, 14, 14), (8, 7, 7)]
    with pytest.raises(ValueError, match=r"divisible by 8, got 28x28: use n_scales <= 2"):
        build_flow("glow", (1, 28, 28), n_scales=3)
    with pytest.raises(ValueError, match="kind"):
        build_flow("iaf", (1, 28, 28))


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_multiscale_sample_shape_and_zero_temperature_mode(kind):
    flow = initialised_flow(kind, (1, 8, 8), n_scales=2, steps=1)
    g = torch.Generator().manual_seed(3)
    x = flow.sample(5, generator=g)
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.float64 and torch.isfinite(x).all()
    x_again = flow.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, x_again)
    mode = flow.sample(3, temperature=0.0)
    at_zero = flow.inverse(torch.zeros(1, flow.num_dims, dtype=torch.float64))
    torch.testing.assert_close(mode, at_zero.expand(3, -1, -1, -1))
    assert torch.equal(mode[0], mode[1])
    # The latent of the mode is the prior's mode: forward maps it back to z = 0.
    torch.testing.assert_close(flow.flatten(flow(mode)[0]), torch.zeros(3, 64, dtype=torch.float64), atol=1e-6, rtol=0)


def test_vector_flow_logdet_inverse_and_density_integrates_to_one():
    flow = perturb(VectorFlow(2, n_layers=4, hidden=16), std=0.15)
    check_layer(flow, torch.randn(4, 2, dtype=torch.float64))
    # Riemann sum of p(x) over a wide grid: a correct log-det makes it a density.
    t = torch.linspace(-10, 10, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(t, t)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (t[1] - t[0]) ** 2
    assert abs(mass.item() - 1) < 2e-3
    x = flow.sample(7)
    assert x.shape == (7, 2)
    mode = flow.sample(2, temperature=0.0)
    torch.testing.assert_close(mode, flow.inverse(torch.zeros(2, 2, dtype=torch.float64)))


# ----------------------------------------------------------------------------- pre-processing


def test_logit_transform_logdet_and_inverse():
    y = torch.rand(3, 2, 3, 3, dtype=torch.float64)
    z, logdet = logit_transform(y, alpha=0.05)
    torch.testing.assert_close(logdet, brute_logdet(lambda v: logit_transform(v, 0.05), y))
    torch.testing.assert_close(inverse_logit_transform(z, 0.05), y)
    # Bounded at the ends of [0, 1]: logit(alpha) and logit(1 - alpha).
    ends = logit_transform(torch.tensor([[0.0, 1.0]], dtype=torch.float64))[0]
    expected = torch.tensor([[math.log(0.05 / 0.95), math.log(0.95 / 0.05)]], dtype=torch.float64)
    torch.testing.assert_close(ends, expected)


def test_dequantize_stays_in_its_bin():
    levels = torch.randint(0, 32, (4, 3, 5, 5)).double()
    y = dequantize(levels, n_bits=5, generator=torch.Generator().manual_seed(0))
    assert (y >= 0).all() and (y < 1).all()
    assert torch.equal(torch.floor(y * 32), levels)
    # Even u just below 1, which float32 would round up to the next level, stays below 1.
    top = dequantize(torch.full((10_000,), 255, dtype=torch.uint8), n_bits=8)
    assert top.dtype == torch.float32 and (top < 1).all() and (torch.floor(top * 256) == 255).all()
    x = torch.tensor([-1.0, -1 + 2 / 255, 0.0039, 1.0])
    assert to_levels(x).tolist() == [0, 1, 128, 255]
    assert to_levels(x, n_bits=5).tolist() == [0, 0, 16, 31]


def test_bits_per_dim_of_uniform_model_is_n_bits():
    # A "flow" with log p(y) = 0 on [0, 1)^D: the uniform density on the unit cube.
    d = 3 * 4 * 4
    for n_bits in (8, 5):
        assert bits_per_dim(torch.zeros(2, dtype=torch.float64), d, n_bits).tolist() == [n_bits, n_bits]
    # Through the logit chain: the uniform density on [0, 1) pushed to logit space has log p(z0) = -logdet.
    y = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    z0, logdet = logit_transform(y)
    log_p_z0 = -logdet
    torch.testing.assert_close(bits_per_dim(log_p_z0 + logdet, d, 8), torch.full((2,), 8.0, dtype=torch.float64))
    # A standard normal on y's logit: bits/dim = -(log N(z0) + logdet - D log 256) / (D log 2).
    expected = -(standard_normal_log_prob(z0) + logdet - d * math.log(256)) / (d * math.log(2))
    torch.testing.assert_close(bits_per_dim(standard_normal_log_prob(z0) + logdet, d), expected)


# ----------------------------------------------------------------------------- NICE


@pytest.mark.parametrize("shape", [(5,), (2, 3, 3)])
def test_diagonal_scaling_logdet_and_inverse(shape):
    layer = perturb(DiagonalScaling(shape), std=0.5)
    check_layer(layer, torch.randn(3, *shape, dtype=torch.float64))
    assert layer(torch.randn(2, *shape, dtype=torch.float64))[1].tolist() == [layer.log_scale.sum().item()] * 2


@pytest.mark.parametrize("parity", [0, 1])
def test_additive_coupling_preserves_volume(parity):
    layer = perturb(Coupling(6, "alternate", parity, hidden=16, n_blocks=2, rule="additive"), std=0.3)
    x = torch.randn(3, 6, dtype=torch.float64)
    check_layer(layer, x)  # brute-force log|det| == 0
    z, logdet = layer(x)
    assert torch.equal(logdet, torch.zeros(3, dtype=torch.float64))
    kept = (torch.arange(6) + parity) % 2 == 0
    assert torch.equal(z[:, kept], x[:, kept]) and not torch.allclose(z[:, ~kept], x[:, ~kept])
    assert not any(n == "scale_factor" for n, _ in layer.named_parameters())  # no unused parameter


@pytest.mark.parametrize("shape", [(1, 4, 4), (4,)])
def test_nice_logdet_is_the_scaling_and_matches_brute_force(shape):
    flow = perturb(build_flow("nice", shape, n_layers=4, hidden=16, n_blocks=1), std=0.2)
    x = torch.randn(3, *shape, dtype=torch.float64)
    check_layer(flow, x)  # brute-force Jacobian of the flattened map, exact inverse
    scaling = flow.layers[-1]
    assert isinstance(scaling, DiagonalScaling) and len(flow.layers) == 5
    torch.testing.assert_close(flow(x)[1], scaling.log_scale.sum().expand(3))
    assert flow.inverse(flow(x)[0]).shape == x.shape


def test_nice_on_points_is_a_density():
    flow = perturb(build_flow("nice", (2,), n_layers=4, hidden=16, n_blocks=1), std=0.2)
    t = torch.linspace(-12, 12, 481, dtype=torch.float64)
    with torch.no_grad():
        mass = flow.log_prob(torch.cartesian_prod(t, t)).exp().sum() * (t[1] - t[0]) ** 2
    assert abs(mass.item() - 1) < 2e-3
