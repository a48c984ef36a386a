"""Whole flows from layer objects: a chain on flattened inputs (NICE, vector RealNVP) and the multi-scale
architecture with factor-out (RealNVP, Glow), each with a standard normal prior; plus the logit
transform that maps dequantised images in [0, 1) to the real line.

Contract. Every layer is an `nn.Module` with `forward(x) -> (z, logdet)` and `inverse(z) -> x`, where
`logdet` has shape (N,) and is log|det dz/dx| for each example; every layer is a FlowLayer, whose
`out_shape(shape)` says how it changes an example's shape (squeeze does). The dequantisation that turns 8-bit images into a density problem, and
the bits/dim bookkeeping, live in genlab/metrics/likelihood.py (see models/flow.py for the chain).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension of log N(z; 0, 1), constants included."""
    return (-0.5 * (z**2 + _LOG_2PI)).flatten(1).sum(1)


def logit_transform(y: torch.Tensor, alpha: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """RealNVP's z = logit(alpha + (1 - 2 alpha) y) for y in [0, 1], with log|det dz/dy| per example."""
    p = alpha + (1 - 2 * alpha) * y
    z = torch.log(p) - torch.log1p(-p)
    # dz/dy = (1 - 2 alpha) / (p (1 - p)); p stays in [alpha, 1 - alpha], so the logs are finite.
    logdet = math.log(1 - 2 * alpha) - torch.log(p) - torch.log1p(-p)
    return z, logdet.flatten(1).sum(1)


def inverse_logit_transform(z: torch.Tensor, alpha: float = 0.05) -> torch.Tensor:
    """Inverse of logit_transform: y = (sigmoid(z) - alpha) / (1 - 2 alpha)."""
    return (torch.sigmoid(z) - alpha) / (1 - 2 * alpha)


class FlowLayer(nn.Module):
    """A bijection: forward(x) -> (z, log|det dz/dx| per example), inverse(z) -> x, and the shape of z."""

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one example after this layer (most layers keep it)."""
        return tuple(shape)


class _Prior(nn.Module):
    """log p(x) and sampling for a flow with a standard normal prior on its flat latent."""

    shape: tuple[int, ...]

    @property
    def num_dims(self) -> int:
        """D = the number of entries of one example."""
        return math.prod(self.shape)

    def flatten(self, z) -> torch.Tensor:
        """The latent as one (N, D) tensor."""
        return z.flatten(1)

    def log_prob(self, x):
        """log p(x) in nats per example under the standard normal prior."""
        z, logdet = self(x)
        return standard_normal_log_prob(self.flatten(z)) + logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None):
        """Draw n examples: z ~ N(0, temperature^2 I), x = inverse(z); temperature=0 gives inverse(0)."""
        ref = next(self.parameters())
        z = temperature * torch.randn(n, self.num_dims, generator=generator, device=ref.device, dtype=ref.dtype)
        return self.inverse(z)


class ChainFlow(_Prior):
    """Layers applied in turn to the flattened input (N, D); inverse returns the input's shape."""

    def __init__(self, shape, layers: list[FlowLayer]):
        super().__init__()
        self.shape = tuple(shape)
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        """Return (z (N, D), log|det dz/dx|)."""
        h = x.flatten(1)
        logdet = h.new_zeros(h.shape[0])
        for layer in self.layers:
            h, ld = layer(h)
            logdet = logdet + ld
        return h, logdet

    def inverse(self, z):
        """Return x with forward(x)[0] == z."""
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z.reshape(-1, *self.shape)


class MultiScaleFlow(_Prior):
    """The RealNVP / Glow multi-scale architecture: `scales` is a list of layer lists; after every scale
    but the last, half the channels are factored out as that scale's latent. Build one with
    genlab.nets.flows.build_flow('realnvp' | 'glow', shape, ...)."""

    def __init__(self, shape: tuple[int, int, int], scales: list[list[FlowLayer]]):
        super().__init__()
        self.shape, self.n_scales = tuple(shape), len(scales)
        self.scales = nn.ModuleList(nn.ModuleList(layers) for layers in scales)
        self.z_shapes: list[tuple[int, int, int]] = []
        c, h, w = self.shape
        for k, layers in enumerate(self.scales):
            for layer in layers:
                c, h, w = layer.out_shape((c, h, w))
            if k == self.n_scales - 1:
                self.z_shapes.append((c, h, w))
            else:
                self.z_shapes.append((c - c // 2, h, w))
                c = c // 2

    def flatten(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate the per-scale latents into one (N, D) tensor."""
        return torch.cat([z.flatten(1) for z in zs], 1)

    def unflatten(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Split an (N, D) tensor into the per-scale latents."""
        sizes = [math.prod(s) for s in self.z_shapes]
        return [part.reshape(-1, *s) for part, s in zip(z.split(sizes, 1), self.z_shapes)]

    def forward(self, x):
        """Return (list of per-scale latents, log|det dz/dx|)."""
        zs = []
        logdet = x.new_zeros(x.shape[0])
        h = x
        for k, layers in enumerate(self.scales):
            for layer in layers:
                h, ld = layer(h)
                logdet = logdet + ld
            if k < self.n_scales - 1:
                half = h.shape[1] // 2
                h, z = h[:, :half], h[:, half:]
                zs.append(z)
        zs.append(h)
        return zs, logdet

    def inverse(self, z):
        """Map latents (a list as returned by forward, or a flat (N, D) tensor) back to x."""
        zs = self.unflatten(z) if torch.is_tensor(z) else list(z)
        h = zs[-1]
        for k in reversed(range(self.n_scales)):
            if k < self.n_scales - 1:
                h = torch.cat([h, zs[k]], 1)
            for layer in reversed(self.scales[k]):
                h = layer.inverse(h)
        return h
