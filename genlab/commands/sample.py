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
def generate(model, n: int, seed: int, batch_size: int = 500, labels: torch.Tensor | None = None,
             **kwargs) -> torch.Tensor:
    """n samples from model.sample, in batches, reproducible for a given seed; labels (n,) are split alike."""
    dev = next(model.parameters()).device
    g = torch.Generator(dev).manual_seed(int(seed))
    torch.manual_seed(int(seed))
    out = []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        if labels is not None:
            kwargs["labels"] = labels[i:i + m].to(dev)
        out.append(model.sample(m, generator=g, **kwargs).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def parse_labels(value, n: int, num_classes: int | None) -> torch.Tensor:
    """labels= as (n,) int64: null cycles through the classes, an int repeats, a list is tiled to n."""
    if not num_classes:
        raise GenlabError("labels= needs a class-conditional model (cgan, acgan)")
    if value is None:
        return torch.arange(n) % num_classes
    vals = [value] if isinstance(value, int) else list(value)
    if not vals or any(not isinstance(v, int) or not 0 <= v < num_classes for v in vals):
        raise GenlabError(f"labels= must be an int or a list of ints in 0..{num_classes - 1}, got {value}")
    return torch.tensor(vals, dtype=torch.int64).repeat((n + len(vals) - 1) // len(vals))[:n]


def translation_inputs(run, source: str, direction: str, n: int) -> torch.Tensor:
    """Images in [-1, 1] to translate: a split (train/test) of the run's own source domain, or a folder."""
    if source in ("train", "test"):
        from genlab import data as data_lib

        data = data_lib.build(run.cfg.dataset, seed=int(run.cfg.get("seed", 0)))
        return data.split("a" if direction == "a2b" else "b", source)[:n]
    from genlab.data.images import _load_image, list_images

    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise GenlabError(f"input={source} is neither a split (train, test) nor a folder of images")
    files = list_images(folder)[0][:n]
    if not files:
        raise GenlabError(f"no images found under {folder}")
    c, size, _ = run.spec.shape
    return torch.stack([_load_image(p, c, size) for p in files]).float().div(127.5).sub(1)


def translate(cfg, run, out: Path) -> Path:
    """genlab sample for image-to-image models: write the translations of input= (and the inputs)."""
    from genlab import viz

    if cfg.direction not in ("a2b", "b2a"):
        raise GenlabError(f"direction must be a2b or b2a, got {cfg.direction}")
    x = translation_inputs(run, str(cfg.input or "test"), cfg.direction, int(cfg.num_samples))
    y = run.model.translate(x, cfg.direction, batch_size=int(cfg.batch_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez_compressed(out, images=to_uint8_nhwc(y), inputs=to_uint8_nhwc(x.cpu()))
    else:
        k = int(cfg.nrow or 8)
        rows = [t for i in range(0, len(x), k) for t in (x[i:i + k].cpu(), y[i:i + k])]
        viz.save_png(viz.grid(torch.cat(rows), nrow=k), out)
    print(f"wrote {len(y)} {cfg.direction} translations of {cfg.input or 'test'} from {run.path} "
          f"(step {run.info['step']}) to {out}")
    return out


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
    if hasattr(run.model, "translate"):
        return translate(cfg, run, out)
    if cfg.get("input") is not None:
        raise GenlabError("input= is for image-to-image models (cyclegan); this model samples from noise")
    labels = None
    if getattr(run.model, "conditional", False):
        labels = parse_labels(cfg.get("labels"), int(cfg.num_samples), run.spec.num_classes)
    elif cfg.get("labels") is not None:
        raise GenlabError("labels= needs a class-conditional model (cgan, acgan)")
    x = generate(run.model, int(cfg.num_samples), int(cfg.seed), int(cfg.batch_size), labels=labels)
    write(x, run.spec.kind, out, extent=run.info.get("extent", 1.0), nrow=cfg.nrow, labels=labels)
    print(f"wrote {len(x)} samples from {run.path} (step {run.info['step']}) to {out}")
    return out


if __name__ == "__main__":
    main()
