"""genlab train: compose the config, build data and model, and hand them to the Trainer.

The Hydra task returns the run's objective (trainer.objective, evaluated at the end) so sweepers can
optimise it. In a sweep a failing job is recorded in its status.json and returns NaN (Optuna
counts the trial as failed) so the other jobs go on; a single run ends with one line and exit 2.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import traceback
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from genlab.commands.common import user_errors
from genlab.commands.sweep import RunStatus, first_line, parallel_threads
from genlab.config import register_configs

log = logging.getLogger("genlab")
register_configs()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: DictConfig, run_dir: Path | str | None = None, evaluator=None, status: RunStatus | None = None,
          launcher=None) -> dict:
    """Run one training job described by a composed train config; returns the last logged scalars.

    With trainer.objective set, status.objective gets {metric, value, direction} from a final evaluation."""
    from genlab.config import validate
    from genlab.engine import distributed

    mcfg = validate(cfg)  # also pins trainer.recipe=auto to the recipe it resolves to
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    dist = distributed.init(cfg.trainer.device)
    try:
        with distributed.quiet_failures(dist):
            return _train(cfg, mcfg, Path(dist.broadcast(str(run_dir))), evaluator, dist, status, launcher)
    finally:
        dist.close()


def _train(cfg: DictConfig, mcfg, run_dir: Path, evaluator, dist, status, launcher) -> dict:
    from genlab import data as data_lib
    from genlab.config import attach_first_stage, model_class
    from genlab.engine import checkpoint as ckpt
    from genlab.engine import signals
    from genlab.engine.threads import default_threads
    from genlab.engine.trainer import Trainer
    from genlab.engine.writers import guard_log_files

    from genlab import progress

    guard_log_files()  # a full disk under train.log is one line, not a traceback per record
    if not dist.is_main:  # rank 0 says it once
        logging.getLogger("genlab").setLevel(logging.WARNING)
    progress.configure(bool(cfg.trainer.progress) and dist.is_main)
    state, path = None, None
    resume = cfg.trainer.resume
    if resume == "auto":  # a requeued job continues from its own folder, a new one starts fresh
        resume = run_dir / "checkpoints" / "last.pt" if (run_dir / "checkpoints" / "last.pt").is_file() else None
    if resume:
        record = ckpt.RunRecord.take(resume)  # the file preflight already read, if it did
        path, state = record.path, record.state
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    threads = parallel_threads(cfg.trainer.num_threads, launcher)  # set, or shared by a parallel sweep's jobs
    seed_everything(int(cfg.seed))
    device = dist.device
    data = data_lib.build(cfg.dataset, device, seed=int(cfg.seed))
    torch.set_num_threads(int(threads or default_threads(data.kind)))
    from genlab.commands.preflight import checked_model

    # a resume reuses the model its pre-flight check built (every weight is then read from the checkpoint)
    model = (checked_model(cfg, path, data.spec) if path is not None else None) or model_class(cfg)(mcfg, data.spec)
    first_stage = attach_first_stage(cfg)
    if first_stage is not None:  # a resumed run then overwrites these weights with its own copy
        model.load_first_stage(first_stage)
    if evaluator is None and (cfg.trainer.eval_every or cfg.trainer.eval_every_time or cfg.trainer.objective) \
            and dist.is_main:
        evaluator = default_evaluator(cfg, data)
    trainer = Trainer(cfg, run_dir, evaluator=evaluator, dist=dist)
    if status is not None:
        status.trainer = trainer
        trainer.on_checkpoint = lambda: status.write("running")  # step and times as of the checkpoint
    trainer.meta = {"overrides": _task_overrides()}
    log.info("run folder: %s", run_dir.resolve())
    log.info("model %s on %s (%s, %d train / %d test), device %s, precision %s, %d CPU thread(s), recipe %s",
             mcfg.name, data.name, "x".join(map(str, data.shape)), len(data), len(data.raw("test")), device,
             cfg.trainer.precision, torch.get_num_threads(), cfg.trainer.recipe)
    if dist.enabled:
        b = int(cfg.trainer.batch_size)
        log.info("%d processes (%s) x trainer.batch_size %d = global batch %d", dist.world, device.type, b, dist.world * b)
    last = trainer.fit(model, data, resume=state, resume_path=path)
    if not trainer.stopped_by and cfg.trainer.objective and status is not None:
        with trainer.finishing(install=True):  # last.pt is written: a signal stops this evaluation at once
            status.objective = objective(trainer, str(cfg.trainer.objective))  # every rank: it is collective
    if trainer.stopped_by:
        stop = signals.Stopped(trainer.stopped_by, trainer.step, run_dir / "checkpoints" / "last.pt",
                               trainer.stopped_during)
        if not dist.is_main:
            sys.exit(stop.exit_code)  # rank 0 says it once
        raise stop  # one line and the signal's exit status (see engine/signals.py)
    log.info("done: %d steps; checkpoint %s", trainer.step, run_dir / "checkpoints" / "last.pt")
    if dist.is_main:
        log_hparams(trainer, _task_overrides())
    return last


def objective(trainer, name: str) -> dict:
    """{metric, value, direction} of trainer.objective from the evaluation at the last step."""
    from genlab.metrics.table import better

    metrics = trainer.last_eval if trainer.last_eval and trainer.last_eval["step"] == trainer.step else None
    if metrics is None:
        metrics = {"step": trainer.step, **trainer.run_eval()}
        trainer.writer.close()
    keys = [k for k in metrics if k == name] or [k for k in metrics if k.split("[", 1)[0] == name]
    if not keys:
        from genlab.engine.distributed import AgreedError  # every rank evaluated the same metrics

        raise AgreedError(f"trainer.objective={name} is not among the evaluated metrics "
                          f"({', '.join(k for k in metrics if k != 'step')}); pick one of those")
    direction = "minimize" if better(keys[0]) == "lower" else "maximize"
    return {"metric": keys[0], "value": float(metrics[keys[0]]), "direction": direction}


def log_hparams(trainer, overrides: list[str]) -> None:
    """The run's overrides and final metrics to TensorBoard's HParams tab (compares a sweep's runs)."""
    from genlab.engine.writers import EventWriter

    hparams = {}
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key in ("trainer.resume", "trainer.progress"):
            continue
        try:
            hparams[key] = float(value)
        except ValueError:
            hparams[key] = value
    scores = {k: float(v) for k, v in (trainer.last_eval or {}).items()
              if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}
    metrics = {f"hparams/{k}": v for k, v in {"step": trainer.step, **scores}.items()}
    with EventWriter(trainer.run_dir / "tb") as w:
        w.add_hparams(hparams or {"run": trainer.run_dir.name}, metrics, run_name=".")


def default_evaluator(cfg: DictConfig, data):
    """The sample-based evaluator for trainer.eval_every: trainer.eval_samples samples, cheap metrics."""
    from genlab import data as data_lib
    from genlab.engine.budget import eval_bound
    from genlab.metrics.evaluator import EvalSettings, Evaluator

    t = cfg.trainer
    fd = data_lib.full_dataset(cfg.dataset, data) if data.kind == "image" and data.num_classes else None
    metrics = list(t.eval_metrics) if t.eval_metrics else None
    # A feature network trained on a few images (a smoke test's) is cached apart from the standard one.
    fn = {"limit": t.eval_featurenet_images, "epochs": 1} if t.eval_featurenet_images else {}
    settings = EvalSettings(num_samples=int(eval_bound(t, "samples")), seed=int(cfg.seed), featurenet=fn,
                            reference_limit=t.eval_reference)
    return Evaluator(data, settings, metrics=metrics, featurenet_data=fd)


def _task_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not running under Hydra (tests, API use)
        return []


def run_task(cfg: DictConfig) -> float | None:
    """One Hydra job: train, keep status.json up to date, return the objective (NaN if the job failed)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from genlab.engine import distributed, signals

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    status = RunStatus(Path(hc.runtime.output_dir), list(hc.overrides.task), hc.job.get("num") if multirun else None,
                       enabled=distributed.env_rank() == 0)  # under torchrun, rank 0 keeps the record
    status.write("running")
    try:
        train(cfg, hc.runtime.output_dir, status=status, launcher=hc.launcher if multirun else None)
    except (KeyboardInterrupt, SystemExit, signals.Stopped) as e:  # a signal stops the sweep, not just this job
        if not (isinstance(e, SystemExit) and e.code in (0, None)):
            _record(status, "interrupted", first_line(e) if isinstance(e, signals.Stopped) else "interrupted")
        if isinstance(e, signals.Stopped):
            signals.hand_over(e.signum)  # last.pt is written: now the launcher may requeue (submitit)
        raise
    except Exception as e:  # noqa: BLE001 - every failure is recorded; a sweep goes on with its next job
        _record(status, "failed", first_line(e))
        if not multirun:
            raise
        from genlab.errors import GenlabError

        if not isinstance(e, GenlabError):  # a bug, not a user error: keep its traceback next to the run
            (status.path.parent / "traceback.txt").write_text("".join(traceback.format_exception(e)))
        print(f"genlab: error: job {status.record['job']}: {first_line(e)}", file=sys.stderr)
        return math.nan
    status.write("done")
    return status.objective["value"] if status.objective else None


def _record(status: RunStatus, state: str, error: str) -> None:
    """Record how a job ended; where even that cannot be written (a full disk) the job's own error is the one said."""
    from genlab.errors import GenlabError

    try:
        status.write(state, error)
    except GenlabError:
        pass


@hydra.main(version_base="1.3", config_path="pkg://genlab.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        return run_task(cfg)


if __name__ == "__main__":
    main()
