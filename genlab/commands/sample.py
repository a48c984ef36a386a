"""genlab sample: images or points from a finished run, as a PNG grid or an NPZ file.

The NPZ contract other tools read: `images` uint8 (N, H, W, C) for image data, or `points`
float32 (N, D) for toy data; `labels` int64 (N,) when the model is conditional.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from genlab.commands.common import load_run, user_errors
from genlab.errors import GenlabError


@torch.no_grad()
def generate(model, n: int, seed: int, batch_size: int = 500, truncation: float | None = None,
             noise: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """n samples from model.sample, in batches, reproducible for a given seed.

    truncation=t draws the latent batch with every |z_i| > t redrawn (the truncation trick); noise
    gives the latent batch outright (interpolations, traversals)."""
    dev = next(model.parameters()).device
    g = torch.Generator(dev).manual_seed(int(seed))
    torch.manual_seed(int(seed))
    if truncation is not None and noise is None:
        noise = truncated_latent(model, n, float(truncation), g)
    out = []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        z = {"noise": noise[i:i + m]} if noise is not None else {}
        out.append(model.sample(m, generator=g, **z, **kwargs).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def _latent(model, n: int, g: torch.Generator) -> torch.Tensor:
    z = model.latent(n, generator=g)
    if z is None:
        raise GenlabError(f"{type(model).__name__} has no latent input, so truncation/interp/traverse do not apply; "
                          "use mode=grid without truncation")
    return z


def truncated_latent(model, n: int, t: float, g: torch.Generator) -> torch.Tensor:
    """A latent batch with each coordinate |z_i| > t redrawn until none is left."""
    if t <= 0:
        raise GenlabError(f"truncation must be > 0 (a bound on |z|), got {t}")
    z = _latent(model, n, g)
    bad = z.abs() > t
    while bad.any():
        z = torch.where(bad, _latent(model, n, g), z)
        bad = z.abs() > t
    return z


def slerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation (rows, steps, D) between rows of a and b (linear where they are parallel)."""
    t = torch.linspace(0, 1, steps, device=a.device, dtype=torch.float64).view(1, -1, 1)
    a64, b64 = a.double().unsqueeze(1), b.double().unsqueeze(1)
    cos = (F.normalize(a64, dim=-1) * F.normalize(b64, dim=-1)).sum(-1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    w0 = torch.where(safe, torch.sin((1 - t) * omega) / so.where(safe, torch.ones_like(so)), 1 - t)
    w1 = torch.where(safe, torch.sin(t * omega) / so.where(safe, torch.ones_like(so)), t)
    return (w0 * a64 + w1 * b64).to(a.dtype)


def interpolation_latents(model, rows: int, steps: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """rows*steps latents: each row a spherical path between two random latent points."""
    dev = next(model.parameters()).device
    g = torch.Generator(dev).manual_seed(int(seed))
    draw = (lambda n: truncated_latent(model, n, truncation, g)) if truncation else (lambda n: _latent(model, n, g))
    a, b = draw(rows), draw(rows)
    return slerp(a, b, steps).reshape(rows * steps, -1)


def traversal_latents(model, rows: int, steps: int, seed: int, span: float = 2.5) -> torch.Tensor:
    """rows*steps latents: row d sweeps latent coordinate d over [-span, span], the rest fixed."""
    dev = next(model.parameters()).device
    g = torch.Generator(dev).manual_seed(int(seed))
    base = _latent(model, 1, g)
    rows = min(rows, base.shape[1])
    z = base.repeat(rows * steps, 1).view(rows, steps, -1)
    values = torch.linspace(-span, span, steps, device=z.device, dtype=z.dtype)
    for d in range(rows):
        z[d, :, d] = values
    return z.reshape(rows * steps, -1)


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
    mode = str(cfg.get("mode", "grid"))
    if mode not in ("grid", "interp", "traverse"):
        raise GenlabError(f"mode={mode} is unknown; choose grid, interp or traverse")
    run = load_run(cfg.run, cfg.checkpoint, cfg.device)
    kwargs = {}
    if cfg.get("temperature") is not None:
        if "temperature" not in inspect.signature(run.model.sample).parameters:
            raise GenlabError(f"temperature= applies to flows; {run.cfg.model.name} has no sampling temperature "
                              "(GANs: use truncation=)")
        if cfg.temperature <= 0:
            raise GenlabError(f"temperature must be > 0, got {cfg.temperature}")
        kwargs["temperature"] = float(cfg.temperature)
    truncation = cfg.get("truncation")
    n, nrow = int(cfg.num_samples), cfg.nrow
    if mode == "grid":
        x = generate(run.model, n, int(cfg.seed), int(cfg.batch_size), truncation=truncation, **kwargs)
    else:
        steps = int(cfg.get("steps", 10))
        if steps < 2:
            raise GenlabError(f"steps must be >= 2 for mode={mode}, got {steps}")
        rows = max(1, n // steps)
        z = (interpolation_latents(run.model, rows, steps, int(cfg.seed), truncation) if mode == "interp"
             else traversal_latents(run.model, rows, steps, int(cfg.seed)))
        x = generate(run.model, len(z), int(cfg.seed), int(cfg.batch_size), noise=z, **kwargs)
        nrow = steps
    write(x, run.spec.kind, out, extent=run.info.get("extent", 1.0), nrow=nrow)
    print(f"wrote {len(x)} samples ({mode}) from {run.path} (step {run.info['step']}) to {out}")
    return out


if __name__ == "__main__":
    main()
