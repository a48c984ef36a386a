"""Coupling layers: half the input conditions an invertible map of the other half (NICE, RealNVP, Glow).

A coupling is three small objects: a partition (which half conditions), a conditioner network and a
rule (how the shift and scale act). The rules are a table, so a new coupling is one entry:
tanh (RealNVP), sigmoid (Glow) and additive (NICE).
"""

from __future__ import annotations

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
            raise ValueError("AffineCoupling(mask='channel') needs at least 2 channels; squeeze first")
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


# ---- rules: how (shift, log-scale) from the conditioner act on the transformed part


class _TanhRule:
    """RealNVP: log s = factor * tanh(h), z = x * s + t; a zero conditioner makes it the identity."""

    outputs, uses_factor = 2, True

    def params(self, h, factor):
        shift, raw = h.chunk(2, dim=1)
        return shift, factor.view(1, -1, *([1] * (raw.dim() - 2))) * torch.tanh(raw)

    def forward(self, x, shift, log_s):
        return x * log_s.exp() + shift

    def inverse(self, z, shift, log_s):
        return (z - shift) * (-log_s).exp()


class _SigmoidRule:
    """Glow: z = (x + t) * sigmoid(h + 2); the scale is at most 1, so a stack cannot blow up."""

    outputs, uses_factor = 2, True  # the factor is unused, kept so state_dicts match the tanh rule's

    def params(self, h, factor):
        shift, raw = h.chunk(2, dim=1)
        return shift, F.logsigmoid(raw + 2.0)

    def forward(self, x, shift, log_s):
        return (x + shift) * log_s.exp()

    def inverse(self, z, shift, log_s):
        return z * (-log_s).exp() - shift


class _AdditiveRule:
    """NICE: z = x + t, volume preserving (log-det 0); the scale lives in a separate DiagonalScaling."""

    outputs, uses_factor = 1, False

    def params(self, h, factor):
        return h, torch.zeros_like(h)

    def forward(self, x, shift, log_s):
        return x + shift

    def inverse(self, z, shift, log_s):
        return z - shift


RULES = {"tanh": _TanhRule, "sigmoid": _SigmoidRule, "additive": _AdditiveRule}


class AffineCoupling(FlowLayer):
    """A coupling: half the input is kept, the other half is shifted (and scaled) given it.

    mask='checkerboard' or 'channel' for images (N, C, H, W), 'alternate' for vectors (N, D); parity
    swaps which half is transformed. scale='tanh' is RealNVP's log-scale s = factor * tanh(h) with a
    learnable per-channel factor, z = x * exp(s) + t; scale='sigmoid' is Glow's z = (x + t) * sigmoid(h + 2),
    whose scale is at most 1; scale='additive' is NICE's z = x + t. With the conditioner's zero last
    layer the tanh and additive couplings start as the identity; the sigmoid one starts as the constant
    contraction z = sigmoid(2) x (0.88 x), exactly as in Glow, where ActNorm absorbs it.
    """

    def __init__(
        self,
        in_channels: int,
        mask: str = "checkerboard",
        parity: int = 0,
        hidden: int = 64,
        n_blocks: int = 2,
        scale: str = "tanh",
    ):
        super().__init__()
        if mask not in PARTITIONS:
            raise ValueError(f"AffineCoupling mask must be 'checkerboard', 'channel' or 'alternate', got {mask!r}")
        if scale not in RULES:
            raise ValueError(f"AffineCoupling scale must be one of {', '.join(map(repr, RULES))}, got {scale!r}")
        self.mask, self.parity, self.scale = mask, int(parity) % 2, scale
        self.in_channels = in_channels
        self.partition = PARTITIONS[mask](in_channels, self.parity)
        self.rule = RULES[scale]()
        net = _ConvResNet if self.partition.conv else _MLP
        self.net = net(self.partition.n_cond, self.rule.outputs * self.partition.n_out, hidden, n_blocks)
        if self.rule.uses_factor:
            self.scale_factor = nn.Parameter(torch.ones(self.partition.n_out))
        else:
            self.register_buffer("scale_factor", None)

    def _params(self, cond, keep):
        shift, log_s = self.rule.params(self.net(cond), self.scale_factor)
        if keep is not None:
            # Zero the parameters on the conditioning half so it passes through unchanged.
            shift, log_s = shift * (1 - keep), log_s * (1 - keep)
        return shift, log_s

    def forward(self, x):
        """Return (z, log|det dz/dx|)."""
        cond, part, keep = self.partition.split(x)
        shift, log_s = self._params(cond, keep)
        return self.partition.merge(cond, self.rule.forward(part, shift, log_s)), log_s.flatten(1).sum(1)

    def inverse(self, z):
        """Return x with forward(x)[0] == z."""
        cond, part, keep = self.partition.split(z)  # the conditioning half of z equals that of x
        shift, log_s = self._params(cond, keep)
        return self.partition.merge(cond, self.rule.inverse(part, shift, log_s))
