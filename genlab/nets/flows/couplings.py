"""Coupling layers: half the input conditions an invertible map of the other half (NICE, RealNVP, Glow,
neural spline flows).

A coupling is three small objects: a partition (which half conditions), a conditioner network and a
rule (how the conditioner's output acts). The rules are a table, so a new coupling is one entry:
tanh (RealNVP), sigmoid (Glow), additive (NICE) and spline (Durkan et al. 2019).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nets.flows.base import FlowLayer


class _ConvResNet(nn.Module):
    """Coupling conditioner for images: conv in, residual blocks, zero-initialised conv out."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, n_blocks: int):
        super().__init__()
        self.inp = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1)
            )
            for _ in range(n_blocks)
        )
        self.out = nn.Conv2d(hidden, out_channels, 3, padding=1)
        # Zero output: shift 0 and log-scale 0, so a fresh coupling is the identity (tanh scale).
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(F.relu(h))


class _MLP(nn.Module):
    """Coupling conditioner for vectors: ReLU MLP with a zero-initialised last layer."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, n_blocks: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU()]
        for _ in range(n_blocks):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        last = nn.Linear(hidden, out_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x):
        return self.net(x)


def checkerboard_mask(h: int, w: int, parity: int, device=None, dtype=None) -> torch.Tensor:
    """(1, 1, H, W) mask that is 1 where (i + j + parity) is even: the half that conditions."""
    i = torch.arange(h, device=device).view(-1, 1)
    j = torch.arange(w, device=device).view(1, -1)
    return ((i + j + parity) % 2 == 0).to(dtype or torch.float32).view(1, 1, h, w)


# ---- partitions: split(x) -> (conditioning input, transformed part, mask of the kept half or None)


class _ChannelHalves:
    """Images: the first or second half of the channels conditions the other."""

    conv = True

    def __init__(self, channels: int, parity: int):
        if channels < 2:
            raise ValueError("Coupling(mask='channel') needs at least 2 channels; squeeze first")
        self.first, self.parity = channels // 2, parity
        self.n_cond = self.first if parity == 0 else channels - self.first
        self.n_out = channels - self.n_cond

    def split(self, x):
        a, b = x[:, : self.first], x[:, self.first :]
        return (a, b, None) if self.parity == 0 else (b, a, None)

    def merge(self, cond, out):
        return torch.cat([cond, out], 1) if self.parity == 0 else torch.cat([out, cond], 1)


class _Masked:
    """A fixed binary mask over the whole input: checkerboard (images) or alternate entries (vectors)."""

    def __init__(self, channels: int, parity: int, conv: bool):
        self.parity, self.conv = parity, conv
        self.n_cond = self.n_out = channels

    def split(self, x):
        if self.conv:
            m = checkerboard_mask(x.shape[2], x.shape[3], self.parity, x.device, x.dtype)
        else:
            m = ((torch.arange(x.shape[1], device=x.device) + self.parity) % 2 == 0).to(x.dtype).view(1, -1)
        return x * m, x, m

    def merge(self, cond, out):
        return out


PARTITIONS = {
    "channel": _ChannelHalves,
    "checkerboard": lambda c, p: _Masked(c, p, conv=True),
    "alternate": lambda c, p: _Masked(c, p, conv=False),
}


# ---- rules: how the conditioner's output acts on the transformed part. A rule turns the raw output
# into parameters (params), maps x -> (z, log|dz/dx| per element) (forward) and back (inverse).


class _TanhRule:
    """RealNVP: log s = factor * tanh(h), z = x * s + t; a zero conditioner makes it the identity."""

    outputs, uses_factor = 2, True

    def params(self, h, factor):
        shift, raw = h.chunk(2, dim=1)
        return shift, factor.view(1, -1, *([1] * (raw.dim() - 2))) * torch.tanh(raw)

    def forward(self, x, shift, log_s):
        return x * log_s.exp() + shift, log_s

    def inverse(self, z, shift, log_s):
        return (z - shift) * (-log_s).exp()


class _SigmoidRule:
    """Glow: z = (x + t) * sigmoid(h + 2); the scale is at most 1, so a stack cannot blow up."""

    outputs, uses_factor = 2, True  # the factor is unused, kept so state_dicts match the tanh rule's

    def params(self, h, factor):
        shift, raw = h.chunk(2, dim=1)
        return shift, F.logsigmoid(raw + 2.0)

    def forward(self, x, shift, log_s):
        return (x + shift) * log_s.exp(), log_s

    def inverse(self, z, shift, log_s):
        return z * (-log_s).exp() - shift


class _AdditiveRule:
    """NICE: z = x + t, volume preserving (log-det 0); the scale lives in a separate DiagonalScaling."""

    outputs, uses_factor = 1, False

    def params(self, h, factor):
        return (h,)

    def forward(self, x, shift):
        return x + shift, torch.zeros_like(x)

    def inverse(self, z, shift):
        return z - shift


class _SplineRule:
    """Neural spline flows (Durkan et al. 2019): a monotonic rational-quadratic spline of `bins` bins on
    [-tail_bound, tail_bound] per element, the identity outside (linear tails); a zero conditioner gives
    equal bins and unit slopes, i.e. the identity."""

    uses_factor = False

    def __init__(self, bins: int = 8, tail_bound: float = 3.0):
        if int(bins) < 2:
            raise ValueError(f"the spline coupling needs bins >= 2, got {bins}")
        if tail_bound <= 0:
            raise ValueError(f"the spline coupling needs tail_bound > 0, got {tail_bound}")
        self.bins, self.tail_bound = int(bins), float(tail_bound)
        self.outputs = 3 * self.bins - 1  # widths, heights, and the slopes at the interior knots

    def params(self, h, factor):
        # (N, P * n_out, ...) in the layout of the other rules (parameter-major) -> (N, n_out, ..., P)
        n = h.shape[0]
        h = h.reshape(n, self.outputs, -1, *h.shape[2:]).movedim(1, -1)
        k = self.bins
        return h[..., :k], h[..., k:2 * k], h[..., 2 * k:]

    def forward(self, x, w, h, d):
        return rational_quadratic_spline(x, w, h, d, self.tail_bound)

    def inverse(self, z, w, h, d):
        return rational_quadratic_spline(z, w, h, d, self.tail_bound, inverse=True)[0]


RULES = {"tanh": _TanhRule, "sigmoid": _SigmoidRule, "additive": _AdditiveRule, "spline": _SplineRule}

_MIN_BIN, _MIN_SLOPE = 1e-3, 1e-3
# softplus(raw + _SLOPE_SHIFT) + _MIN_SLOPE == 1 at raw = 0: a zero conditioner gives unit slopes.
_SLOPE_SHIFT = math.log(math.expm1(1 - _MIN_SLOPE))


def _knots(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """Knot positions (..., K+1) from -bound to bound, from unnormalised bin sizes (..., K)."""
    k = raw.shape[-1]
    sizes = _MIN_BIN + (1 - _MIN_BIN * k) * torch.softmax(raw, -1)
    edges = F.pad(torch.cumsum(sizes, -1), (1, 0)) * (2 * bound) - bound
    # The last knot exactly at +bound (the cumulative sum may miss 1 by a rounding error).
    return torch.cat([edges[..., :-1], torch.full_like(edges[..., -1:], bound)], -1)


def rational_quadratic_spline(x, w_raw, h_raw, d_raw, bound: float, inverse: bool = False):
    """Durkan et al.'s monotonic rational-quadratic spline per element (and its inverse), linear (identity)
    tails outside [-bound, bound]; returns (y, log|dy/dx| per element) (for inverse=True, of the forward map
    at the returned point, which callers negate if they need it)."""
    xs, ys = _knots(w_raw, bound), _knots(h_raw, bound)
    widths, heights = xs[..., 1:] - xs[..., :-1], ys[..., 1:] - ys[..., :-1]
    slopes = F.pad(_MIN_SLOPE + F.softplus(d_raw + _SLOPE_SHIFT), (1, 1), value=1.0)  # slope 1 at the tails
    inside = (x > -bound) & (x < bound)
    v = x.clamp(-bound, bound)  # evaluated everywhere, used inside only: no NaN reaches the tails' gradient
    edges = ys if inverse else xs
    idx = (v.unsqueeze(-1) >= edges[..., 1:-1]).sum(-1, keepdim=True)

    def at(t, shift=0):
        return t.gather(-1, idx + shift).squeeze(-1)

    x0, w, y0, h, d0, d1 = at(xs), at(widths), at(ys), at(heights), at(slopes), at(slopes, 1)
    s = h / w
    curve = d0 + d1 - 2 * s
    if inverse:
        dy = v - y0
        a = h * (s - d0) + dy * curve
        b = h * d0 - dy * curve
        c = -s * dy
        # The root of the quadratic in theta that lies in [0, 1], in the cancellation-free form.
        theta = (2 * c) / (-b - torch.sqrt((b.pow(2) - 4 * a * c).clamp(min=0)))
        out = theta * w + x0
    else:
        theta = (v - x0) / w
        out = y0 + h * (s * theta.pow(2) + d0 * theta * (1 - theta)) / (s + curve * theta * (1 - theta))
    t1 = theta * (1 - theta)
    denom = s + curve * t1
    logdet = (torch.log(s.pow(2) * (d1 * theta.pow(2) + 2 * s * t1 + d0 * (1 - theta).pow(2)))
              - 2 * torch.log(denom))
    return torch.where(inside, out, x), torch.where(inside, logdet, torch.zeros_like(logdet))


class Coupling(FlowLayer):
    """A coupling: half the input is kept, the other half is transformed element-wise given it.

    mask='checkerboard' or 'channel' for images (N, C, H, W), 'alternate' for vectors (N, D); parity
    swaps which half is transformed. rule='tanh' is RealNVP's log-scale s = factor * tanh(h) with a
    learnable per-channel factor, z = x * exp(s) + t; rule='sigmoid' is Glow's z = (x + t) * sigmoid(h + 2),
    whose scale is at most 1; rule='additive' is NICE's z = x + t; rule='spline' is the neural spline
    flow's rational-quadratic spline (rule_options: bins, tail_bound). With the conditioner's zero last
    layer the tanh, additive and spline couplings start as the identity; the sigmoid one starts as the
    constant contraction z = sigmoid(2) x (0.88 x), exactly as in Glow, where ActNorm absorbs it.
    """

    def __init__(
        self,
        in_channels: int,
        mask: str = "checkerboard",
        parity: int = 0,
        hidden: int = 64,
        n_blocks: int = 2,
        rule: str = "tanh",
        **rule_options,
    ):
        super().__init__()
        if mask not in PARTITIONS:
            raise ValueError(f"Coupling mask must be 'checkerboard', 'channel' or 'alternate', got {mask!r}")
        if rule not in RULES:
            raise ValueError(f"Coupling rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
        self.mask, self.parity, self.rule_name = mask, int(parity) % 2, rule
        self.in_channels = in_channels
        self.partition = PARTITIONS[mask](in_channels, self.parity)
        self.rule = RULES[rule](**rule_options)
        net = _ConvResNet if self.partition.conv else _MLP
        self.net = net(self.partition.n_cond, self.rule.outputs * self.partition.n_out, hidden, n_blocks)
        if self.rule.uses_factor:
            self.scale_factor = nn.Parameter(torch.ones(self.partition.n_out))
        else:
            self.register_buffer("scale_factor", None)

    def _params(self, cond):
        return self.rule.params(self.net(cond), self.scale_factor)

    def forward(self, x):
        """Return (z, log|det dz/dx|)."""
        cond, part, keep = self.partition.split(x)
        z, logdet = self.rule.forward(part, *self._params(cond))
        if keep is not None:  # the conditioning half passes through unchanged
            z, logdet = torch.where(keep.bool(), part, z), logdet * (1 - keep)
        return self.partition.merge(cond, z), logdet.flatten(1).sum(1)

    def inverse(self, z):
        """Return x with forward(x)[0] == z."""
        cond, part, keep = self.partition.split(z)  # the conditioning half of z equals that of x
        x = self.rule.inverse(part, *self._params(cond))
        if keep is not None:
            x = torch.where(keep.bool(), part, x)
        return self.partition.merge(cond, x)
