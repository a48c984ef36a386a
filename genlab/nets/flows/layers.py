"""Flow layers other than couplings: ActNorm and the invertible 1x1 convolution (Glow), squeeze
(RealNVP), and NICE's diagonal scaling. Each is `forward(x) -> (z, logdet)` and `inverse(z) -> x`."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from genlab.nets.flows.base import FlowLayer


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


class ActNorm(FlowLayer):
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


class InvConv1x1(FlowLayer):
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


class Squeeze(FlowLayer):
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

    def out_shape(self, shape):
        """(C, H, W) -> (4C, H/2, W/2)."""
        c, h, w = shape
        return 4 * c, h // 2, w // 2


class DiagonalScaling(FlowLayer):
    """NICE's last layer: z = x * exp(s) with one learned log-scale per dimension, log|det| = sum(s).

    Additive couplings preserve volume, so this is where a NICE flow changes density at all; it
    starts at the identity (s = 0). Acts on vectors (N, D), or on images with one scale per sub-pixel.
    """

    def __init__(self, shape):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(*((shape,) if isinstance(shape, int) else tuple(shape))))

    def forward(self, x):
        """Return (x * exp(log_scale), sum(log_scale) per example)."""
        return x * self.log_scale.exp(), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z):
        """Return x with forward(x)[0] == z."""
        return z * (-self.log_scale).exp()


class BatchNormFlow(FlowLayer):
    """Batch normalisation as a flow layer (Dinh et al. 2017; MAF's layers between MADEs):
    z = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta per channel (dim 1).

    Training uses the batch's mean and variance (the log-det treats them as constants, as in the
    papers) and updates running averages; evaluation and the inverse use the running averages, so
    the test density is an exact, fixed bijection. The running averages are buffers: they travel in
    checkpoints and exact resume holds.
    """

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.log_gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _view(self, p, x):
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    def _moments(self, x):
        if not self.training:
            return self.running_mean, self.running_var
        dims = [d for d in range(x.dim()) if d != 1]
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(var.detach().to(self.running_var.dtype), self.momentum)
        return mean, var

    def forward(self, x):
        """Return (z, log|det dz/dx|)."""
        mean, var = self._moments(x)
        log_scale = self.log_gamma - 0.5 * torch.log(var + self.eps)
        z = (x - self._view(mean, x)) * self._view(log_scale, x).exp() + self._view(self.beta, x)
        pixels = x[0, 0].numel()
        return z, (pixels * log_scale.sum()).expand(x.shape[0])

    def inverse(self, z):
        """Return x with forward(x)[0] == z under the running averages."""
        log_scale = self.log_gamma - 0.5 * torch.log(self.running_var + self.eps)
        return (z - self._view(self.beta, z)) * (-self._view(log_scale, z)).exp() + self._view(self.running_mean, z)


class Reverse(FlowLayer):
    """Reverses the order of the dimensions of vectors (N, D): between autoregressive layers, so each
    conditions on what the previous one could not (MAF). log-det 0."""

    def forward(self, x):
        """Return (x reversed along dim 1, zeros(N))."""
        return x.flip(1), x.new_zeros(x.shape[0])

    def inverse(self, z):
        """Reverse again."""
        return z.flip(1)
