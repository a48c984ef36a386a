"""f-GAN's divergence table (Nowozin, Cseke & Tomioka 2016, Tables 2 and 6): f, f', the output
activation g_f and the Fenchel conjugate f* of each f-divergence, in numerically stable forms."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Fn = Callable[[torch.Tensor], torch.Tensor]
LOG2 = math.log(2.0)


def _log1mexp(t: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(t)) for t < 0, accurate at both ends (Maechler 2012)."""
    # Near 0, 1 - exp(t) cancels, so go through expm1; far below 0, exp(t) underflows into log1p.
    return torch.where(t > -LOG2, torch.log(-torch.expm1(t)), torch.log1p(-torch.exp(t)))


@dataclass(frozen=True)
class Divergence:
    """One row of f-GAN's Tables 2 and 6: generator f, f', output activation g_f and conjugate f*."""

    name: str
    f: Fn  # convex, f(1) = 0, on u > 0
    f_prime: Fn
    activation: Fn  # g_f: R -> dom f*, so T = g_f(V) is always a valid argument of f*
    conjugate: Fn  # f*(t) on dom f*
    conjugate_of_activation: Fn  # f*(g_f(v)) in one stable expression, used by the loss
    domain: tuple[float, float]  # dom f* as an interval (lo, hi); inf where unbounded
    closed: bool = False  # whether dom f* contains its finite end points

    def in_domain(self, t: torch.Tensor) -> torch.Tensor:
        """Whether each t lies in dom f*."""
        lo, hi = self.domain
        if self.closed:
            return (t >= lo) & (t <= hi)
        return (t > lo) & (t < hi)


def _xlogx(u: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(u, u)


DIVERGENCES: dict[str, Divergence] = {
    d.name: d
    for d in [
        Divergence(
            "total_variation",
            f=lambda u: 0.5 * (u - 1).abs(),
            f_prime=lambda u: 0.5 * torch.sign(u - 1),  # a subgradient; 0 at u = 1
            activation=lambda v: 0.5 * torch.tanh(v),
            conjugate=lambda t: t,
            conjugate_of_activation=lambda v: 0.5 * torch.tanh(v),
            domain=(-0.5, 0.5),
            closed=True,
        ),
        Divergence(
            "kl",
            f=_xlogx,
            f_prime=lambda u: 1 + torch.log(u),
            activation=lambda v: v,
            conjugate=lambda t: torch.exp(t - 1),
            conjugate_of_activation=lambda v: torch.exp(v - 1),
            domain=(-math.inf, math.inf),
        ),
        Divergence(
            "reverse_kl",
            f=lambda u: -torch.log(u),
            f_prime=lambda u: -1 / u,
            activation=lambda v: -torch.exp(-v),
            conjugate=lambda t: -1 - torch.log(-t),
            # -1 - log(exp(-v)): no exp to overflow
            conjugate_of_activation=lambda v: v - 1,
            domain=(-math.inf, 0.0),
        ),
        Divergence(
            "pearson",
            f=lambda u: (u - 1).pow(2),
            f_prime=lambda u: 2 * (u - 1),
            activation=lambda v: v,
            conjugate=lambda t: 0.25 * t.pow(2) + t,
            conjugate_of_activation=lambda v: 0.25 * v.pow(2) + v,
            domain=(-math.inf, math.inf),
        ),
        Divergence(
            "neyman",
            f=lambda u: (1 - u).pow(2) / u,
            f_prime=lambda u: 1 - u.pow(-2),
            # Written increasing in v like every other row; the range (-inf, 1) is dom f*.
            activation=lambda v: -torch.expm1(-v),
            conjugate=lambda t: 2 - 2 * torch.sqrt(1 - t),
            conjugate_of_activation=lambda v: 2 - 2 * torch.exp(-0.5 * v),
            domain=(-math.inf, 1.0),
        ),
        Divergence(
            "squared_hellinger",
            f=lambda u: (torch.sqrt(u) - 1).pow(2),
            f_prime=lambda u: 1 - u.rsqrt(),
            activation=lambda v: -torch.expm1(-v),
            conjugate=lambda t: t / (1 - t),
            # (1 - e^-v) / e^-v: no division by a vanishing 1 - t
            conjugate_of_activation=lambda v: torch.expm1(v),
            domain=(-math.inf, 1.0),
        ),
        # This f gives D_f = 2 JS(P, Q), and the GAN row below 2 JS(P, Q) - log 4.
        Divergence(
            "js",
            f=lambda u: -(u + 1) * torch.log((1 + u) / 2) + _xlogx(u),
            f_prime=lambda u: torch.log(2 * u / (u + 1)),
            activation=lambda v: LOG2 - F.softplus(-v),
            # -log(2 - exp(t)) = -log 2 - log(1 - exp(t - log 2))
            conjugate=lambda t: -LOG2 - _log1mexp(t - LOG2),
            # 2 - exp(g(v)) = 2 sigmoid(-v)
            conjugate_of_activation=lambda v: F.softplus(v) - LOG2,
            domain=(-math.inf, LOG2),
        ),
        Divergence(
            "gan",
            f=lambda u: _xlogx(u) - _xlogx(u + 1),
            f_prime=lambda u: torch.log(u / (u + 1)),
            activation=lambda v: F.logsigmoid(v),  # -log(1 + exp(-v))
            conjugate=lambda t: -_log1mexp(t),  # -log(1 - exp(t))
            # 1 - exp(logsigmoid(v)) = sigmoid(-v)
            conjugate_of_activation=lambda v: F.softplus(v),
            domain=(-math.inf, 0.0),
        ),
    ]
}
