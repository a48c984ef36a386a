"""genlab eval: score a run's samples against its dataset, next to the real-data floor.

Writes <run>/eval.json, <run>/samples/eval_nearest.png (samples above their nearest training
images) and logs eval/* scalars to the run's TensorBoard at the checkpoint's step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from genlab import __version__
from genlab import progress
from genlab.commands.common import check_writable, load_run, run_folder, sampling_cost, user_errors
from genlab.config import register_configs
from genlab.errors import GenlabError

log = logging.getLogger("genlab")
register_configs()


def run_data(run, root: str | None = None):
    """The run's dataset rebuilt from its saved config. Its root: the one given (eval's dataset.root), else
    the run's own where that folder still exists, else $GENLAB_DATA (a run made on another machine),
    else the run's own, which the missing-dataset error then names."""
    from genlab import data as data_lib
    from genlab.data.images import data_root

    dcfg = OmegaConf.create(OmegaConf.to_container(run.cfg.dataset, resolve=True))
    saved = dcfg.get("root")
    env = os.environ.get("GENLAB_DATA")
    if root:
        dcfg.root = str(root)
    elif env and not (saved and data_root(dcfg).is_dir()):
        dcfg.root = env
    dcfg.download = False  # eval is offline; a missing dataset is a one-line error
    return data_lib.build(dcfg, "cpu", seed=int(run.cfg.get("seed", 0))), dcfg


def eval_settings(cfg: DictConfig, num_samples=None, sampling: dict | None = None):
    """eval.yaml's settings as the one EvalSettings object (its eval: node plus the top-level counts)."""
    from genlab.metrics.records import EvalSettings

    return EvalSettings(num_samples=num_samples, seed=int(cfg.seed), split=str(cfg.split),
                        batch_size=int(cfg.batch_size), featurenet=OmegaConf.to_container(cfg.featurenet, resolve=True),
                        sampling=dict(sampling or {}), **OmegaConf.to_container(cfg.eval, resolve=True))


def build_evaluator(cfg: DictConfig, data, dcfg, device, metrics=None, num_samples=None, sampling=None):
    """An Evaluator from eval.yaml's settings (also used by tests and scripts)."""
    from genlab import data as data_lib
    from genlab.metrics.evaluator import Evaluator

    fd = data_lib.full_dataset(dcfg, data) if data.kind == "image" and data.num_classes else None
    return Evaluator(data, eval_settings(cfg, num_samples, sampling), metrics=metrics, device=device, featurenet_data=fd)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e6 and v != 0 and abs(v) >= 1):
        return str(int(v))
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def table(rows: list[dict]) -> str:
    """metric | model | real-data floor | blurred floor | better | n, as fixed-width text."""
    head = ("metric", "model", "real-data floor", "blurred floor", "better", "n (samples/ref)")
    lines = [head]
    for r in rows:
        counts = f"{r['num_samples']}" + (f"/{r['num_reference']}" if r.get("num_reference") else "")
        lines.append((r["metric"], _fmt(r["value"]), _fmt(r.get("floor")), _fmt(r.get("floor_blurred")),
                      r.get("better") or "", counts))
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(l, widths)).rstrip() for l in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def evaluate_run(cfg: DictConfig) -> dict:
    """The `genlab eval` command; returns the eval.json content."""
    from genlab import viz
    from genlab.device import resolve_device
    from genlab.metrics.table import better

    t0 = time.perf_counter()
    progress.configure(cfg.progress)
    if cfg.num_samples is not None and int(cfg.num_samples) < 2:
        raise GenlabError(f"num_samples must be >= 2, got {cfg.num_samples}")
    out = Path(cfg.out) if cfg.out else run_folder(cfg.run) / "eval.json"
    check_writable(out, "out")  # before the evaluation, which may take minutes
    run = load_run(str(cfg.run), str(cfg.checkpoint), str(cfg.device))
    device = resolve_device(str(cfg.device))
    data, dcfg = run_data(run, cfg.dataset.root)
    from genlab.engine.threads import default_threads

    torch.set_num_threads(default_threads(data.kind))
    metrics = list(cfg.metrics) if cfg.metrics else None
    from genlab.commands.sample import sampler_options

    sampling = sampler_options(cfg, run.model)
    ev = build_evaluator(cfg, data, dcfg, device, metrics, cfg.num_samples, sampling)
    groups = ev.groups(run.model)
    if not groups:
        raise GenlabError(f"none of metrics={metrics} applies to {data.name} / {run.cfg.model.name}; "
                          f"leave metrics unset for all that apply")
    from genlab.metrics.table import metric

    draws = any(metric(g).uses_samples for g in groups)
    log.info("evaluating %s (step %d) on %s: %s, %s, reference split %s", run.path, run.info["step"], data.name,
             ", ".join(groups), f"{ev.num_samples} samples" if draws else "no samples", ev.split)
    cost = sampling_cost(run.model, ev.num_samples, int(cfg.batch_size)) if draws else None
    if cost:
        print(cost, file=sys.stderr, flush=True)
    entries, samples = ev.evaluate(run.model, groups)
    floor = ev.floor(groups) if cfg.floor else {}
    sigma = cfg.get("floor_blur")
    # Images: held-out real data blurred too, so a blurry model's score is read against blur's own score.
    blurred = ev.floor(groups, blur=float(sigma)) if cfg.floor and sigma and data.kind == "image" else {}
    run_dir = run.path.parent.parent if run.path.parent.name == "checkpoints" else run.path.parent
    rows = []
    for key, e in entries.items():
        f = floor.get(key)
        b = blurred.get(key)
        rows.append({"metric": key, "value": float(e.value), "floor": float(f.value) if f else None,
                     "floor_blurred": float(b.value) if b else None,
                     "better": better(key), "num_samples": e.num_samples, "num_reference": e.num_reference,
                     "floor_num_samples": f.num_samples if f else None, "feature_network": e.feature_network,
                     "split": ev.split if e.num_reference else e.extra.get("split"), **e.extra})
    # The id names the recipe; "weights" names this training of it (another machine's differs).
    nets = [{"name": n.name, "id": n.id, "weights": n.digest()[:12], "test_accuracy": n.test_accuracy,
             "path": str(n.path) if n.path else None} for n in (ev._nets or [])]
    result = {
        "run": str(run_dir), "checkpoint": str(run.path), "step": int(run.info["step"]),
        "model": str(run.cfg.model.name), "dataset": data.name, "split": ev.split, "heldout_split": ev.heldout,
        "num_samples": ev.num_samples, "seed": int(cfg.seed), "sampling": sampling, "genlab_version": __version__,
        "feature_networks": nets, "skipped": ev.skipped, "metrics": rows,
        "values": {r["metric"]: r["value"] for r in rows},
        "floor": {r["metric"]: r["floor"] for r in rows if r["floor"] is not None},
        "floor_blurred": {r["metric"]: r["floor_blurred"] for r in rows if r["floor_blurred"] is not None},
        "floor_blur_sigma": float(sigma) if blurred else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, out)
    grid = ev.nearest_grid(samples) if "memorization" in groups else None
    if grid is not None:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        viz.save_png(grid, run_dir / "samples" / "eval_nearest.png")
    _log_tb(run_dir, result, grid)
    print(f"{run_dir} (step {result['step']}): {result['model']} on {data.name}, {ev.num_samples} samples "
          f"vs the {ev.split} split; floor = {ev.heldout} split vs {ev.split} split")
    for n in nets:
        if n["test_accuracy"] is not None:
            print(f"feature network {n['id']}: test accuracy {n['test_accuracy']:.4f}")
    print(table(rows))
    for s in ev.skipped:
        print(f"skipped: {s}")
    print(f"wrote {out}" + (f" and {run_dir / 'samples' / 'eval_nearest.png'}" if grid is not None else ""))
    return result


def _log_tb(run_dir: Path, result: dict, grid) -> None:
    from genlab.engine.writers import EventWriter

    w = EventWriter(run_dir / "tb")
    try:
        for r in result["metrics"]:
            if r["value"] is not None and math.isfinite(r["value"]):
                w.add_scalar(f"eval/{r['metric']}", r["value"], result["step"])
        if grid is not None:
            w.add_image("eval/nearest_training_neighbours", grid, result["step"])
    finally:
        w.close()


@hydra.main(version_base="1.3", config_path="pkg://genlab.configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from genlab.engine import signals

    with user_errors(), signals.at_once():
        evaluate_run(cfg)


if __name__ == "__main__":
    main()
