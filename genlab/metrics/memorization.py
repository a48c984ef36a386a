"""Nearest-neighbour distances to the training set, to show copying as a number."""

from __future__ import annotations

import torch

from genlab.metrics._distance import as_float64
from genlab.metrics.records import Entry, Scoring


def nearest_neighbours(samples: torch.Tensor, train: torch.Tensor, chunk: int = 1024
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance (N,) and index (N,) of each sample's nearest training point."""
    samples, train = as_float64(samples), as_float64(train)
    n = samples.shape[0]
    best = torch.full((n,), float("inf"), dtype=torch.float64, device=samples.device)
    index = torch.zeros(n, dtype=torch.long, device=samples.device)
    # Both axes are chunked: a 10k sample set against 60k training images is never one matrix.
    for i in range(0, n, chunk):
        rows = slice(i, i + chunk)
        for j in range(0, train.shape[0], chunk):
            d, k = torch.cdist(samples[rows], train[j:j + chunk]).min(1)
            closer = d < best[rows]  # strict: ties keep the earlier training index
            best[rows] = torch.where(closer, d, best[rows])
            index[rows] = torch.where(closer, k + j, index[rows])
    # cdist's matrix-product path leaves ~1e-8 on exact copies; the direct difference gives 0.
    return (samples - train[index]).norm(dim=1), index


def memorization_ratio(samples: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                       chunk: int = 1024) -> dict[str, float]:
    """Samples' nearest-training distances measured against those of held-out test points.

    nn_ratio = mean NN distance of samples / mean NN distance of test points (about 1 for a model
    that generalises like fresh data, towards 0 for one that copies); closer_than_test_median is
    the fraction of samples nearer to train than the median test point (about 0.5, towards 1).
    """
    sample_d, _ = nearest_neighbours(samples, train, chunk)
    test_d, _ = nearest_neighbours(test, train, chunk)
    test_mean = float(test_d.mean())
    return {
        "nn_ratio": float(sample_d.mean()) / test_mean if test_mean > 0 else float("nan"),
        "closer_than_test_median": float((sample_d < test_d.quantile(0.5)).double().mean()),
        "sample_nn_mean": float(sample_d.mean()),
        "test_nn_mean": test_mean,
    }


def score(s: Scoring) -> dict[str, Entry]:
    """Nearest-training-neighbour ratios of the set (pixels or coordinates).

    The floor: held-out points are fresh data, so by construction about 1 and 0.5 (computed, not
    assumed): the first half of them is compared with the training set against the second half."""
    ev = s.ev
    m, train = min(len(s.x), ev.settings.memorization_samples), ev.data.train_x.cpu()
    if s.floor:
        m = min(len(s.x) // 2, ev.settings.memorization_samples)
        if ev.heldout != "test" or m < 2:
            return {}
        r = memorization_ratio(s.x[:m], train, s.x[m:2 * m])
        return {key: Entry(r[key], m, len(train)) for key in ("nn_ratio", "closer_than_test_median")}
    test = ev.data.test_x.cpu()
    mt = min(m, len(test))
    r = memorization_ratio(s.x[:m], train, test[:mt])
    space = "points" if ev.points else "pixels"
    return {key: Entry(r[key], m, len(train), space, {"num_test": mt}) for key in ("nn_ratio", "closer_than_test_median")}
