"""genlab train: compose the config, build data and model, and hand them to the Trainer."""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from genlab.commands.common import user_errors
from genlab.config import register_configs

log = logging.getLogger("genlab")
register_configs()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: DictConfig, run_dir: Path | str | None = None, evaluator=None) -> dict:
    """Run one training job described by a composed train config; returns the last logged scalars."""
    from genlab.config import validate
    from genlab.engine import distributed

    mcfg = validate(cfg)
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    dist = distributed.init(cfg.trainer.device)
    try:
        with distributed.quiet_failures(dist):
            return _train(cfg, mcfg, Path(dist.broadcast(str(run_dir))), evaluator, dist)
    finally:
        dist.close()


def _train(cfg: DictConfig, mcfg, run_dir: Path, evaluator, dist) -> dict:
    from genlab import data as data_lib
    from genlab.config import model_class
    from genlab.engine import checkpoint as ckpt
    from genlab.engine import signals
    from genlab.engine.threads import default_threads
    from genlab.engine.trainer import Trainer

    if not dist.is_main:  # rank 0 says it once
        logging.getLogger("genlab").setLevel(logging.WARNING)
    state, path = None, None
    if cfg.trainer.resume:
        path = ckpt.resolve(cfg.trainer.resume)
        state = ckpt.load(path)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(int(cfg.seed))
    device = dist.device
    data = data_lib.build(cfg.dataset, device, seed=int(cfg.seed))
    torch.set_num_threads(int(cfg.trainer.num_threads or default_threads(data.kind)))
    model = model_class(cfg)(mcfg, data.spec)
    if evaluator is None and cfg.trainer.eval_every and dist.is_main:
        evaluator = default_evaluator(cfg, data)
    trainer = Trainer(cfg, run_dir, evaluator=evaluator, dist=dist)
    trainer.meta = {"overrides": _task_overrides()}
    log.info("run folder: %s", run_dir.resolve())
    log.info("model %s on %s (%s, %d train / %d test), device %s, precision %s, %d CPU thread(s)", mcfg.name,
             data.name, "x".join(map(str, data.shape)), len(data), len(data.raw("test")), device,
             cfg.trainer.precision, torch.get_num_threads())
    if dist.enabled:
        b = int(cfg.trainer.batch_size)
        log.info("%d processes (%s) x trainer.batch_size %d = global batch %d", dist.world, device.type, b, dist.world * b)
    last = trainer.fit(model, data, resume=state, resume_path=path)
    if trainer.stopped_by:
        stop = signals.Stopped(trainer.stopped_by, trainer.step, run_dir / "checkpoints" / "last.pt")
        if not dist.is_main:
            sys.exit(stop.exit_code)  # rank 0 says it once
        raise stop  # one line and the signal's exit status (see engine/signals.py)
    log.info("done: %d steps; checkpoint %s", trainer.step, run_dir / "checkpoints" / "last.pt")
    return last


def default_evaluator(cfg: DictConfig, data):
    """The sample-based evaluator for trainer.eval_every: trainer.eval_samples samples, cheap metrics."""
    from genlab import data as data_lib
    from genlab.metrics.evaluator import Evaluator

    t = cfg.trainer
    fd = data_lib.full_dataset(cfg.dataset, data) if data.kind == "image" and data.num_classes else None
    metrics = list(t.eval_metrics) if t.eval_metrics else None
    # A feature network trained on a few images (a smoke test's) is cached apart from the standard one.
    fn = {"limit": t.eval_featurenet_images, "epochs": 1} if t.eval_featurenet_images else None
    return Evaluator(data, metrics=metrics, num_samples=int(t.eval_samples), seed=int(cfg.seed),
                     featurenet_data=fd, featurenet=fn, reference_limit=t.eval_reference)


def _task_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not running under Hydra (tests, API use)
        return []


@hydra.main(version_base="1.3", config_path="pkg://genlab.configs", config_name="train")
def main(cfg: DictConfig) -> None:
    with user_errors():
        train(cfg)


if __name__ == "__main__":
    main()
