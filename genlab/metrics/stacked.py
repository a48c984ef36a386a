"""Stacked-MNIST modes (PacGAN Table 2, after Metz et al. 2017): the base dataset's classifier reads each
channel of a sample; the triple of classes is its mode (1,000 in all). `stacked_modes` counts the
triples that occur, `stacked_kl` is KL(histogram of triples || uniform over the 1,000)."""

from __future__ import annotations

import torch

from genlab.metrics.records import Entry


def mode_counts(channel_classes: torch.Tensor, k: int = 10) -> torch.Tensor:
    """(N, C) class indices per channel -> counts (k^C,) of the class tuples."""
    weights = k ** torch.arange(channel_classes.shape[1] - 1, -1, -1, device=channel_classes.device)
    return torch.bincount((channel_classes * weights).sum(1), minlength=k ** channel_classes.shape[1]).double()


def stacked_metrics(counts: torch.Tensor) -> dict[str, float]:
    """Modes hit and KL(q || uniform) of a histogram over the modes."""
    q = counts / counts.sum()
    return {"stacked_modes": int((counts > 0).sum()),
            "stacked_kl": float(torch.special.xlogy(q, q * len(counts)).sum())}


def base_classifier(ev):
    """The feature network of the base dataset (cached like genlab eval's own)."""
    if getattr(ev, "_stacked_net", None) is None:
        from genlab.metrics import featurenet as fnet

        base = ev.data.info["stacked_base"]
        cfg = dict(ev.settings.featurenet)
        cache = cfg.pop("cache_dir", None)
        ev._stacked_net = fnet.load_or_train(base, fnet.recipe_for(base, **cfg), cache, ev.device)
    return ev._stacked_net


def score(s) -> dict[str, Entry]:
    """Modes and KL of a stacked set: each channel classified by the base dataset's network."""
    net = base_classifier(s.ev)
    classes = []
    for c in range(s.x.shape[1]):
        parts = [net.embed(s.x[i:i + 2000, c:c + 1])[1].argmax(1) for i in range(0, len(s.x), 2000)]
        classes.append(torch.cat(parts).cpu())
    r = stacked_metrics(mode_counts(torch.stack(classes, 1)))
    n = len(s.x)
    return {"stacked_modes": Entry(r["stacked_modes"], n, extra={"num_modes": 1000}, feature_network=net.id),
            "stacked_kl": Entry(r["stacked_kl"], n, feature_network=net.id)}
