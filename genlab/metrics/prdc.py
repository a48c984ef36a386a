"""Precision, recall, density and coverage of k-NN manifolds (Naeem et al. 2020).

Definitions follow the reference `prdc` package: a real point's radius is the distance to its k-th
nearest other real point; fake j is "inside" real ball i when d(i, j) < radius_i (strictly).
"""

from __future__ import annotations

import torch

from genlab.metrics._distance import as_float64, distance_blocks, kth_neighbour_distance
from genlab.metrics.records import Entry, Scoring


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5, chunk: int = 1024,
         real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """Precision, recall, density and coverage between real (N, D) and fake (M, D) features
    (real_radii: the real points' k-NN radii when already known, e.g. from the reference cache)."""
    real, fake = as_float64(real), as_float64(fake)
    if real_radii is None:
        real_radii = kth_neighbour_distance(real, k, chunk)
    real_radii = real_radii.to(real)
    fake_radii = kth_neighbour_distance(fake, k, chunk)
    # Number of real balls holding each fake point; precision and density both come from it.
    balls_per_fake = torch.zeros(fake.shape[0], dtype=torch.float64, device=fake.device)
    recalled = torch.empty(real.shape[0], dtype=torch.bool, device=real.device)
    covered = torch.empty(real.shape[0], dtype=torch.bool, device=real.device)
    for start, d in distance_blocks(real, fake, chunk):  # d: (real rows, all fakes)
        rows = slice(start, start + d.shape[0])
        inside_real = d < real_radii[rows, None]
        balls_per_fake += inside_real.sum(0)
        recalled[rows] = (d < fake_radii[None, :]).any(1)
        covered[rows] = d.min(1).values < real_radii[rows]
    return {
        "precision": float((balls_per_fake > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(balls_per_fake.mean() / k),
        "coverage": float(covered.double().mean()),
    }


def score(s: Scoring) -> dict[str, Entry]:
    """Precision, recall, density, coverage of up to prdc_max points against as many reference points."""
    cfg = s.ev.settings
    m = min(len(s.x), cfg.prdc_max, len(s.ref["feats"]))
    if m <= cfg.prdc_k:
        return {}
    real = s.ref["feats"][s.ref["perm"][:m]]
    r = prdc(real, s.feats[:m], k=cfg.prdc_k, real_radii=s.ev.reference_radii(s.net, s.ref, m))
    return {key: Entry(v, m, m, extra={"k": cfg.prdc_k}) for key, v in r.items()}
