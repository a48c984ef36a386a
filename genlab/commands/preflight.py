"""Pre-flight: every check that can fail before training, run before Hydra makes any folder.

`genlab train` (each value of a sweep included) checks the device, the dataset's files, the
optimizer's arguments, the checkpoint given to trainer.resume and that the run folder can be
made. Each is cheap (files are found, not loaded), so a bad value fails in about a second with one
line, and a sweep never trains job 0 before finding that job 1 cannot start.
"""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf

from genlab.commands.common import check_writable
from genlab.errors import GenlabError


class Preflight:
    """Checks for the train configs of one command line; remembers what it already checked."""

    def __init__(self, multirun: bool = False):
        self.multirun = multirun
        self.done: set[str] = set()

    def _once(self, key: str) -> bool:
        if key in self.done:
            return False
        self.done.add(key)
        return True

    def train(self, cfg: DictConfig) -> None:
        """Raise GenlabError for the first thing that would stop this run after its folder exists."""
        from genlab import data
        from genlab.device import resolve_device

        resolve_device(cfg.trainer.device)
        check_metrics(cfg.trainer.eval_metrics if cfg.trainer.eval_every or cfg.trainer.eval_every_time else None)
        if self._once("optimizer:" + OmegaConf.to_yaml(cfg.optimizer, resolve=True)):
            check_optimizer(cfg.optimizer)
        if self._once("dataset:" + OmegaConf.to_yaml(cfg.dataset, resolve=True)):
            data.check(cfg.dataset)
        if cfg.trainer.resume and cfg.trainer.resume != "auto":  # auto: the job's own folder, checked when it runs
            check_resume(cfg)
        self.output(cfg)

    def output(self, cfg: DictConfig) -> None:
        """The run folder (hydra.run.dir, or hydra.sweep.dir for -m) can be made and written."""
        hydra = cfg.get("hydra")
        if hydra is None:
            return
        key = "hydra.sweep.dir" if self.multirun else "hydra.run.dir"
        try:
            folder = OmegaConf.select(cfg, key)
        except Exception:  # noqa: BLE001 - interpolations only Hydra's runtime can resolve
            return
        if folder and self._once("out:" + str(folder)):
            check_writable(folder, key, folder=True)


def check_metrics(metrics) -> None:
    """Every requested metric name exists."""
    from genlab.metrics.table import metric

    for m in metrics or []:
        metric(m)


# Settings of `genlab sample` / `genlab eval` that must be whole numbers (>= the bound); None = optional.
COUNTS = {
    "sample": {"num_samples": 1, "batch_size": 1, "nrow": 1, "path_length": 2, "steps": 1, "seed": None, "prior_components": 1},
    "eval": {"num_samples": 2, "batch_size": 1, "steps": 1, "seed": None},
}


def check_counts(command: str, cfg: DictConfig) -> None:
    """Counts given to sample/eval (which have no typed schema) are integers within bounds."""
    for key, low in COUNTS.get(command, {}).items():
        v = cfg.get(key)
        if v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool):
            raise GenlabError(f"{key} must be a whole number, got {v!r}")
        if low is not None and v < low:
            raise GenlabError(f"{key} must be >= {low}, got {v}")


def check_optimizer(opt_cfg) -> None:
    """The optimizer accepts its arguments (names and values), tried on a one-element parameter."""
    import torch

    from genlab.engine.trainer import build_optimizer

    names = ["network", *(opt_cfg.get("per_network") or {})]
    for name in names:
        build_optimizer(opt_cfg, [torch.zeros(1, requires_grad=True)], name)


def check_resume(cfg: DictConfig) -> None:
    """The checkpoint of trainer.resume was written by this model, on data of this shape."""
    from genlab.config import model_class, typed_model_config
    from genlab.data import expected_spec
    from genlab.engine import checkpoint as ckpt

    record = ckpt.RunRecord.load(cfg.trainer.resume)
    path, state = record.path, record.state
    old = state.get("config") or {}
    old_model = (old.get("model") or {}).get("name")
    if old_model is not None and old_model != cfg.model.get("name"):
        raise GenlabError(f"trainer.resume={cfg.trainer.resume}: that checkpoint is of model={old_model}, this run "
                          f"is model={cfg.model.get('name')}; resume with the same model")
    old_opt = (old.get("optimizer") or {}).get("_target_")
    if old_opt is not None and old_opt != cfg.optimizer._target_:
        raise GenlabError(f"trainer.resume={cfg.trainer.resume}: that run used {old_opt}, this one "
                          f"{cfg.optimizer._target_}; resume with the same optimizer")
    spec, old = expected_spec(cfg.dataset), record.spec
    # A folder's classes are its subfolders: known only once listed, so taken from the checkpoint.
    if old is not None:
        same_classes = spec.num_classes is None or spec.num_classes == old.num_classes
        if (old.kind, old.shape, old.domains) != (spec.kind, spec.shape, spec.domains) or not same_classes:
            raise GenlabError(f"trainer.resume={cfg.trainer.resume}: that run trained on "
                              f"{_data(old.kind, old.shape, old.num_classes)}, this dataset gives "
                              f"{_data(spec.kind, spec.shape, spec.num_classes)}; resume with the same dataset settings")
        spec = dataclasses.replace(spec, num_classes=old.num_classes)
    model = model_class(cfg)(typed_model_config(cfg), spec)
    problem = ckpt.model_mismatch(model, state["model"])
    if problem:
        raise GenlabError(f"trainer.resume={cfg.trainer.resume}: checkpoint {path} does not match this model/config "
                          f"({problem}); resume with the same model and dataset settings")
    from genlab.config import config_key

    _CHECKED_MODELS.clear()  # the one this command line will resume (its weights come from the checkpoint)
    _CHECKED_MODELS[(str(path), config_key(cfg))] = (spec, model)


# The model check_resume built to compare with its checkpoint, handed to the job that resumes it (whose
# weights, buffers and RNG states all come from that checkpoint), so the model is built once.
_CHECKED_MODELS: dict[tuple[str, str], tuple] = {}


def checked_model(cfg: DictConfig, path, spec):
    """The model check_resume built for this config, checkpoint and data spec (taken), or None."""
    from genlab.config import config_key

    hit = _CHECKED_MODELS.pop((str(path), config_key(cfg)), None)
    return hit[1] if hit is not None and hit[0] == spec else None


def _data(kind, shape, classes) -> str:
    return f"{kind} of shape {tuple(shape)}" + (f" with {classes} classes" if classes else "")
