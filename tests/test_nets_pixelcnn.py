"""PixelCNN against brute force: causality by gradients, likelihoods by explicit sums and normalisation."""

import math

import pytest
import torch
from torch import nn

from genlab.nets.pixelcnn import (
    GatedBlock,
    MaskedConv2d,
    PixelCNN,
    discretized_mix_logistic_log_prob,
    from_levels,
    logistic_mixture_channels,
    sample_discretized_mix_logistic,
    softmax256_log_prob,
    to_levels,
)


def dependencies(f, x, out_index):
    """Boolean (C, H, W): which input entries the outputs f(x)[n, out_index] depend on, for any example n."""
    x = x.clone().requires_grad_(True)
    out = f(x)
    (grad,) = torch.autograd.grad(out[(slice(None),) + out_index].sum(), x)
    return grad.abs().sum(0) > 0


def causal_past(shape, i, j, c=None):
    """Boolean (C, H, W): pixels strictly before (i, j) in raster order; with c, also channels < c at (i, j)."""
    ch, h, w = shape
    order = torch.arange(h * w).view(1, h, w).expand(ch, h, w)
    past = order < i * w + j
    if c is not None:
        past = past.clone()
        past[:c, i, j] = True
    return past


def plain_stack(data_channels, hidden, out_ch):
    """A PixelCNN-style stack of 3x3 masked convolutions: 'A' then 'B's."""
    c = data_channels
    return nn.Sequential(
        MaskedConv2d(c, hidden, 3, "A", c), nn.Tanh(),
        MaskedConv2d(hidden, hidden, 3, "B", c), nn.Tanh(),
        MaskedConv2d(hidden, hidden, 3, "B", c), nn.Tanh(),
        MaskedConv2d(hidden, out_ch, 3, "B", c),
    ).double()  # fmt: skip


# ----------------------------------------------------------------------------- causality


def test_masked_conv_stack_is_causal_and_has_a_blind_spot():
    shape = (1, 6, 6)
    net = plain_stack(1, 4, 1)
    x = torch.randn(3, *shape, dtype=torch.float64)
    for i in range(6):
        for j in range(6):
            dep = dependencies(net, x, (0, i, j))
            assert not (dep & ~causal_past(shape, i, j)).any(), f"output ({i},{j}) sees the future"
    # The blind spot: (i-1, j+2) is in the past of (i, j), but no depth of 3x3 masks reaches it.
    dep = dependencies(net, x, (0, 3, 2))
    assert not dep[0, 2, 4] and dep[0, 2, 3] and dep[0, 3, 1]


def test_masked_conv_rgb_channel_groups():
    shape = (3, 4, 4)
    net = plain_stack(3, 6, 3)
    x = torch.randn(3, *shape, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            for c in range(3):
                dep = dependencies(net, x, (c, i, j))
                allowed = causal_past(shape, i, j, c)
                assert not (dep & ~allowed).any(), f"output ({c},{i},{j}) sees the future"
                # Same-pixel earlier channels are really used: R -> G, and R, G -> B.
                assert dep[:c, i, j].all()
    # Type B at the centre: group g sees groups <= g; type A: groups < g.
    b = MaskedConv2d(6, 6, 3, "B", 3).mask[:, :, 1, 1]
    a = MaskedConv2d(6, 6, 3, "A", 3).mask[:, :, 1, 1]
    groups = torch.arange(6) % 3
    assert torch.equal(b, (groups.view(1, -1) <= groups.view(-1, 1)).float())
    assert torch.equal(a, (groups.view(1, -1) < groups.view(-1, 1)).float())


def test_gated_block_stacks_are_causal():
    shape = (1, 5, 5)
    first = GatedBlock(1, 4, kernel=3, mask_type="A").double()
    second = GatedBlock(4, 4, kernel=3, mask_type="B").double()

    def run(stack):
        def f(x):
            v, h = second(*first(x, x))
            return v if stack == "v" else h

        return f

    x = torch.randn(4, *shape, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            above = causal_past(shape, i, 0)  # whole rows above
            assert not (dependencies(run("v"), x, (slice(None), i, j)) & ~above).any()
            assert not (dependencies(run("h"), x, (slice(None), i, j)) & ~causal_past(shape, i, j)).any()
    # The vertical stack sees up and to the right, where the plain stack is blind.
    assert dependencies(run("v"), x, (slice(None), 3, 2))[0, 2, 4]


@pytest.mark.parametrize("output,channels", [("softmax256", 1), ("softmax256", 3), ("logistic_mixture", 3)])
def test_pixelcnn_sees_exactly_its_causal_past(output, channels):
    shape = (channels, 5, 5)
    net = PixelCNN(shape, n_layers=3, hidden=12, output=output, n_mixtures=2).double()
    x = from_levels(torch.randint(0, 256, (4, *shape)), torch.float64)
    for i in range(5):
        for j in range(5):
            if output == "softmax256":
                for c in range(channels):
                    dep = dependencies(net, x, (c, slice(None), i, j))
                    # Every earlier pixel, the blind spot included, and exactly the earlier channels here.
                    assert torch.equal(dep, causal_past(shape, i, j, c)), f"output ({c},{i},{j})"
            else:
                dep = dependencies(net, x, (slice(None), i, j))
                assert torch.equal(dep, causal_past(shape, i, j)), f"output ({i},{j})"


def test_class_conditioning_changes_output_not_causality():
    shape = (1, 4, 4)
    net = PixelCNN(shape, n_layers=2, hidden=8, num_classes=3).double()
    x = torch.rand(2, *shape, dtype=torch.float64) * 2 - 1
    y0, y1 = torch.tensor([0, 0]), torch.tensor([1, 1])
    with torch.no_grad():
        nn.init.normal_(net.blocks[0].embed.weight)
    assert not torch.allclose(net(x, y0), net(x, y1))
    assert torch.equal(dependencies(lambda v: net(v, y1), x, (0, slice(None), 2, 1)), causal_past(shape, 2, 1))
    with pytest.raises(ValueError, match="labels"):
        net(x)


# ----------------------------------------------------------------------------- likelihoods


def test_softmax_log_prob_is_the_sum_of_picked_log_softmax():
    shape = (3, 3, 4)
    net = PixelCNN(shape, n_layers=2, hidden=6).double()
    k = torch.randint(0, 256, (2, *shape))
    x = from_levels(k, torch.float64)
    logits = net(x)
    assert logits.shape == (2, 3, 256, 3, 4)
    expected = torch.zeros(2, dtype=torch.float64)
    for n in range(2):
        for c in range(3):
            for i in range(3):
                for j in range(4):
                    expected[n] += torch.log_softmax(logits[n, c, :, i, j], 0)[k[n, c, i, j]]
    torch.testing.assert_close(net.log_prob(x), expected)
    torch.testing.assert_close(softmax256_log_prob(logits, x), expected)


def single_pixel_params(means, log_scales, logits, coeffs=None):
    """(1, P, 1, 1) mixture parameters from per-component lists (means/log_scales: M x C)."""
    means, log_scales = torch.tensor(means, dtype=torch.float64), torch.tensor(log_scales, dtype=torch.float64)
    m, c = means.shape
    parts = [means, log_scales]
    if coeffs is not None:
        parts.append(torch.atanh(torch.tensor(coeffs, dtype=torch.float64)))
    rest = torch.cat(parts, 1)
    return torch.cat([torch.tensor(logits, dtype=torch.float64), rest.flatten()]).view(1, -1, 1, 1)


def all_levels_log_prob(params):
    x = from_levels(torch.arange(256), torch.float64).view(256, 1, 1, 1)
    return discretized_mix_logistic_log_prob(x, params.expand(256, -1, -1, -1))


@pytest.mark.parametrize(
    "means,log_scales",
    [
        ([[0.1], [-0.5], [0.9]], [[-2.0], [-4.0], [0.5]]),  # ordinary
        ([[0.3], [-0.99], [1.0]], [[-7.0], [-7.0], [-7.0]]),  # razor-thin, one on the edge bin
        ([[4.0], [-6.0], [0.0]], [[-1.0], [-3.0], [3.0]]),  # means far outside [-1, 1], very wide
        ([[0.2], [0.2], [0.2]], [[-12.0], [-9.0], [-7.5]]),  # below the -7 floor
    ],
)
def test_logistic_mixture_sums_to_one_over_256_levels(means, log_scales):
    lp = all_levels_log_prob(single_pixel_params(means, log_scales, [0.3, -1.0, 0.5]))
    assert torch.isfinite(lp).all()
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-12


def test_logistic_mixture_edges_and_tails():
    # A mean far above 1 puts almost all mass on level 255, and far tails stay finite (no log 0).
    lp = all_levels_log_prob(single_pixel_params([[5.0]], [[-3.0]], [0.0]))
    assert lp[255].exp() > 0.999 and torch.isfinite(lp).all()
    # A thin logistic centred on level 100: log P(level 0) is about -(100 * 2/255 - 1/255) / scale.
    lp = all_levels_log_prob(single_pixel_params([[from_levels(torch.tensor(100)).item()]], [[-7.0]], [0.0]))
    s = math.exp(-7.0)
    half = torch.tensor(1 / 255 / s, dtype=torch.float64)
    torch.testing.assert_close(lp[100], torch.log(torch.sigmoid(half) - torch.sigmoid(-half)))
    torch.testing.assert_close(lp[0], torch.tensor(-(199 / 255) / s, dtype=torch.float64), rtol=1e-6, atol=0)
    # Interior bins agree with the plain difference of sigmoids where that is well conditioned.
    mu, s = 0.1, 0.2
    x = from_levels(torch.arange(1, 255), torch.float64)
    naive = torch.log(torch.sigmoid((x + 1 / 255 - mu) / s) - torch.sigmoid((x - 1 / 255 - mu) / s))
    lp = all_levels_log_prob(single_pixel_params([[mu]], [[math.log(s)]], [0.0]))
    torch.testing.assert_close(lp[1:255], naive)


def reference_pixelcnnpp_log_prob(x, means, log_scales, logits, coeffs):
    """PixelCNN++'s original per-pixel formula for one RGB pixel x (3 floats), in 50-digit arithmetic.

    The plain difference of two sigmoids is what the float code must avoid; at 50 digits it is exact
    enough to be the reference.
    """
    mp = pytest.importorskip("mpmath")
    sig = lambda t: 1 / (1 + mp.exp(-t))  # noqa: E731
    with mp.workdps(50):
        r, g, b = (mp.mpf(v) for v in x)
        weights = [mp.exp(mp.mpf(w)) for w in logits]
        total = mp.mpf(0)
        for m, w in enumerate(weights):
            c = coeffs[m]
            mus = [means[m][0], means[m][1] + c[0] * r, means[m][2] + c[1] * r + c[2] * g]
            p = w / sum(weights)
            for v, mu, log_s in zip((r, g, b), mus, log_scales[m]):
                inv_s = mp.exp(-mp.mpf(log_s))
                cdf_plus, cdf_min = sig(inv_s * (v - mu + mp.mpf(1) / 255)), sig(inv_s * (v - mu - mp.mpf(1) / 255))
                p *= cdf_plus if v < -0.999 else (1 - cdf_min if v > 0.999 else cdf_plus - cdf_min)
            total += p
        return float(mp.log(total))


RGB_MIXTURE = dict(
    means=[[0.2, -0.3, 0.5], [-0.6, 0.1, 0.0]],
    log_scales=[[-2.5, -3.0, -2.0], [-1.5, -2.0, -3.5]],
    logits=[0.4, -0.7],
    coeffs=[[0.5, -0.3, 0.8], [-0.9, 0.2, 0.1]],
)


def test_rgb_logistic_mixture_matches_pixelcnnpp_reference():
    params = single_pixel_params(**RGB_MIXTURE)
    k = torch.randint(0, 256, (64, 3))
    k[:4] = torch.tensor([[0, 0, 0], [255, 255, 255], [0, 128, 255], [255, 3, 0]])  # edge levels
    x = from_levels(k, torch.float64)
    ours = discretized_mix_logistic_log_prob(x.view(-1, 3, 1, 1), params.expand(64, -1, -1, -1))
    expected = [reference_pixelcnnpp_log_prob(xi.tolist(), **RGB_MIXTURE) for xi in x]
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(ours, expected, atol=1e-9, rtol=1e-12)


def test_rgb_logistic_mixture_marginalises_to_the_red_mixture():
    # Summing P(r, g, b) over all (g, b) leaves the mixture of the red marginals, for each r:
    # the coefficient-shifted green and blue conditionals each sum to 1.
    params = single_pixel_params(**RGB_MIXTURE)
    red_only = single_pixel_params(
        [[m[0]] for m in RGB_MIXTURE["means"]], [[s[0]] for s in RGB_MIXTURE["log_scales"]], RGB_MIXTURE["logits"]
    )
    red = all_levels_log_prob(red_only)
    assert abs(torch.logsumexp(red, 0).item()) < 1e-12
    levels = from_levels(torch.arange(256), torch.float64)
    gb = torch.cartesian_prod(levels, levels)
    for r in (0, 77, 200, 255):
        x = torch.cat([torch.full((len(gb), 1), levels[r].item(), dtype=torch.float64), gb], 1).view(-1, 3, 1, 1)
        lp = discretized_mix_logistic_log_prob(x, params.expand(len(x), -1, -1, -1))
        torch.testing.assert_close(torch.logsumexp(lp, 0), red[r], atol=1e-10, rtol=0)


def test_mixture_sampling_matches_its_likelihood():
    # Single channel: the histogram of samples follows exp(log_prob) over the 256 levels.
    params = single_pixel_params([[0.1], [-0.95], [0.7]], [[-2.0], [-4.0], [-3.0]], [0.0, -0.5, 0.2])
    n = 200_000
    g = torch.Generator().manual_seed(1)
    x = sample_discretized_mix_logistic(params.expand(n, -1, -1, -1), 1, generator=g)
    assert torch.equal(from_levels(to_levels(x), torch.float64), x)  # on the 8-bit grid
    freq = torch.bincount(to_levels(x).flatten(), minlength=256).double() / n
    prob = all_levels_log_prob(params).exp()
    assert (freq - prob).abs().max() < 4 * math.sqrt(prob.max().item() / n)
    # RGB, one razor-thin component: sampling follows the coefficients (G on R, B on R and G)
    # and the likelihood puts almost all mass on that sample.
    params = single_pixel_params([[0.2, -0.3, 0.1]], [[-7.0, -7.0, -7.0]], [0.0], coeffs=[[0.5, -0.25, 0.75]])
    x = sample_discretized_mix_logistic(params, 3)
    q = lambda v: from_levels(to_levels(torch.tensor(v)), torch.float64).item()  # noqa: E731
    r = q(0.2)
    g_ = q(-0.3 + 0.5 * r)
    b = q(0.1 - 0.25 * r + 0.75 * g_)
    torch.testing.assert_close(x.flatten(), torch.tensor([r, g_, b], dtype=torch.float64))
    # The likelihood agrees on the convention: the sample beats every one-level change of a channel.
    best = discretized_mix_logistic_log_prob(x, params)
    for c in range(3):
        for step in (-2 / 255, 2 / 255):
            moved = x.clone()
            moved[0, c] += step
            assert discretized_mix_logistic_log_prob(moved, params) < best


def test_logistic_pixelcnn_log_prob_normalises_per_pixel():
    # The first pixel's distribution has no past, so it sums to 1 over its 256 levels in the model too.
    net = PixelCNN((1, 2, 2), n_layers=2, hidden=8, output="logistic_mixture", n_mixtures=3).double()
    params = net(torch.zeros(1, 1, 2, 2, dtype=torch.float64))
    assert params.shape == (1, logistic_mixture_channels(3, 1), 2, 2)
    lp = all_levels_log_prob(params[:, :, :1, :1])
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-12


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("output,channels", [("softmax256", 1), ("softmax256", 3), ("logistic_mixture", 3)])
def test_sample_shape_range_and_determinism(output, channels):
    net = PixelCNN((channels, 4, 3), n_layers=2, hidden=6, output=output, n_mixtures=2, num_classes=2)
    y = torch.tensor([0, 1, 1])
    x = net.sample(3, y=y, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, channels, 4, 3) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.allclose(from_levels(to_levels(x)), x)
    assert torch.equal(x, net.sample(3, y=y, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(net.log_prob(x, y)).all()


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="divisible"):
        PixelCNN((3, 8, 8), hidden=64, output="softmax256")
    with pytest.raises(ValueError, match="output"):
        PixelCNN((1, 8, 8), output="gaussian")
    PixelCNN((3, 8, 8), hidden=64, output="logistic_mixture")  # no channel groups needed
