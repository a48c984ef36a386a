"""Mode metrics for 2-D Gaussian mixtures (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018).

A sample is *high quality* when it lies within `threshold` standard deviations of its nearest
centre. A mode is *captured* when at least `min_count` high-quality samples have it as their nearest
centre; with the papers' `min_count=1` a single sample suffices. Reverse KL is KL(q || uniform) of
the histogram q of high-quality samples over modes (0 for perfect balance, log M for full collapse).
The centres and std come from the data (genlab.data.toy) as arguments.
"""

from __future__ import annotations

import torch

from genlab.metrics.records import Entry, Scoring

def mode_metrics(samples: torch.Tensor, centers: torch.Tensor, std: float, threshold: float = 3.0,
                 min_count: int = 1) -> dict[str, float]:
    """Modes captured, high-quality fraction and reverse KL of samples (N, 2) from a mixture."""
    samples = samples.to(torch.float64)
    centers = centers.to(device=samples.device, dtype=torch.float64)
    dist, nearest = torch.cdist(samples, centers).min(1)
    good = dist <= threshold * std
    counts = torch.bincount(nearest[good], minlength=centers.shape[0]).double()
    num_good = float(counts.sum())
    if num_good > 0:
        q = counts / num_good
        # KL(q || 1/M) = sum q log(q M); xlogy makes empty modes contribute 0.
        reverse_kl = float(torch.special.xlogy(q, q * centers.shape[0]).sum())
    else:
        reverse_kl = float("nan")  # no high-quality sample: the histogram does not exist
    return {
        "modes": int((counts >= min_count).sum()),
        "high_quality": num_good / max(samples.shape[0], 1),
        "reverse_kl": reverse_kl,
        "num_modes": int(centers.shape[0]),
    }


def score(s: Scoring) -> dict[str, Entry]:
    """Modes covered, the share of high-quality samples and the reverse KL of a toy mixture's samples."""
    info, n = s.ev.data.info, len(s.x)
    r = mode_metrics(s.x, info["centers"], float(info["std"]))
    return {"modes": Entry(r["modes"], n, extra={"num_modes": r["num_modes"]}),
            "high_quality": Entry(r["high_quality"], n), "reverse_kl": Entry(r["reverse_kl"], n)}
