"""genlab sample: images or points from a finished run, as a PNG grid or an NPZ file.

The NPZ contract other tools read: `images` uint8 (N, H, W, C) for image data, or `points`
float32 (N, D) for toy data; `labels` int64 (N,) when the model is conditional.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from genlab.commands.common import load_run, user_errors
from genlab.errors import GenlabError


@torch.no_grad()
def generate(model, n: int, seed: int, batch_size: int = 500, **kwargs) -> torch.Tensor:
    """n samples from model.sample, in batches, reproducible for a given seed."""
    dev = next(model.parameters()).device
    g = torch.Generator(dev).manual_seed(int(seed))
    torch.manual_seed(int(seed))
    out = []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        out.append(model.sample(m, generator=g, **kwargs).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def to_uint8_nhwc(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) -> uint8 (N, H, W, C)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write(x: torch.Tensor, kind: str, out: Path, extent: float = 1.0, nrow: int | None = None,
          labels: torch.Tensor | None = None) -> None:
    """Write samples to out (.png grid/scatter or .npz arrays)."""
    from genlab import viz

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        arrays = {"images": to_uint8_nhwc(x)} if kind == "image" else {"points": x.numpy().astype(np.float32)}
        if labels is not None:
            arrays["labels"] = labels.cpu().numpy().astype(np.int64)
        np.savez_compressed(out, **arrays)
    else:
        img = viz.grid(x, nrow=nrow) if kind == "image" else viz.scatter(x, None, extent=extent)
        viz.save_png(img, out)


@hydra.main(version_base="1.3", config_path="pkg://genlab.configs", config_name="sample")
def main(cfg: DictConfig) -> None:
    with user_errors():
        sample(cfg)


def sample(cfg: DictConfig) -> Path:
    """The `genlab sample` command."""
    if cfg.num_samples < 1:
        raise GenlabError(f"num_samples must be >= 1, got {cfg.num_samples}")
    out = Path(cfg.out) if cfg.out else Path(str(cfg.run)) / "samples" / "sample.png"
    if out.suffix not in (".png", ".npz"):
        raise GenlabError(f"out={out} must end in .png (an image grid) or .npz (arrays)")
    run = load_run(cfg.run, cfg.checkpoint, cfg.device)
    x = generate(run.model, int(cfg.num_samples), int(cfg.seed), int(cfg.batch_size))
    write(x, run.spec.kind, out, extent=run.info.get("extent", 1.0), nrow=cfg.nrow)
    print(f"wrote {len(x)} samples from {run.path} (step {run.info['step']}) to {out}")
    return out


if __name__ == "__main__":
    main()
