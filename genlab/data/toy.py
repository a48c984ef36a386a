"""Toy 2-D Gaussian mixtures with the geometry of the PacGAN/VEEGAN benchmarks."""

from __future__ import annotations

import math

import torch

from genlab.data.base import Data, Spec
from genlab.errors import GenlabError

# The canonical geometries of the PacGAN 2D-ring and 2D-grid experiments.
RING8_STD = 0.01
GRID25_STD = 0.05


def ring8_centers(radius: float = 1.0) -> torch.Tensor:
    """Centres (8, 2) of the 2D-ring: 8 equally spaced on a circle (use with RING8_STD = 0.01)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return torch.stack([angles.cos(), angles.sin()], 1).mul(radius).float()


def grid25_centers() -> torch.Tensor:
    """Centres (25, 2) of the 2D-grid {-4, -2, 0, 2, 4}^2 (use with GRID25_STD = 0.05)."""
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(axis, axis)


# name -> (centres, std, plot half-width)
MIXTURES = {
    "ring8": (ring8_centers, RING8_STD, 1.5),
    "grid25": (grid25_centers, GRID25_STD, 5.5),
}


def sample_mixture(name: str, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (float32) and their mode index from the uniform mixture `name`."""
    centers_fn, std, _ = MIXTURES[name]
    centers = centers_fn().double()
    k = torch.randint(len(centers), (n,), generator=generator)
    x = centers[k] + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x.float(), k


def mixture_log_density(name: str, x: torch.Tensor) -> torch.Tensor:
    """log p(x) per point (N,) of the uniform mixture `name`, in nats: the known target density."""
    centers_fn, std, _ = MIXTURES[name]
    centers = centers_fn().to(x.device, x.dtype)
    sq = (x.unsqueeze(1) - centers).pow(2).sum(-1) / std**2
    log_comp = -0.5 * sq - x.shape[1] * (math.log(std) + 0.5 * math.log(2 * math.pi))
    return torch.logsumexp(log_comp, 1) - math.log(len(centers))


def mixture(cfg, seed: int = 0) -> Data:
    """A train/test split of n_train/n_test points from the mixture cfg.name."""
    if cfg.name not in MIXTURES:
        raise GenlabError(f"unknown toy mixture '{cfg.name}'; choose one of {', '.join(MIXTURES)}")
    g = torch.Generator().manual_seed(10_000 + seed)
    xtr, ytr = sample_mixture(cfg.name, cfg.n_train, g)
    xte, yte = sample_mixture(cfg.name, cfg.n_test, g)
    centers_fn, std, extent = MIXTURES[cfg.name]
    return Data(cfg.name, "points", xtr, ytr, xte, yte, num_classes=None, seed=seed,
                centers=centers_fn().float(), std=std, extent=extent)


mixture.sized = True  # dataset.n_train / n_test examples are generated
mixture.spec = lambda cfg: Spec("points", (2,), None)
mixture.check = lambda cfg: None  # generated: nothing to find on disk


# toy1d: the real data is N(TOY1D_MEAN, TOY1D_STD^2), far from where a freshly initialised generator
# puts its mass (near 0), so the two distributions do not overlap at the start of training.
TOY1D_MEAN, TOY1D_STD, TOY1D_EXTENT = 3.0, 0.2, 5.0


def toy1d(cfg, seed: int = 0) -> Data:
    """1-D points (N, 1) from N(3, 0.2^2): the setting where a saturating discriminator stops teaching."""
    mean = float(cfg.extra.get("mean", TOY1D_MEAN)) if cfg.extra else TOY1D_MEAN
    std = float(cfg.extra.get("std", TOY1D_STD)) if cfg.extra else TOY1D_STD
    g = torch.Generator().manual_seed(10_000 + seed)
    xtr = (mean + std * torch.randn(cfg.n_train, 1, generator=g, dtype=torch.float64)).float()
    xte = (mean + std * torch.randn(cfg.n_test, 1, generator=g, dtype=torch.float64)).float()
    return Data("toy1d", "points", xtr, None, xte, None, num_classes=None, seed=seed,
                centers=torch.tensor([[mean]]), std=std, extent=max(TOY1D_EXTENT, abs(mean) + 2))


toy1d.sized = True  # dataset.n_train / n_test examples are generated
toy1d.spec = lambda cfg: Spec("points", (1,), None)
toy1d.check = lambda cfg: None
