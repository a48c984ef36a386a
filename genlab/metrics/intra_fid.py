"""Intra-class FID (Miyato & Koyama 2018): the FID of each class's samples against that class's real
data, averaged over classes, so a conditional model that draws the right marginal from the wrong
labels is not rewarded."""

from __future__ import annotations

import torch

from genlab.metrics.frechet import feature_stats, fid_from_stats
from genlab.metrics.records import Entry, Scoring


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


def score(s: Scoring) -> dict[str, Entry]:
    """Intra-class FID of the set (labels: the classes samples were asked for, or the real labels of the
    floor's held-out images) against the reference split's images of each class."""
    if s.labels is None:
        return {}
    ev, k = s.ev, int(s.ev.data.num_classes)
    ref_labels = ev._split_y(ev.split)[:len(s.ref["feats"])].cpu()
    r = intra_class_fid(s.feats, s.labels.cpu(), s.ref["feats"], ref_labels, k)
    return {"intra_fid": Entry(r["intra_fid"], len(s.x), len(ref_labels),
                               extra={"num_classes": k, "per_class": [round(v, 4) for v in r["per_class"]]})}
