"""Chunked Euclidean distances, so that 10k x 10k (or 10k x 60k) sets fit in memory."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def as_float64(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) tensor flattened to (N, D) float64, on its own device."""
    return x.reshape(x.shape[0], -1).to(torch.float64)


def distance_blocks(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024
                    ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (row offset, cdist(a[rows], b)) for consecutive row chunks of a."""
    for start in range(0, a.shape[0], chunk):
        yield start, torch.cdist(a[start:start + chunk], b)


def kth_neighbour_distance(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance (N,) from each row of x to its k-th nearest other row of x (self excluded)."""
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k={k} needs 1 <= k < number of points ({x.shape[0]})")
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start, d in distance_blocks(x, x, chunk):
        # The k+1 smallest include the point itself at distance 0, as in the prdc package.
        radii[start:start + d.shape[0]] = d.topk(k + 1, dim=1, largest=False).values[:, -1]
    return radii
