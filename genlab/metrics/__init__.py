"""Evaluation maths on tensors: FID, KID, IS, PRDC, toy modes, memorisation, classes, likelihood."""

from genlab.metrics.classes import class_coverage, conditional_accuracy
from genlab.metrics.frechet import feature_stats, fid_from_features, fid_from_stats
from genlab.metrics.inception_score import inception_score
from genlab.metrics.kid import imq_kernel, kid, mmd2, mmd2_unbiased, polynomial_kernel, rbf_kernel
from genlab.metrics.likelihood import bits_per_dim, logmeanexp, nats_from_bpd
from genlab.metrics.memorization import memorization_ratio, nearest_neighbours
from genlab.metrics.prdc import prdc
from genlab.metrics.toy import mode_metrics

__all__ = [
    "bits_per_dim", "class_coverage", "conditional_accuracy", "feature_stats", "fid_from_features",
    "fid_from_stats", "inception_score", "kid", "logmeanexp", "memorization_ratio", "mmd2", "mmd2_unbiased", "imq_kernel", "rbf_kernel",
    "nats_from_bpd", "nearest_neighbours", "polynomial_kernel", "prdc", "mode_metrics",
]
