"""Mode metrics for 2-D Gaussian mixtures (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018).

A sample is *high quality* when it lies within `threshold` standard deviations of its nearest
centre. A mode is *captured* when at least `min_count` high-quality samples have it as their nearest
centre; with the papers' `min_count=1` a single sample suffices. Reverse KL is KL(q || uniform) of
the histogram q of high-quality samples over modes (0 for perfect balance, log M for full collapse).
"""

from __future__ import annotations

import math

import torch

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


def mode_metrics(samples: torch.Tensor, centers: torch.Tensor, std: float, threshold: float = 3.0,
                 min_count: int = 1) -> dict[str, float]:
    """Modes captured, high-quality fraction and reverse KL of samples (N, 2) from a mixture."""
    samples = samples.to(torch.float64)
    centers = centers.to(device=samples.device, dtype=torch.float64)
    dist, nearest = torch.cdist(samples, centers).min(1)
    good = dist <= threshold * std
    counts = torch.bincount(nearest[good], minlength=centers.shape[0]).double()
    num_good = float(counts.sum())
    if num_good > 0:
        q = counts / num_good
        # KL(q || 1/M) = sum q log(q M); xlogy makes empty modes contribute 0.
        reverse_kl = float(torch.special.xlogy(q, q * centers.shape[0]).sum())
    else:
        reverse_kl = float("nan")  # no high-quality sample: the histogram does not exist
    return {
        "modes": int((counts >= min_count).sum()),
        "high_quality": num_good / max(samples.shape[0], 1),
        "reverse_kl": reverse_kl,
        "num_modes": int(centers.shape[0]),
    }
