"""Changes to what the generator minimises, shared by every GAN: feature matching and top-k training.

- Feature matching (Salimans et al. 2016, "Improved Techniques for Training GANs"): G also matches the
  mean of D's penultimate features on real data, ||E f(x) - E f(G(z))||^2, a target that does not
  move with D's last layer, weighted by feature_matching_weight.
- Top-k (Sinha et al. 2020, "Top-k Training of GANs"): G's adversarial loss is taken over only the k
  fakes D finds most realistic; k starts at the batch size and shrinks by topk_gamma every topk_every
  trainer steps (the paper: 0.99 per epoch) down to a fraction topk of the batch (the paper's nu).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class GeneratorObjective:
    """The generator-objective options every GAN takes (a Config mixin)."""

    feature_matching_weight: float = 0.0
    topk: Optional[float] = None  # the smallest fraction of a batch of fakes G learns from (nu); null = all
    topk_gamma: float = 0.99
    topk_every: int = 1000


def objective_problem(cfg) -> str | None:
    """Why the generator-objective settings cannot work (None if they can)."""
    if cfg.feature_matching_weight < 0:
        return f"model.feature_matching_weight must be >= 0, got {cfg.feature_matching_weight}"
    if cfg.topk is not None and not 0 < cfg.topk <= 1:
        return f"model.topk must be in (0, 1] (the smallest fraction of fakes kept) or null, got {cfg.topk}"
    if not 0 < cfg.topk_gamma <= 1 or cfg.topk_every < 1:
        return f"model.topk_gamma must be in (0, 1] and model.topk_every >= 1, got {cfg.topk_gamma}, {cfg.topk_every}"
    return None


def feature_matching(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """||mean real features - mean fake features||^2; the real side is a constant target."""
    return (real_features.detach().float().mean(0) - fake_features.float().mean(0)).pow(2).sum()


def topk_count(n: int, step: int, nu: float, gamma: float, every: int) -> int:
    """k at trainer step `step`: max(nu * n, gamma^(step // every) * n), at least 1."""
    return max(1, math.ceil(n * max(nu, gamma ** (step // every))))


def top_k(scores: torch.Tensor, k: int, lowest: bool = False) -> torch.Tensor:
    """The indices of the k samples judged most real: the highest scores (the lowest for energies).

    A score map per sample (a PatchGAN's) ranks by its mean.
    """
    s = scores.detach().float().reshape(scores.shape[0], -1).mean(1)
    return torch.topk(s, k, largest=not lowest).indices
