"""Evaluation maths on tensors: FID, KID, IS, PRDC, toy modes, memorisation, classes, likelihood.

The functions are imported on first use (PEP 562), so that what needs no tensor maths (the metric
table's names and directions, `genlab.metrics.table`) imports this package without torch: the CLI
checks a config's `trainer.objective` in a few milliseconds. `kid`, `prdc` and `inception_score` are
also the names of their modules, so they are imported from those: `from genlab.metrics.kid import kid`.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "class_coverage": "classes", "conditional_accuracy": "classes",
    "feature_stats": "frechet", "fid_from_features": "frechet", "fid_from_stats": "frechet",
    "imq_kernel": "kid", "mmd2": "kid", "mmd2_unbiased": "kid", "polynomial_kernel": "kid", "rbf_kernel": "kid",
    "bits_per_dim": "likelihood", "logmeanexp": "likelihood", "nats_from_bpd": "likelihood",
    "memorization_ratio": "memorization", "nearest_neighbours": "memorization",
    "mode_metrics": "toy",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
