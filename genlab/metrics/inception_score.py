"""Inception Score (Salimans et al. 2016) from a classifier's class probabilities."""

from __future__ import annotations

import torch

from genlab.metrics.records import Entry, Scoring


def inception_score(probs: torch.Tensor, splits: int = 10) -> dict[str, float]:
    """Mean and std over splits of exp(E_x KL(p(y|x) || p(y))) for probabilities (N, K)."""
    if probs.dim() != 2:
        raise ValueError(f"probs must be (N, K), got shape {tuple(probs.shape)}")
    if not 1 <= splits <= probs.shape[0]:
        raise ValueError(f"splits={splits} needs 1 <= splits <= N={probs.shape[0]}")
    probs = probs.to(torch.float64)
    scores = []
    # tensor_split keeps every sample (near-equal parts); for N divisible by splits it is the
    # reference code's split exactly.
    for part in probs.tensor_split(splits):
        marginal = part.mean(0, keepdim=True)
        # xlogy makes 0 log 0 = 0, so exact one-hot predictions are fine.
        kl = torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)
        scores.append(float(kl.sum(1).mean().exp()))
    scores = torch.tensor(scores, dtype=torch.float64)
    return {"is": float(scores.mean()), "is_std": float(scores.std(correction=0))}


def score(s: Scoring) -> dict[str, Entry]:
    """The Inception Score of the set's class probabilities (and its std over splits)."""
    if s.probs is None:
        return {}
    splits = min(10, len(s.x))
    r = inception_score(s.probs, splits=splits)
    return {key: Entry(r[key], len(s.x), extra={"splits": splits}) for key in ("is", "is_std")}
