"""Likelihood bookkeeping, written once for every likelihood model: nats <-> bits per dimension,
log-mean-exp, and the 8-bit <-> [-1, 1] conversion with uniform dequantisation.

Why the dequantisation constants: with levels in 0 .. 2^n_bits - 1 and y = (levels + u) / 2^n_bits,
u ~ U[0, 1)^D, y has density p(y) on [0, 1)^D and v = 2^n_bits * y has density p(y) / 2^(n_bits*D).
Jensen's inequality over u gives the discrete bound log P(levels) >= E_u[log p(y) - D n_bits log 2],
so a model uniform on [0, 1)^D (log p(y) = 0) scores exactly n_bits bits/dim.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from genlab.metrics.records import Entry, Scoring
from genlab.pixels import PIXEL_BIN, from_levels, to_levels
from genlab.progress import duration

__all__ = ["CostEstimate", "LOG2", "PIXEL_BIN", "bits_per_dim", "cost_line", "dequantization_nats", "dequantize",
           "dequantize_pixels", "dequantized_bits_per_dim", "from_levels", "logmeanexp", "nats_from_bpd",
           "nats_to_bits_per_dim", "to_levels"]

LOG2 = math.log(2)


def nats_to_bits_per_dim(nll_nats, num_dims: int):
    """Bits per dimension from an NLL in nats (per example; a float or a tensor, kept as it is)."""
    return nll_nats / (num_dims * LOG2)


def bits_per_dim(nll_nats_per_example, num_dims: int) -> float:
    """Bits per dimension from an NLL in nats per example (a float, or a tensor averaged first)."""
    nll = float(torch.as_tensor(nll_nats_per_example, dtype=torch.float64).mean())
    return nats_to_bits_per_dim(nll, num_dims)


def nats_from_bpd(bpd: float, num_dims: int) -> float:
    """NLL in nats per example from bits per dimension."""
    return float(bpd) * num_dims * LOG2


def logmeanexp(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """log(mean(exp(x))) computed stably, over dim or over all elements (e.g. an IWAE bound)."""
    if dim is None:
        return torch.logsumexp(x.reshape(-1), 0) - math.log(x.numel())
    return torch.logsumexp(x, dim, keepdim=keepdim) - math.log(x.shape[dim])


def dequantize(x: torch.Tensor, n_bits: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation of integer levels x in 0..2^n_bits-1: y = (x + u) / 2^n_bits in [0, 1)."""
    if not x.is_floating_point():
        x = x.float()
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    # In float32, 255 + u rounds up to 256 for u > 1 - 2^-17; keep y inside its bin and below 1.
    return ((x + u) / 2**n_bits).clamp(max=1 - torch.finfo(x.dtype).eps / 2)


def dequantize_pixels(x: torch.Tensor) -> torch.Tensor:
    """8-bit images in [-1, 1] plus uniform noise inside each pixel's bin of width PIXEL_BIN (same scale)."""
    levels = to_levels(x, 8)
    return from_levels(levels + torch.rand_like(levels), levels.dtype)


def dequantization_nats(num_dims: int, n_bits: int = 8) -> float:
    """D * n_bits * log 2: add to -log p(y) of the dequantised y in [0, 1)^D for the discrete NLL bound."""
    return num_dims * n_bits * LOG2


def dequantized_bits_per_dim(log_prob_y: torch.Tensor, num_dims: int, n_bits: int = 8) -> torch.Tensor:
    """Bits/dim of the discrete data from log p(y) of its dequantised version y in [0, 1)^D (nats)."""
    log_prob_levels = log_prob_y - dequantization_nats(num_dims, n_bits)
    return -log_prob_levels / (num_dims * LOG2)


log = logging.getLogger("genlab")


def cost_line(total: int, k: int | None, seconds_per_image: float, device: str, subset: int = 1000) -> str:
    """The estimate said before a long NLL evaluation: its cost and a smaller eval.nll_images's."""
    with_k = f" with k={k}" if k else ""
    line = f"NLL on {total:,} test images{with_k}: {duration(total * seconds_per_image)} on this {device}"
    if total > subset:
        line += f"; eval.nll_images={subset} for {duration(subset * seconds_per_image)}"
    return line


class CostEstimate:
    """The NLL evaluation's on_batch callback: says the whole evaluation's cost once its first batch is timed."""

    def __init__(self, total: int, k: int | None, device: str):
        self.total, self.k, self.device = total, k, device
        self.started = time.perf_counter()
        self.estimate: str | None = None

    def __call__(self, done: int) -> None:
        if self.estimate is None and done < self.total:
            per = (time.perf_counter() - self.started) / max(done, 1)
            self.estimate = cost_line(self.total, self.k, per, self.device)
            log.info(self.estimate)


def score(s: Scoring) -> dict[str, Entry]:
    """The model's own held-out NLL (nats, bits/dim, ELBO terms), with its protocol kept beside the numbers."""
    data, cfg = s.ev.data, s.ev.settings
    limit = min(cfg.nll_images or len(data.raw("test")), len(data.raw("test")))
    k = (cfg.nll_k or s.model.eval_k()) if s.model.eval_k() is not None else None
    dev = next(s.model.parameters()).device
    estimate = CostEstimate(limit, k, "GPU" if dev.type == "cuda" else dev.type.upper())
    res = s.model.evaluate(data, limit=limit, k=cfg.nll_k, on_batch=estimate)
    # Likelihood models also return their protocol (binarisation, decoder, k, counts: anything but a float).
    protocol = {k: v for k, v in res.items() if not isinstance(v, float)}
    n = int(res.get("eval_images", len(data.raw("test"))))
    return {k: Entry(float(v), n, None, None, {"split": "test", **protocol}) for k, v in res.items() if k not in protocol}
