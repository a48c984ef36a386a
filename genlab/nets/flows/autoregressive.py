"""Masked autoregressive layers: MADE (Germain et al. 2015) and the MAF layer built on it (Papamakarios
et al. 2017).

MADE is an MLP whose weight masks make output i depend only on inputs < i (in the input order), so
one pass gives every conditional. A MAF layer reads a mean and a log-scale per dimension from a MADE
of x: z_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)); its Jacobian is triangular, so log|det| is
-sum(alpha) from one pass, and the inverse is sequential: D passes, one dimension at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nets.flows.base import FlowLayer


def made_degrees(dim: int, hidden: int, n_hidden: int) -> list[torch.Tensor]:
    """Degrees of the input, each hidden layer and the output: inputs and outputs 1..D, hidden units
    cycling through 1..D-1 (0 for D = 1, where every output is a constant)."""
    inputs = torch.arange(1, dim + 1)
    low = 1 if dim > 1 else 0
    hiddens = [torch.arange(hidden) % max(1, dim - 1) + low for _ in range(n_hidden)]
    return [inputs, *hiddens, inputs]


def made_masks(dim: int, hidden: int, n_hidden: int) -> list[torch.Tensor]:
    """The (out, in) 0/1 masks of MADE's layers: a hidden unit of degree k sees inputs <= k, an output
    of degree i sees hidden units < i (strictly), so output i never depends on inputs >= i."""
    deg = made_degrees(dim, hidden, n_hidden)
    masks = [(deg[l + 1].view(-1, 1) >= deg[l].view(1, -1)).float() for l in range(len(deg) - 2)]
    masks.append((deg[-1].view(-1, 1) > deg[-2].view(1, -1)).float())
    return masks


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out, in)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        # Not persistent: the mask follows from the sizes, so checkpoints need not carry it.
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: (N, D) -> (N, n_params, D), where
    out[:, p, i] depends on x[:, :i] only. n_hidden ReLU layers of `hidden` units; the last layer
    starts at zero, so a fresh MAF layer is the identity."""

    def __init__(self, dim: int, hidden: int = 512, n_hidden: int = 1, n_params: int = 2):
        super().__init__()
        if n_hidden < 1:
            raise ValueError(f"MADE needs at least one hidden layer, got {n_hidden}")
        self.dim, self.n_params = dim, n_params
        masks = made_masks(dim, hidden, n_hidden)
        sizes = [dim] + [hidden] * n_hidden
        layers: list[nn.Module] = []
        for i, m in enumerate(masks[:-1]):
            layers += [MaskedLinear(sizes[i], sizes[i + 1], m), nn.ReLU()]
        # Every parameter of output i shares output i's mask.
        self.out = MaskedLinear(hidden, n_params * dim, masks[-1].repeat(n_params, 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.out(self.body(x)).view(-1, self.n_params, self.dim)


class MaskedAutoregressive(FlowLayer):
    """A MAF layer on vectors (N, D): z = (x - mu(x)) * exp(-alpha(x)) with (mu, alpha) from a MADE.

    alpha is soft-clamped to (-clamp, clamp) (a tanh): an unbounded log-scale lets one step of a
    high-dimensional flow blow up, and the bound changes nothing for the values training reaches.
    """

    def __init__(self, dim: int, hidden: int = 512, n_hidden: int = 1, clamp: float = 5.0):
        super().__init__()
        self.made = MADE(dim, hidden, n_hidden, 2)
        self.clamp = clamp

    def _params(self, x):
        out = self.made(x)
        return out[:, 0], self.clamp * torch.tanh(out[:, 1] / self.clamp)

    def forward(self, x):
        """Return (z, log|det dz/dx|) = (..., -sum alpha) from one MADE pass."""
        mu, alpha = self._params(x)
        return (x - mu) * (-alpha).exp(), -alpha.sum(1)

    def inverse(self, z):
        """x from z, one dimension at a time (x_i needs x_<i): D passes of the MADE."""
        x = torch.zeros_like(z)
        for i in range(z.shape[1]):
            mu, alpha = self._params(x)
            x = x.clone()
            x[:, i] = z[:, i] * alpha[:, i].exp() + mu[:, i]
        return x
