"""genlab sample: images or points from a finished run, as a PNG grid or an NPZ file.

The NPZ contract other tools read: `images` uint8 (N, H, W, C) for image data, or `points`
float32 (N, D) for toy data; `labels` int64 (N,) when the model is conditional.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from genlab import progress
from genlab.commands import ex_post
from genlab.commands.common import check_writable, load_run, run_folder, sampling_cost, user_errors
from genlab.errors import GenlabError
from genlab.pixels import from_levels, to_uint8


@torch.no_grad()
def generate(model, n: int, seed: int, batch_size: int = 500, truncation: float | None = None,
             noise: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """n samples from model.sample, in batches, reproducible for a given seed.

    truncation=t draws the latent batch with every |z_i| > t redrawn (the truncation trick); noise
    gives the latent batch outright (interpolations, traversals); labels (n,) are split like noise."""
    from genlab.metrics.sampling import batched_samples

    g = torch.Generator(next(model.parameters()).device).manual_seed(int(seed))
    torch.manual_seed(int(seed))
    if truncation is not None and noise is None:
        noise = truncated_latent(model, n, float(truncation), g)
    return batched_samples(model, n, seed, batch_size, generator=g, noise=noise, labels=labels, **kwargs)


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


def sampler_options(cfg, model) -> dict:
    """steps=, eta= and guidance= of the command line for the model's sampler, checked against it."""
    opts = {k: cfg.get(k) for k in ("steps", "eta", "guidance") if cfg.get(k) is not None}
    for k in ("eta", "guidance"):
        if k in opts:
            if isinstance(opts[k], bool) or not isinstance(opts[k], (int, float)):
                raise GenlabError(f"{k} must be a number, got {opts[k]!r}")
            opts[k] = float(opts[k])
    problem = model.sampling_problem(**opts)
    if problem:
        raise GenlabError(problem)
    return opts


def npz_images(path: Path) -> torch.Tensor:
    """Images in [-1, 1] (N, C, H, W) from an .npz holding `images` uint8 (N, H, W, C), what sample writes."""
    from genlab import safeio

    x = safeio.read_npz(path, {"images": (("u",), 4)})["images"]
    if x.dtype != np.uint8 or x.shape[-1] not in (1, 3):
        raise GenlabError(f"{path}: 'images' is {x.dtype} of shape {x.shape}; expected uint8 (N, H, W, C) with "
                          "C = 1 or 3, as genlab sample writes")
    return from_levels(torch.from_numpy(x.copy()).permute(0, 3, 1, 2))


def translation_inputs(run, source: str, direction: str, n: int, given: torch.Tensor | None = None) -> torch.Tensor:
    """Images in [-1, 1] to translate: a split (train/test) of the run's own source domain, a folder,
    or `given` (read from an .npz)."""
    if given is not None:
        if tuple(given.shape[1:]) != tuple(run.spec.shape):
            raise GenlabError(f"input={source} holds images of shape {tuple(given.shape[1:])}; this model translates "
                              f"{tuple(run.spec.shape)}")
        return given[:n]
    if source in ("train", "test"):
        from genlab import data as data_lib

        data = data_lib.build(run.cfg.dataset, seed=int(run.cfg.get("seed", 0)))
        return data.split("a" if direction == "a2b" else "b", source)[:n]
    from genlab.data.images import _load_image, list_images
    from genlab.data.schema import MAX_PIXELS

    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise GenlabError(f"input={source} is neither a split (train, test) nor a folder of images")
    files = list_images(folder)[0][:n]
    if not files:
        raise GenlabError(f"no images found under {folder}")
    c, size, _ = run.spec.shape
    limit = run.cfg.dataset.get("max_pixels", MAX_PIXELS)
    return from_levels(torch.stack([_load_image(p, c, size, limit) for p in files]))


def translate(cfg, run, out: Path, given: torch.Tensor | None = None) -> Path:
    """genlab sample for image-to-image models: write the translations of input= (and the inputs)."""
    from genlab import viz

    if cfg.direction not in ("a2b", "b2a"):
        raise GenlabError(f"direction must be a2b or b2a, got {cfg.direction}")
    x = translation_inputs(run, str(cfg.input or "test"), cfg.direction, int(cfg.num_samples), given)
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
    return to_uint8(x).permute(0, 2, 3, 1).numpy()


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
    from genlab.engine import signals

    with user_errors(), signals.at_once():
        sample(cfg)


def sample(cfg: DictConfig) -> Path:
    """The `genlab sample` command."""
    progress.configure(cfg.progress)
    if cfg.num_samples < 1:
        raise GenlabError(f"num_samples must be >= 1, got {cfg.num_samples}")
    out = Path(cfg.out) if cfg.out else run_folder(cfg.run) / "samples" / "sample.png"
    if out.suffix not in (".png", ".npz"):
        raise GenlabError(f"out={out} must end in .png (an image grid) or .npz (arrays)")
    check_writable(out, "out")  # before drawing samples, which may take minutes
    mode = str(cfg.get("mode", "grid"))
    if mode not in ("grid", "interp", "traverse"):
        raise GenlabError(f"mode={mode} is unknown; choose grid, interp or traverse")
    prior = cfg.get("prior")
    ex_post.check_prior(prior, cfg.get("prior_components", 10))
    if prior == "gmm" and (mode != "grid" or cfg.get("truncation") is not None or cfg.get("temperature") is not None):
        raise GenlabError("prior=gmm draws latents from the fitted mixture: use it with mode=grid, without "
                          "truncation= or temperature=")
    source = str(cfg.get("input") or "")
    given = npz_images(Path(source).expanduser()) if source.endswith(".npz") else None  # a bad file: one line first
    run = load_run(cfg.run, cfg.checkpoint, cfg.device)
    if run.model.translates:
        return translate(cfg, run, out, given)
    if cfg.get("input") is not None:
        raise GenlabError("input= is for image-to-image models (cyclegan); this model samples from noise")
    kwargs = {}
    if cfg.get("temperature") is not None:
        if not run.model.accepts_temperature:
            raise GenlabError(f"temperature= applies to flows; {run.cfg.model.name} has no sampling temperature "
                              "(GANs: use truncation=)")
        if cfg.temperature <= 0:
            raise GenlabError(f"temperature must be > 0, got {cfg.temperature}")
        kwargs["temperature"] = float(cfg.temperature)
    kwargs.update(sampler_options(cfg, run.model))
    truncation = cfg.get("truncation")
    n, nrow = int(cfg.num_samples), cfg.nrow
    labels = None
    if run.model.conditional:
        labels = parse_labels(cfg.get("labels"), n, run.spec.num_classes)
    elif cfg.get("labels") is not None:
        raise GenlabError("labels= needs a class-conditional model (cgan, acgan)")
    cost = sampling_cost(run.model, n, int(cfg.batch_size))
    if cost:
        print(cost, file=sys.stderr, flush=True)
    if prior == "gmm":
        x = ex_post.gmm_samples(run, n, int(cfg.prior_components), int(cfg.seed), int(cfg.batch_size))
    elif mode == "grid":
        x = generate(run.model, n, int(cfg.seed), int(cfg.batch_size), truncation=truncation, labels=labels,
                     **kwargs)
    else:
        steps = int(cfg.get("path_length", 10))
        if steps < 2:
            raise GenlabError(f"path_length must be >= 2 for mode={mode}, got {steps}")
        rows = max(1, n // steps)
        z = (interpolation_latents(run.model, rows, steps, int(cfg.seed), truncation) if mode == "interp"
             else traversal_latents(run.model, rows, steps, int(cfg.seed)))
        if labels is not None:
            # One class per row of a path, cycling through the classes (or the labels= given).
            labels = parse_labels(cfg.get("labels"), rows, run.spec.num_classes).repeat_interleave(steps)
        x = generate(run.model, len(z), int(cfg.seed), int(cfg.batch_size), noise=z, labels=labels, **kwargs)
        nrow = steps
    write(x, run.spec.kind, out, extent=run.info.get("extent", 1.0), nrow=nrow, labels=labels)
    print(f"wrote {len(x)} samples ({mode}) from {run.path} (step {run.info['step']}) to {out}")
    return out


if __name__ == "__main__":
    main()
