"""Kernel Inception Distance: unbiased MMD^2 with a polynomial kernel (Binkowski et al. 2018). The kernels
and the MMD estimator are also the WAE's penalty between aggregate posterior and prior (models/autoencoder.py)."""

from __future__ import annotations

import torch

from genlab.metrics.records import Entry, Scoring


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3,
                      gamma: float | None = None, coef: float = 1.0) -> torch.Tensor:
    """k(x, y) = (gamma x.y + coef)^degree with gamma = 1/D by default, as a (N, M) matrix."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (x @ y.T * gamma + coef) ** degree


def _sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ y.T + y.pow(2).sum(1)).clamp_min(0)


def rbf_kernel(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """k(x, y) = exp(-||x - y||^2 / (2 h^2)) as a (N, M) matrix."""
    return torch.exp(-_sq_dist(x, y) / (2 * bandwidth**2))


def imq_kernel(x: torch.Tensor, y: torch.Tensor, scales=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
               base: float | None = None) -> torch.Tensor:
    """The WAE's inverse multiquadratic kernel sum_s C_s / (C_s + ||x - y||^2), C_s = s * base with base
    2 D (Tolstikhin et al. 2018: C = 2 D sigma^2 for a N(0, sigma^2 I) prior, summed over scales)."""
    c = 2.0 * x.shape[1] if base is None else base
    d = _sq_dist(x, y)
    return sum(s * c / (s * c + d) for s in scales)


def mmd2_unbiased_tensor(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 from the kernel matrices of two samples (diagonals of k_xx, k_yy dropped), differentiable."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2.0 * k_xy.mean()


def mmd2_unbiased(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> float:
    """Unbiased MMD^2 from the kernel matrices of two samples, as a float."""
    return float(mmd2_unbiased_tensor(k_xx, k_yy, k_xy))


def mmd2(x: torch.Tensor, y: torch.Tensor, kernel) -> torch.Tensor:
    """Unbiased MMD^2 between samples x (N, D) and y (M, D) under kernel(a, b) -> (len(a), len(b))."""
    return mmd2_unbiased_tensor(kernel(x, x), kernel(y, y), kernel(x, y))


def kid(f1: torch.Tensor, f2: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        degree: int = 3, gamma: float | None = None, coef: float = 1.0,
        generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean and std over random subsets of the unbiased MMD^2 between features (N1, D), (N2, D)."""
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 feature vectors in each set")
    if generator is None:
        # A private, seeded generator: evaluation must not consume the global RNG stream (a
        # resumed run would then diverge) and the same features must give the same KID.
        generator = torch.Generator().manual_seed(0)
    f1, f2 = f1.to(torch.float64), f2.to(torch.float64)
    values = []
    for _ in range(subsets):
        # Indices drawn on the CPU generator, then moved, so CUDA features work with any generator.
        x = f1[torch.randperm(f1.shape[0], generator=generator)[:m].to(f1.device)]
        y = f2[torch.randperm(f2.shape[0], generator=generator)[:m].to(f2.device)]
        values.append(mmd2_unbiased(polynomial_kernel(x, x, degree, gamma, coef),
                                    polynomial_kernel(y, y, degree, gamma, coef),
                                    polynomial_kernel(x, y, degree, gamma, coef)))
    values = torch.tensor(values, dtype=torch.float64)
    # Population std over subsets, as in the reference implementations (torch-fidelity, clean-fid).
    return {"kid": float(values.mean()), "kid_std": float(values.std(correction=0))}


def score(s: Scoring) -> dict[str, Entry]:
    """KID (and its std over subsets) of the set's features against the reference split's."""
    cfg, n, nref = s.ev.settings, len(s.x), len(s.ref["feats"])
    k = kid(s.feats, s.ref["feats"], subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size,
            generator=torch.Generator().manual_seed(cfg.seed))
    extra = {"subsets": cfg.kid_subsets, "subset_size": min(cfg.kid_subset_size, n, nref)}
    return {key: Entry(k[key], n, nref, extra=dict(extra)) for key in ("kid", "kid_std")}
