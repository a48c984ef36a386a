"""Likelihood bookkeeping: negative log-likelihood in nats per example <-> bits per dimension."""

from __future__ import annotations

import math

import torch


def bits_per_dim(nll_nats_per_example, num_dims: int) -> float:
    """Bits per dimension from an NLL in nats per example (a float, or a tensor averaged first)."""
    nll = float(torch.as_tensor(nll_nats_per_example, dtype=torch.float64).mean())
    return nll / (num_dims * math.log(2))


def nats_from_bpd(bpd: float, num_dims: int) -> float:
    """NLL in nats per example from bits per dimension."""
    return float(bpd) * num_dims * math.log(2)


def logmeanexp(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """log(mean(exp(x))) computed stably, over dim or over all elements (e.g. an IWAE bound)."""
    if dim is None:
        return torch.logsumexp(x.reshape(-1), 0) - math.log(x.numel())
    return torch.logsumexp(x, dim, keepdim=keepdim) - math.log(x.shape[dim])
