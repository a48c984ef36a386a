"""The adversarial loss table: each entry turns discriminator outputs into the two players' losses.

A new GAN variant is an entry here plus a YAML file. `real` and `fake` are the discriminator's raw
outputs (logits / critic values / f-GAN's V / EBGAN's energies), shape (N,) or (N, ...), e.g. a
PatchGAN map; every loss averages over all elements and returns a scalar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Fn = Callable[[torch.Tensor], torch.Tensor]
LOG2 = math.log(2.0)


class AdversarialLoss:
    """Base: `discriminator(real, fake)` and `generator(fake)` losses, both to be minimised."""

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NonSaturating(AdversarialLoss):
    """Goodfellow et al. 2014 with the generator maximising log D(G(z)) (the 'non-saturating' trick)."""

    def discriminator(self, real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def generator(self, fake):
        return F.softplus(-fake).mean()


class Minimax(NonSaturating):
    """The original minimax game: the generator minimises log(1 - D(G(z))), which saturates early on."""

    def generator(self, fake):
        return -F.softplus(fake).mean()


class Wasserstein(AdversarialLoss):
    """WGAN (Arjovsky et al. 2017): the critic maximises E[f(x)] - E[f(G(z))]."""

    def discriminator(self, real, fake):
        return fake.mean() - real.mean()

    def generator(self, fake):
        return -fake.mean()


class LeastSquares(AdversarialLoss):
    """LSGAN (Mao et al. 2017): D pulls real outputs to b and fake to a, G pulls fake outputs to c."""

    def __init__(self, a: float = 0.0, b: float = 1.0, c: float = 1.0):
        # The paper's two codings: 0-1 (a=0, b=c=1, used in its experiments) and a=-1, b=1, c=0,
        # for which G minimises the Pearson chi^2 divergence (Theorem 1).
        self.a, self.b, self.c = float(a), float(b), float(c)

    def discriminator(self, real, fake):
        return 0.5 * (real - self.b).pow(2).mean() + 0.5 * (fake - self.a).pow(2).mean()

    def generator(self, fake):
        return 0.5 * (fake - self.c).pow(2).mean()


class Hinge(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017, Geometric GAN; Miyato et al. 2018, SNGAN)."""

    def discriminator(self, real, fake):
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def generator(self, fake):
        return -fake.mean()


# ---------------------------------------------------------------------------------------------------
# f-GAN (Nowozin, Cseke & Tomioka 2016)


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


class FGAN(AdversarialLoss):
    """f-GAN (Nowozin et al. 2016): variational divergence minimisation for any f in DIVERGENCES."""

    def __init__(self, divergence: str = "gan", generator_loss: str = "alternative"):
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown f-divergence {divergence!r}; choose one of {sorted(DIVERGENCES)}")
        if generator_loss not in ("alternative", "saturating"):
            raise ValueError(f"generator_loss must be 'alternative' or 'saturating', not {generator_loss!r}")
        self.divergence = DIVERGENCES[divergence]
        # Section 3.2: maximising E_Q[g_f(V)] speeds up training, as the -log D trick does for GANs;
        # the paper uses it in its experiments.
        self.generator_loss = generator_loss

    def discriminator(self, real, fake):
        d = self.divergence
        # T = g_f(V) maximises E_P[T] - E_Q[f*(T)], a lower bound on D_f(P || Q).
        return d.conjugate_of_activation(fake).mean() - d.activation(real).mean()

    def generator(self, fake):
        d = self.divergence
        if self.generator_loss == "alternative":
            return -d.activation(fake).mean()
        return -d.conjugate_of_activation(fake).mean()


# ---------------------------------------------------------------------------------------------------
# EBGAN (Zhao, Mathieu & LeCun 2017)


class EBGAN(AdversarialLoss):
    """EBGAN (Zhao et al. 2017) on energies D(x) >= 0 (an auto-encoder's reconstruction error)."""

    def __init__(self, margin: float):
        # No default: the paper tunes m per dataset and architecture.
        self.margin = float(margin)

    def discriminator(self, real, fake):
        # Fake energies above the margin no longer push D, so D cannot win by raising them forever.
        return real.mean() + F.relu(self.margin - fake).mean()

    def generator(self, fake):
        return fake.mean()


def pulling_away_term(embeddings: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """EBGAN's PT regulariser: mean over pairs i != j of the squared cosine of embeddings (N, d)."""
    n = embeddings.shape[0]
    if n < 2:
        raise ValueError("pulling_away_term needs at least 2 embeddings")
    s = embeddings.flatten(1)
    s = s / s.norm(dim=1, keepdim=True).clamp_min(eps)
    cos2 = (s @ s.t()).pow(2)
    # Remove the diagonal (each cos^2 of a vector with itself is 1) before averaging.
    return (cos2.sum() - cos2.diagonal().sum()) / (n * (n - 1))


LOSSES = {
    "ns": NonSaturating,
    "minimax": Minimax,
    "wasserstein": Wasserstein,
    "ls": LeastSquares,
    "hinge": Hinge,
    "fgan": FGAN,
    "ebgan": EBGAN,
}


def build_loss(name: str, **kwargs) -> AdversarialLoss:
    """The loss named `name` (a key of LOSSES) with its parameters."""
    return LOSSES[name](**kwargs)
