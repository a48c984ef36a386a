"""The one batched sampling loop: `genlab sample` and the evaluator draw a model's samples through it."""

from __future__ import annotations

import torch

from genlab import progress


@torch.no_grad()
def batched_samples(model, n: int, seed: int, batch_size: int, *, generator: torch.Generator | None = None,
                    noise: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """n samples (CPU, float32) of model.sample in batches, reproducible for a seed, leaving the global RNG as it was.

    generator: the latent stream (default: one seeded with `seed` on the model's device); noise and
    labels (n, ...) are split like the samples."""
    dev = next(model.parameters()).device
    g = generator if generator is not None else torch.Generator(dev).manual_seed(int(seed))
    out = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), \
            progress.bar(n, "sampling", "img") as bar:
        torch.manual_seed(int(seed))  # whatever a sampler draws outside its generator (dropout, pools)
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            kw = {"noise": noise[i:i + m]} if noise is not None else {}
            if labels is not None:
                kw["labels"] = labels[i:i + m].to(dev)
            out.append(model.sample(m, generator=g, **kw, **kwargs).float().cpu())
            bar.update(m)
    return torch.cat(out) if out else torch.empty(0)
