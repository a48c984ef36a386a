"""Intra-class FID (Miyato & Koyama 2018): the FID of each class's samples against that class's real
data, averaged over classes, so a conditional model that draws the right marginal from the wrong
labels is not rewarded."""

from __future__ import annotations

import torch

from genlab.metrics.frechet import feature_stats, fid_from_stats


def intra_class_fid(feats: torch.Tensor, labels: torch.Tensor, ref_feats: torch.Tensor, ref_labels: torch.Tensor,
                    num_classes: int) -> dict:
    """{'intra_fid': mean over classes, 'per_class': [FID of class k]} from features and their labels.

    Every class needs at least 2 samples and 2 reference features (a covariance); ValueError otherwise.
    """
    per_class = []
    for k in range(int(num_classes)):
        f, r = feats[labels == k], ref_feats[ref_labels == k]
        if len(f) < 2 or len(r) < 2:
            raise ValueError(f"intra-class FID needs at least 2 samples and 2 real images of every class; "
                             f"class {k} has {len(f)} and {len(r)}")
        per_class.append(fid_from_stats(*feature_stats(f), *feature_stats(r)))
    return {"intra_fid": sum(per_class) / len(per_class), "per_class": per_class}
