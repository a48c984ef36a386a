"""The adversarial loss table: each entry turns discriminator outputs into the two players' losses.

A new GAN variant is an entry here plus a YAML file. `real` and `fake` are the discriminator's raw
outputs (logits / critic values / f-GAN's V / EBGAN's energies), shape (N,) or (N, ...), e.g. a
PatchGAN map; every loss averages over all elements and returns a scalar. Both players see both
sides, so relativistic losses fit; a loss also says what its D is called, what to log and how to
draw D's output, so no code outside this table compares loss names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genlab.models.divergences import DIVERGENCES, Divergence

__all__ = ["DIVERGENCES", "LOSSES", "AdversarialLoss", "Divergence", "build_loss", "loss_problem"]


@dataclass
class NoParams:
    """The parameters of a loss that has none."""


class AdversarialLoss:
    """Base: `discriminator(real, fake)` and `generator(real, fake)` losses, both to be minimised."""

    #: the typed parameters (model.loss_params), checked when the config is validated
    Params = NoParams
    #: what D is called in logs and pictures: 'critic' when it estimates a distance
    role: str = "discriminator"
    #: whether generator() uses D(real), so the generator step needs a real batch
    generator_needs_real: bool = False
    #: the range D's output is drawn on (after `belief`), None to fit the data
    output_range: tuple[float, float] | None = None
    #: whether D's outputs are energies (low = real), as an auto-encoder discriminator produces
    reads_energies: bool = False

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator(self, real: torch.Tensor | None, fake: torch.Tensor) -> torch.Tensor:
        """G's loss; `real` is None unless generator_needs_real."""
        raise NotImplementedError

    def belief(self, d: torch.Tensor) -> torch.Tensor:
        """D's output as what it estimates (a probability for logit losses), for logs and plots."""
        return d

    def diagnostics(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the discriminator believes about a real and a fake batch (detached outputs)."""
        return {"D_x": self.belief(real).mean(), "D_G_z": self.belief(fake).mean()}


class NonSaturating(AdversarialLoss):
    """Goodfellow et al. 2014 with the generator maximising log D(G(z)) (the 'non-saturating' trick)."""

    output_range = (0.0, 1.0)

    def discriminator(self, real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def generator(self, real, fake):
        return F.softplus(-fake).mean()

    def belief(self, d):
        return torch.sigmoid(d)


class Minimax(NonSaturating):
    """The original minimax game: the generator minimises log(1 - D(G(z))), which saturates early on."""

    def generator(self, real, fake):
        return -F.softplus(fake).mean()


class Wasserstein(AdversarialLoss):
    """WGAN (Arjovsky et al. 2017): the critic maximises E[f(x)] - E[f(G(z))]."""

    role = "critic"

    def discriminator(self, real, fake):
        return fake.mean() - real.mean()

    def generator(self, real, fake):
        return -fake.mean()

    def diagnostics(self, real, fake):
        return {"wasserstein": real.mean() - fake.mean(), "critic_real": real.mean(), "critic_fake": fake.mean()}


@dataclass
class LeastSquaresParams:
    a: float = 0.0
    b: float = 1.0
    c: float = 1.0


class LeastSquares(AdversarialLoss):
    """LSGAN (Mao et al. 2017): D pulls real outputs to b and fake to a, G pulls fake outputs to c."""

    Params = LeastSquaresParams

    def __init__(self, a: float = 0.0, b: float = 1.0, c: float = 1.0):
        # The paper's two codings: 0-1 (a=0, b=c=1, used in its experiments) and a=-1, b=1, c=0,
        # for which G minimises the Pearson chi^2 divergence (Theorem 1).
        self.a, self.b, self.c = float(a), float(b), float(c)

    def discriminator(self, real, fake):
        return 0.5 * (real - self.b).pow(2).mean() + 0.5 * (fake - self.a).pow(2).mean()

    def generator(self, real, fake):
        return 0.5 * (fake - self.c).pow(2).mean()


class Hinge(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017, Geometric GAN; Miyato et al. 2018, SNGAN)."""

    def discriminator(self, real, fake):
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def generator(self, real, fake):
        return -fake.mean()


class RelativisticAverage(AdversarialLoss):
    """RaGAN (Jolicoeur-Martineau 2019), the standard-GAN form RaSGAN: D estimates how much more
    realistic a real sample is than the average fake, sigmoid(C(x_r) - E C(x_f)), and vice versa;
    G plays the same game with the roles swapped, so it gets a gradient from D(real) too."""

    generator_needs_real = True

    @staticmethod
    def _relative(real, fake):
        return real - fake.mean(), fake - real.mean()

    def discriminator(self, real, fake):
        r, f = self._relative(real, fake)
        return F.softplus(-r).mean() + F.softplus(f).mean()

    def generator(self, real, fake):
        r, f = self._relative(real.detach(), fake)
        return F.softplus(r).mean() + F.softplus(-f).mean()

    def diagnostics(self, real, fake):
        r, f = self._relative(real, fake)
        return {"D_x": torch.sigmoid(r).mean(), "D_G_z": torch.sigmoid(f).mean(),
                "critic_real": real.mean(), "critic_fake": fake.mean()}


# ---------------------------------------------------------------------------------------------------
# f-GAN (Nowozin, Cseke & Tomioka 2016): the divergences live in divergences.py


@dataclass
class FGANParams:
    divergence: str = "gan"
    generator_loss: str = "alternative"


class FGAN(AdversarialLoss):
    """f-GAN (Nowozin et al. 2016): variational divergence minimisation for any f in DIVERGENCES."""

    Params = FGANParams

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

    def generator(self, real, fake):
        d = self.divergence
        if self.generator_loss == "alternative":
            return -d.activation(fake).mean()
        return -d.conjugate_of_activation(fake).mean()


# ---------------------------------------------------------------------------------------------------
# EBGAN (Zhao, Mathieu & LeCun 2017)


@dataclass
class EBGANParams:
    margin: float  # no default: the paper tunes m per dataset and architecture


class EBGAN(AdversarialLoss):
    """EBGAN (Zhao et al. 2017) on energies D(x) >= 0 (an auto-encoder's reconstruction error)."""

    Params = EBGANParams
    reads_energies = True

    def __init__(self, margin: float):
        # No default: the paper tunes m per dataset and architecture.
        self.margin = float(margin)

    def discriminator(self, real, fake):
        # Fake energies above the margin no longer push D, so D cannot win by raising them forever.
        return real.mean() + F.relu(self.margin - fake).mean()

    def generator(self, real, fake):
        return fake.mean()

    def diagnostics(self, real, fake):
        return {"energy_real": real.mean(), "energy_fake": fake.mean(),
                "fakes_below_margin": (fake < self.margin).float().mean()}


class BEGAN(AdversarialLoss):
    """BEGAN (Berthelot et al. 2017) on auto-encoder energies: D minimises E[L(x)] - k E[L(G(z))], G E[L(G(z))].

    k is the equilibrium weight the BEGAN model controls (k_t); 1 is the plain energy game.
    """

    reads_energies = True

    def discriminator(self, real, fake, k=1.0):
        return real.mean() - k * fake.mean()

    def generator(self, real, fake):
        return fake.mean()

    def diagnostics(self, real, fake):
        return {"energy_real": real.mean(), "energy_fake": fake.mean()}


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
    "ragan": RelativisticAverage,
    "fgan": FGAN,
    "ebgan": EBGAN,
    "began": BEGAN,
}


def typed_params(name: str, params) -> dict:
    """loss_params merged into the loss's Params dataclass: unknown keys and wrong types raise ValueError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        typed = OmegaConf.merge(OmegaConf.structured(LOSSES[name].Params), params or {})
        return OmegaConf.to_container(typed, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"loss_params.{key}: {first}" if key else f"loss_params: {first}") from None


def loss_problem(name: str, params) -> str | None:
    """Why loss `name` cannot be built from these parameters (None if it can); cheap, needs no data."""
    if name not in LOSSES:
        return f"model.loss={name} is unknown; choose one of {', '.join(LOSSES)}"
    try:
        build_loss(name, **(params or {}))
    except (ValueError, TypeError) as e:
        msg = str(e)
        return f"model.{msg} (loss {name})" if msg.startswith("loss_params") else f"model.loss_params ({name}): {msg}"
    return None


def build_loss(name: str, **kwargs) -> AdversarialLoss:
    """The loss named `name` (a key of LOSSES) with its typed parameters."""
    return LOSSES[name](**typed_params(name, kwargs))
