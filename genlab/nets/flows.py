"""Normalizing-flow building blocks: RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018).

Contract. Every layer is an `nn.Module` with `forward(x) -> (z, logdet)` and `inverse(z) -> x`, where
`logdet` has shape (N,) and is log|det dz/dx| for each example. Layers take images (N, C, H, W); those
where it makes sense (AffineCoupling with mask='alternate', ActNorm, InvConv1x1) also take vectors (N, D).

Conventions for images (how models/flow.py should chain these pieces):

    x (N, C, H, W) in [-1, 1]
      -> levels = to_levels(x, n_bits)                  integers 0 .. 2^n_bits - 1, as floats
      -> y = dequantize(levels, n_bits)                 y = (levels + u) / 2^n_bits, u ~ U[0, 1)^D
      -> z0, ld = logit_transform(y, alpha)             z0 = logit(alpha + (1 - 2 alpha) y)
      -> log p(y) = flow.log_prob(z0) + ld              density of y on [0, 1)^D, in nats
      -> bits_per_dim(log p(y), D, n_bits)              D = C*H*W

Why those constants: y has density p(y) on [0, 1)^D, so v = 2^n_bits * y = levels + u has density
p(y) / 2^(n_bits*D). Jensen's inequality over u gives the discrete bound
log P(levels) >= E_u[log p(y) - D log 2^n_bits], and bits/dim is -(log p(y) - D log 2^n_bits) / (D log 2).
A model uniform on [0, 1)^D (log p(y) = 0) therefore scores exactly n_bits bits/dim.

Sampling runs the chain backwards: z0 = flow.sample(n) -> y = inverse_logit_transform(z0) -> x = 2y - 1.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- pre-processing


def to_levels(x: torch.Tensor, n_bits: int = 8) -> torch.Tensor:
    """Map images in [-1, 1] (8-bit grid) to integer levels 0 .. 2^n_bits - 1 (as floats)."""
    x8 = torch.round((x.clamp(-1, 1) + 1) * 127.5)
    # Fewer bits (Glow's 5-bit CelebA) drop the low bits of the 8-bit value.
    return torch.floor(x8 / 2 ** (8 - n_bits))


def dequantize(x: torch.Tensor, n_bits: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation of integer levels x in 0..2^n_bits-1: y = (x + u) / 2^n_bits in [0, 1)."""
    if not x.is_floating_point():
        x = x.float()
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    # In float32, 255 + u rounds up to 256 for u > 1 - 2^-17; keep y inside its bin and below 1.
    return ((x + u) / 2**n_bits).clamp(max=1 - torch.finfo(x.dtype).eps / 2)


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


def bits_per_dim(log_prob_y: torch.Tensor, num_dims: int, n_bits: int = 8) -> torch.Tensor:
    """Bits/dim of the discrete data from log p(y) of its dequantised version y in [0, 1)^D (nats)."""
    log_prob_levels = log_prob_y - num_dims * n_bits * math.log(2)
    return -log_prob_levels / (num_dims * math.log(2))


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension of log N(z; 0, 1), constants included."""
    return (-0.5 * (z**2 + _LOG_2PI)).flatten(1).sum(1)


# ----------------------------------------------------------------------------- conditioners


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


# ----------------------------------------------------------------------------- layers


class AffineCoupling(nn.Module):
    """RealNVP affine coupling: half the input is kept, the other half is scaled and shifted given it.

    mask='checkerboard' or 'channel' for images (N, C, H, W), 'alternate' for vectors (N, D); parity
    swaps which half is transformed. scale='tanh' is RealNVP's log-scale s = factor * tanh(h) with a
    learnable per-channel factor, z = x * exp(s) + t; scale='sigmoid' is Glow's z = (x + t) * sigmoid(h + 2),
    whose scale is at most 1, so a stack of them cannot blow up. With the conditioner's zero last layer
    the tanh coupling starts as the identity; the sigmoid one starts as the constant contraction
    z = sigmoid(2) x (0.88 x), exactly as in Glow, where ActNorm absorbs it.
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
        if mask not in ("checkerboard", "channel", "alternate"):
            raise ValueError(f"AffineCoupling mask must be 'checkerboard', 'channel' or 'alternate', got {mask!r}")
        if scale not in ("tanh", "sigmoid"):
            raise ValueError(f"AffineCoupling scale must be 'tanh' or 'sigmoid', got {scale!r}")
        if mask == "channel" and in_channels < 2:
            raise ValueError("AffineCoupling(mask='channel') needs at least 2 channels; squeeze first")
        self.mask, self.parity, self.scale = mask, int(parity) % 2, scale
        self.in_channels = in_channels
        if mask == "channel":
            first = in_channels // 2
            n_cond = first if self.parity == 0 else in_channels - first
            n_out = in_channels - n_cond
            self.net = _ConvResNet(n_cond, 2 * n_out, hidden, n_blocks)
        elif mask == "checkerboard":
            n_out = in_channels
            self.net = _ConvResNet(in_channels, 2 * n_out, hidden, n_blocks)
        else:
            n_out = in_channels
            self.net = _MLP(in_channels, 2 * n_out, hidden, n_blocks)
        # Only read for scale='tanh'; kept for both so state_dicts do not depend on the option.
        self.scale_factor = nn.Parameter(torch.ones(n_out))

    # The three helpers below split the input into (conditioning, transformed) parts and back.
    def _split(self, x):
        if self.mask == "channel":
            a, b = x[:, : self.in_channels // 2], x[:, self.in_channels // 2 :]
            return (a, b) if self.parity == 0 else (b, a)
        if self.mask == "checkerboard":
            m = checkerboard_mask(x.shape[2], x.shape[3], self.parity, x.device, x.dtype)
        else:
            m = ((torch.arange(x.shape[1], device=x.device) + self.parity) % 2 == 0).to(x.dtype).view(1, -1)
        return x * m, m

    def _params(self, cond):
        h = self.net(cond)
        shift, raw = h.chunk(2, dim=1)
        if self.scale == "tanh":
            factor = self.scale_factor.view(1, -1, *([1] * (raw.dim() - 2)))
            log_s = factor * torch.tanh(raw)
        else:
            log_s = F.logsigmoid(raw + 2.0)
        return shift, log_s

    def forward(self, x):
        """Return (z, log|det dz/dx|)."""
        if self.mask == "channel":
            cond, xb = self._split(x)
            shift, log_s = self._params(cond)
            zb = xb * log_s.exp() + shift if self.scale == "tanh" else (xb + shift) * log_s.exp()
            z = torch.cat([cond, zb], 1) if self.parity == 0 else torch.cat([zb, cond], 1)
            return z, log_s.flatten(1).sum(1)
        cond, m = self._split(x)
        shift, log_s = self._params(cond)
        # Zero the parameters on the conditioning half so it passes through unchanged.
        shift, log_s = shift * (1 - m), log_s * (1 - m)
        z = x * log_s.exp() + shift if self.scale == "tanh" else (x + shift) * log_s.exp()
        return z, log_s.flatten(1).sum(1)

    def inverse(self, z):
        """Return x with forward(x)[0] == z."""
        if self.mask == "channel":
            cond, zb = self._split(z)
            shift, log_s = self._params(cond)
            xb = (zb - shift) * (-log_s).exp() if self.scale == "tanh" else zb * (-log_s).exp() - shift
            return torch.cat([cond, xb], 1) if self.parity == 0 else torch.cat([xb, cond], 1)
        cond, m = self._split(z)  # the conditioning half of z equals that of x
        shift, log_s = self._params(cond)
        shift, log_s = shift * (1 - m), log_s * (1 - m)
        return (z - shift) * (-log_s).exp() if self.scale == "tanh" else z * (-log_s).exp() - shift


def _channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of x; under several ranks, of the batch all ranks draw together."""
    dims = [d for d in range(x.dim()) if d != 1]
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x.mean(dim=dims), x.std(dim=dims, unbiased=False)
    # Two passes of sums over all ranks, so every rank initialises as one process would on the global batch.
    n = torch.tensor(float(x.numel() // x.shape[1]), device=x.device, dtype=x.dtype)
    total = torch.cat([x.sum(dim=dims), n.view(1)])
    dist.all_reduce(total)
    mean, count = total[:-1] / total[-1], total[-1]
    sq = (x - mean.view(1, -1, *([1] * (x.dim() - 2)))).pow(2).sum(dim=dims)
    dist.all_reduce(sq)
    return mean, (sq / count).sqrt()


class ActNorm(nn.Module):
    """Glow's per-channel affine z = (x + loc) * exp(log_scale), initialised from the first training batch.

    The first forward in training mode sets loc and log_scale so that the batch's output has zero mean
    and unit variance per channel. `initialized` is a buffer, so it travels in the state_dict and a
    reloaded layer keeps its learned values instead of re-initialising on a new batch.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))
        # A Python mirror of the buffer, so the check on every forward does not force a GPU sync.
        self._ready = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready = bool(self.initialized)

    def _view(self, p, x):
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def _initialize(self, x):
        mean, std = _channel_moments(x)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self._ready = True

    def forward(self, x):
        """Return (z, log|det dz/dx|); initialise from x on the first training call."""
        if self.training and not self._ready:
            self._initialize(x)
        z = (x + self._view(self.loc, x)) * self._view(self.log_scale, x).exp()
        pixels = x[0, 0].numel()  # H*W for images, 1 for vectors
        logdet = (pixels * self.log_scale.sum()).expand(x.shape[0])
        return z, logdet

    def inverse(self, z):
        """Return x with forward(x)[0] == z."""
        return z * (-self._view(self.log_scale, z)).exp() - self._view(self.loc, z)


class InvConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution, optionally LU-parametrised: W = P L (U + diag(sign * exp(log_s))).

    P is a fixed permutation, L unit lower triangular, U strictly upper triangular; the diagonal is
    kept as a fixed sign and a learned log|s|, so log|det W| = sum(log_s) costs O(C) instead of O(C^3).
    Initialised to a random orthogonal matrix. Also acts on vectors (N, D) as z = W x.
    """

    def __init__(self, channels: int, lu: bool = True):
        super().__init__()
        self.lu = lu
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        if not lu:
            self.weight = nn.Parameter(w)
            return
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def _factors(self):
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return lower, upper

    def weight_matrix(self) -> torch.Tensor:
        """The assembled (C, C) matrix W."""
        if not self.lu:
            return self.weight
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def _log_abs_det(self):
        return self.log_s.sum() if self.lu else torch.linalg.slogdet(self.weight)[1]

    @staticmethod
    def _mix(w, x):
        if x.dim() == 2:
            return x @ w.T
        return F.conv2d(x, w.view(*w.shape, 1, 1))

    def forward(self, x):
        """Return (z, log|det dz/dx|) with log|det| = H * W * log|det W|."""
        pixels = x[0, 0].numel()
        logdet = (pixels * self._log_abs_det()).expand(x.shape[0])
        return self._mix(self.weight_matrix(), x), logdet

    def inverse(self, z):
        """Return x with forward(x)[0] == z."""
        if not self.lu:
            return self._mix(torch.linalg.inv(self.weight), z)
        lower, upper = self._factors()
        # W^-1 = U^-1 L^-1 P^T by two triangular solves: better conditioned than a general inverse.
        l_inv = torch.linalg.solve_triangular(lower, self.eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(upper, self.eye, upper=True)
        return self._mix(u_inv @ l_inv @ self.perm.T, z)


class Squeeze(nn.Module):
    """Space-to-depth: (N, C, H, W) -> (N, 4C, H/2, W/2); each 2x2 patch becomes 4 channels. logdet 0."""

    def forward(self, x):
        """Return (squeezed x, zeros(N))."""
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs even height and width, got {h}x{w}")
        z = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return z, x.new_zeros(n)

    def inverse(self, z):
        """Depth-to-space, the exact inverse of forward."""
        n, c, h, w = z.shape
        return z.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c // 4, 2 * h, 2 * w)


# ----------------------------------------------------------------------------- whole flows


class MultiScaleFlow(nn.Module):
    """The RealNVP / Glow multi-scale architecture with a standard normal prior on every latent.

    kind='realnvp', per scale: steps_per_scale checkerboard couplings (alternating parity), squeeze,
    steps_per_scale channel couplings, factor out half the channels; the last scale has
    steps_per_scale + 1 checkerboard couplings (4 for the paper's 3) and no squeeze. norm='actnorm'
    puts an ActNorm after every coupling (the paper's batch norm, as a fixed function at test time).
    kind='glow', per scale: squeeze, steps_per_scale x [ActNorm, InvConv1x1, AffineCoupling(channel,
    sigmoid)], factor out half the channels (not on the last scale).
    Squeezing needs even sizes: realnvp squeezes n_scales - 1 times, glow n_scales times, so H and W
    must be divisible by 2^(n_scales-1) or 2^n_scales (28x28: realnvp n_scales <= 3, glow <= 2).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        n_scales: int = 2,
        steps_per_scale: int = 3,
        kind: str = "realnvp",
        hidden: int = 64,
        n_blocks: int = 2,
        norm: str = "none",
    ):
        super().__init__()
        problem = self._shape_problem(tuple(shape), n_scales, kind)
        if problem:
            raise ValueError(problem)
        if norm not in ("none", "actnorm"):
            raise ValueError(f"MultiScaleFlow norm must be 'none' or 'actnorm', got {norm!r}")
        self.shape, self.n_scales, self.kind = tuple(shape), n_scales, kind

        def coupling(channels, mask, parity):
            # RealNVP normalised between couplings (the paper used batch norm); ActNorm does the same
            # job with a data-dependent start and is one fixed function at test time, so the NLL is exact.
            layer = AffineCoupling(channels, mask, parity, hidden, n_blocks, "tanh")
            return [layer, ActNorm(channels)] if norm == "actnorm" else [layer]

        c, h, w = self.shape
        self.scales = nn.ModuleList()
        self.z_shapes: list[tuple[int, int, int]] = []
        for k in range(n_scales):
            last = k == n_scales - 1
            layers: list[nn.Module] = []
            if kind == "realnvp":
                n_checker = steps_per_scale + 1 if last else steps_per_scale
                for i in range(n_checker):
                    layers += coupling(c, "checkerboard", i % 2)
                if not last:
                    layers.append(Squeeze())
                    c, h, w = 4 * c, h // 2, w // 2
                    for i in range(steps_per_scale):
                        layers += coupling(c, "channel", i % 2)
            else:
                layers.append(Squeeze())
                c, h, w = 4 * c, h // 2, w // 2
                for _ in range(steps_per_scale):
                    layers += [ActNorm(c), InvConv1x1(c), AffineCoupling(c, "channel", 0, hidden, n_blocks, "sigmoid")]
            self.scales.append(nn.ModuleList(layers))
            if last:
                self.z_shapes.append((c, h, w))
            else:
                self.z_shapes.append((c - c // 2, h, w))
                c = c // 2

    @staticmethod
    def _squeezes_fit(shape, n_scales, kind) -> bool:
        _, h, w = shape
        factor = 2 ** (n_scales if kind == "glow" else n_scales - 1)
        # A RealNVP last scale of a single pixel would leave its checkerboard nothing to condition on.
        return h % factor == 0 and w % factor == 0 and (kind == "glow" or (h // factor) * (w // factor) >= 2)

    @staticmethod
    def _shape_problem(shape, n_scales, kind) -> str | None:
        if kind not in ("realnvp", "glow"):
            return f"MultiScaleFlow kind must be 'realnvp' or 'glow', got {kind!r}"
        if len(shape) != 3:
            return f"MultiScaleFlow needs an image shape (C, H, W), got {shape}"
        if n_scales < 1:
            return f"MultiScaleFlow needs n_scales >= 1, got {n_scales}"
        if not MultiScaleFlow._squeezes_fit(shape, n_scales, kind):
            n_squeeze = n_scales if kind == "glow" else n_scales - 1
            best = max((n for n in range(1, 16) if MultiScaleFlow._squeezes_fit(shape, n, kind)), default=0)
            hint = f"use n_scales <= {best}" if best else "pad or resize the images"
            return (
                f"MultiScaleFlow(kind={kind!r}, n_scales={n_scales}) squeezes {n_squeeze} times and needs "
                f"H and W divisible by {2**n_squeeze}, got {shape[1]}x{shape[2]}: {hint}"
            )
        return None

    @staticmethod
    def supports(shape, n_scales: int, kind: str = "realnvp") -> bool:
        """Whether images of shape (C, H, W) can go through n_scales scales of this kind."""
        return MultiScaleFlow._shape_problem(tuple(shape), n_scales, kind) is None

    @property
    def num_dims(self) -> int:
        """D = C * H * W."""
        return math.prod(self.shape)

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

    def log_prob(self, x):
        """log p(x) in nats per example under the standard normal prior."""
        zs, logdet = self(x)
        return sum(standard_normal_log_prob(z) for z in zs) + logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None):
        """Draw n images: z ~ N(0, temperature^2 I), x = inverse(z); temperature=0 gives inverse(0)."""
        ref = next(self.parameters())
        z = temperature * torch.randn(n, self.num_dims, generator=generator, device=ref.device, dtype=ref.dtype)
        return self.inverse(z)


class VectorFlow(nn.Module):
    """RealNVP for vectors (N, D): affine couplings with alternating masks, standard normal prior."""

    def __init__(self, dim: int, n_layers: int = 8, hidden: int = 64, n_blocks: int = 2):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(
            AffineCoupling(dim, "alternate", i % 2, hidden, n_blocks, "tanh") for i in range(n_layers)
        )

    def forward(self, x):
        """Return (z, log|det dz/dx|)."""
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z):
        """Return x with forward(x)[0] == z."""
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def log_prob(self, x):
        """log p(x) in nats per example."""
        z, logdet = self(x)
        return standard_normal_log_prob(z) + logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None):
        """Draw n points: z ~ N(0, temperature^2 I), x = inverse(z)."""
        ref = next(self.parameters())
        z = temperature * torch.randn(n, self.dim, generator=generator, device=ref.device, dtype=ref.dtype)
        return self.inverse(z)
