"""Fréchet distance between Gaussians fitted to features (FID, Heusel et al. 2017)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from genlab.metrics.records import Entry, Scoring

# A PSD product S1 @ S2 has a real square root; a Schur result further than this (relative
# Frobenius residual) from squaring back to the product means sqrtm struggled with a (near-)
# singular product and is retried with eps*I added to both covariances.
_SQRTM_RESIDUAL_TOL = 1e-5
# As in pytorch-fid / TTUR: an imaginary diagonal above this is a real failure, not round-off.
_IMAG_ATOL = 1e-3


def feature_stats(f: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64 on f's device."""
    n = f.shape[0]
    if n < 2:
        raise ValueError(f"feature_stats needs at least 2 feature vectors, got {n}")
    f = f.reshape(n, -1)
    # Accumulate chunk by chunk so a 50k x 2048 float32 set never exists as a float64 copy.
    mu = sum(c.to(torch.float64).sum(0) for c in f.split(chunk)) / n
    sigma = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=f.device)
    for c in f.split(chunk):
        c = c.to(torch.float64) - mu
        sigma += c.T @ c
    return mu, sigma / (n - 1)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy.linalg import sqrtm  # imported here: scipy.linalg is slow to import for the CLI

    with warnings.catch_warnings():
        # scipy warns on singular input; we judge the result by its residual instead.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        return sqrtm(a)


def _is_good_sqrt(root: np.ndarray, a: np.ndarray) -> bool:
    if not np.isfinite(root).all():
        return False
    scale = max(np.linalg.norm(a), np.finfo(np.float64).tiny)
    return np.linalg.norm(root @ root - a) / scale <= _SQRTM_RESIDUAL_TOL


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^1/2) for PSD S1, S2 through symmetric eigendecompositions: it equals tr((A S2 A)^1/2)
    with A = S1^1/2, whose eigenvalues are real and >= 0 (rounding's negative ones are clipped)."""
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = a @ s2 @ a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def fid_from_stats(mu1, s1, mu2, s2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) for Gaussian statistics (torch or numpy)."""
    mu1, mu2 = _to_numpy(mu1).ravel(), _to_numpy(mu2).ravel()
    s1, s2 = np.atleast_2d(_to_numpy(s1)), np.atleast_2d(_to_numpy(s2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {s1.shape} vs {s2.shape}")
    for name, a in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise ValueError(f"the feature statistics ({name}) are not finite; check the samples for NaN or inf")
    product = s1 @ s2
    diff = mu1 - mu2
    try:
        covmean = _sqrtm(product)
    except np.linalg.LinAlgError:  # scipy's Schur-based sqrtm fails on some near-singular products
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    if not _is_good_sqrt(covmean, product):
        offset = np.eye(s1.shape[0]) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("sqrtm(S1 S2) is not finite even with eps*I added; check the features")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=_IMAG_ATOL):
            raise ValueError(f"sqrtm(S1 S2) has a large imaginary component "
                             f"({np.abs(covmean.imag).max():.3g}); the covariances are not PSD")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_features(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """FID between two feature sets (N1, D) and (N2, D)."""
    return fid_from_stats(*feature_stats(f1), *feature_stats(f2))


def score(s: Scoring) -> dict[str, Entry]:
    """FID of the set's features against the reference split's (the metric table's fid row)."""
    return {"fid": Entry(fid_from_stats(*feature_stats(s.feats), *s.ref["stats"]), len(s.x), len(s.ref["feats"]))}
