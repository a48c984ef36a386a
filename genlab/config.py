"""Config schemas (Hydra ConfigStore) and the semantic checks that run before anything is built.

Types of the trainer/dataset/optimizer groups are checked by Hydra at compose time through the
dataclasses below. Each model class carries its own `Config` dataclass: `validate` merges the
composed `model` node into it, so a misspelt or mistyped model option fails the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from genlab.data.schema import DatasetConfig
from genlab.errors import GenlabError

__all__ = ["DatasetConfig", "active_recipe", "TrainConfig", "attach_first_stage", "build_model", "model_class", "register_configs", "typed_model_config",
           "validate"]


@dataclass
class EvalCaps:
    """Upper bounds a model file puts on its periodic evaluation (null = none): the smaller of the cap and
    trainer.eval_samples / eval_nll_images / eval_nll_k applies, so trainer=debug's bounds still hold."""

    samples: Optional[int] = None
    nll_images: Optional[int] = None
    nll_k: Optional[int] = None


@dataclass
class TrainerConfig:
    max_steps: int = 10000
    batch_size: int = 64
    device: str = "auto"
    precision: str = "32"
    grad_clip: Optional[float] = None
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    eval_every: int = 0
    eval_samples: int = 1000
    eval_metrics: Optional[list[str]] = None
    eval_reference: Optional[int] = None
    eval_nll_images: Optional[int] = None
    eval_nll_k: Optional[int] = None
    eval_caps: EvalCaps = field(default_factory=EvalCaps)
    eval_featurenet_images: Optional[int] = None
    slow_sample_images: Optional[int] = None
    sample_steps: Optional[int] = None
    best_metric: Optional[str] = None
    best_mode: str = "min"
    num_fixed_samples: int = 64
    resume: Optional[str] = None
    progress: bool = True
    deterministic: bool = False
    num_threads: Optional[int] = None
    max_time: Optional[str] = None
    max_time_clock: str = "wall"
    eval_every_time: Optional[str] = None
    checkpoint_every_time: Optional[str] = None
    objective: Optional[str] = None
    compile: bool = False
    channels_last: bool = False
    sync_batchnorm: bool = False
    recipe: str = "auto"


@dataclass
class OptimizerConfig:
    name: str = "adam"  # the group option: which entry of `paper` applies
    _target_: str = "torch.optim.Adam"
    lr: float = 2e-4
    betas: Optional[list[float]] = None
    eps: Optional[float] = None
    weight_decay: float = 0.0
    momentum: Optional[float] = None
    alpha: Optional[float] = None
    # per-network overrides, e.g. {discriminator: {lr: 4e-4}} for the two-timescale rule
    per_network: dict[str, Any] = field(default_factory=dict)
    # a model's paper settings keyed by optimizer name ({adam: {lr: 1e-4, betas: [0, 0.9]}}): each
    # optimizer/*.yaml reads its own entry, so optimizer=sgd never receives Adam's betas; its
    # per_network entry is applied by the trainer under optimizer.per_network
    paper: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    model: Any = field(default_factory=dict)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0


RECIPES = ("auto", "paper", "cpu")


def active_recipe(trainer) -> str:
    """paper or cpu: trainer.recipe, where auto is cpu when the run's device is the CPU (the papers'
    recipes on an accelerator, one that learns fast per CPU-second on a laptop; docs/fast-feedback.md)."""
    recipe, device = str(trainer.recipe), str(trainer.device)
    if recipe != "auto":
        return recipe
    if device == "auto":
        import torch

        return "paper" if torch.cuda.is_available() else "cpu"
    return "cpu" if device == "cpu" else "paper"


def _cpu_recipe_applies(root) -> bool:
    """Whether a model file's ${recipe:...} values take their CPU side: trainer.recipe resolves to cpu and
    the data are images (point data's networks are CPU-sized in every recipe, so they keep the paper's)."""
    trainer, dataset = root.get("trainer"), root.get("dataset")
    if trainer is None or trainer.get("recipe") is None or dataset is None or not dataset.get("_target_"):
        return False
    recipe = active_recipe(trainer)
    if recipe not in ("paper", "cpu"):
        raise GenlabError(f"trainer.recipe must be one of {', '.join(RECIPES)}; got {trainer.recipe}")
    if recipe == "paper":
        return False
    from genlab.data import expected_spec

    return expected_spec(dataset).kind == "image"


def _recipe_value(paper, cpu, *, _root_):
    """${recipe:PAPER,CPU} in a model file: the paper's value, or the CPU recipe's (trainer.recipe)."""
    return cpu if _cpu_recipe_applies(_root_) else paper


def _recipe_mlp_value(paper, cpu, *, _parent_, _root_):
    """${recipe_mlp:PAPER,CPU} in a network's settings: the CPU recipe's value only where that network
    is an MLP (model.generator.arch=conv on a CPU then takes no MLP widths it would reject)."""
    return cpu if _parent_.get("arch") == "mlp" and _cpu_recipe_applies(_root_) else paper


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("recipe"):
        OmegaConf.register_new_resolver("recipe", _recipe_value)
        OmegaConf.register_new_resolver("recipe_mlp", _recipe_mlp_value)


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore and genlab's resolvers into OmegaConf (idempotent)."""
    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)


PRECISIONS = ("32", "bf16", "16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def model_class(cfg: DictConfig):
    """The Model class named by cfg.model._target_."""
    from hydra.utils import get_class

    target = cfg.model.get("_target_")
    if not target:
        raise GenlabError("the model config has no _target_; pick one with model=<name>")
    try:
        return get_class(target)
    except Exception as e:  # noqa: BLE001 - any import failure is a config error here
        raise GenlabError(f"model._target_={target} cannot be imported ({e})") from None


def typed_model_config(cfg: DictConfig) -> DictConfig:
    """cfg.model merged into its class's Config dataclass: unknown keys and wrong types fail here."""
    cls = model_class(cfg)
    schema = OmegaConf.structured(cls.Config)
    node = OmegaConf.to_container(cfg.model, resolve=True)
    node.pop("_target_", None)
    try:
        return OmegaConf.merge(schema, node)
    except OmegaConfBaseException as e:
        raise GenlabError(f"model.{_omegaconf_message(e)}") from None


def build_model(cfg: DictConfig, spec):
    """The model named by cfg.model._target_, with its typed config, sized for `spec`."""
    return model_class(cfg)(typed_model_config(cfg), spec)


def attach_first_stage(cfg: DictConfig, planned: DictConfig | None = None) -> dict | None:
    """For a model trained on another run's model (first_stage_key, e.g. a VQ-VAE's prior): check that
    run holds the right model on data of this shape, copy its model config into cfg.model (so this run's
    folder rebuilds the whole model by itself) and return its weights; None for every other model.

    `planned`: the first stage's model config when that run does not exist yet (genlab zoo checks a
    two-stage row before training its first stage); it is copied in and no weights are returned."""
    cls = model_class(cfg)
    key = cls.first_stage_key
    if key is None:
        return None
    if planned is not None:
        with open_dict(cfg):
            cfg.model[cls.first_stage_config] = planned
        return None
    where = cfg.model.get(key)
    if not where:
        raise GenlabError(f"model={cfg.model.get('name')} needs model.{key}: the run folder of a trained "
                          f"{cls.first_stage_model.__name__} (genlab train model={cls.first_stage_model.Config.name})")
    from genlab.data import expected_spec
    from genlab.engine import checkpoint as ckpt

    state = ckpt.load(ckpt.resolve(where))
    first = OmegaConf.create(state.get("config") or {})
    try:
        first_cls = model_class(first)
    except GenlabError:
        first_cls = None
    if first_cls is None or not issubclass(first_cls, cls.first_stage_model):
        name = OmegaConf.select(first, "model.name", default="unknown")
        raise GenlabError(f"model.{key}={where} is a run of model={name}, not a {cls.first_stage_model.__name__}; "
                          f"give the folder of a run of genlab train model={cls.first_stage_model.Config.name}")
    spec, s = expected_spec(cfg.dataset), state.get("spec") or {}
    if (s.get("kind"), tuple(s.get("shape", ()))) != (spec.kind, tuple(spec.shape)):
        raise GenlabError(f"model.{key}={where} was trained on {s.get('kind')} of shape {tuple(s.get('shape', ()))}, "
                          f"this dataset gives {spec.kind} of shape {tuple(spec.shape)}; use the same dataset settings")
    with open_dict(cfg):
        cfg.model[cls.first_stage_config] = first.model
    return state["model"]


def _omegaconf_message(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or ""
    first = str(e).strip().splitlines()[0]
    return f"{key}: {first}" if key else first


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise GenlabError(msg)


_VALIDATED: dict[str, DictConfig] = {}  # validate's results in this process, by the config they checked


def config_key(cfg: DictConfig) -> str:
    """The content of a train config's model, dataset, optimizer, trainer and seed as written, with the
    environment its interpolations read (GENLAB_*): equal keys resolve to equal runs. Unresolved, because
    resolving the interpolations costs more than the checks it would save."""
    import json
    import os

    parts = {k: OmegaConf.to_container(cfg[k], resolve=False) if isinstance(cfg[k], DictConfig) else cfg[k]
             for k in ("model", "dataset", "optimizer", "trainer", "seed") if k in cfg}
    parts["env"] = sorted((k, v) for k, v in os.environ.items() if k.startswith("GENLAB_"))
    return json.dumps(parts, sort_keys=True, default=str)


def validate(cfg: DictConfig, planned_first_stage: DictConfig | None = None) -> DictConfig:
    """Semantic checks on a composed train config; returns the typed model config.

    The CLI validates every config before Hydra's job starts and the job validates its own: the second
    call of the same content is handed the first's result (a model trained on another run's model, whose
    validation copies that run's config in, is validated each time). `planned_first_stage`: see
    attach_first_stage."""
    import copy

    _check_settings(cfg)  # the trainer's and optimizer's values first: a bad one fails before any other work
    key = config_key(cfg)
    if key in _VALIDATED:  # only results of models without a first stage are kept
        mcfg = copy.deepcopy(_VALIDATED[key])
    else:
        mcfg = _validate(cfg, planned_first_stage)
        if model_class(cfg).first_stage_key is None:
            if len(_VALIDATED) > 256:  # a long-lived process (tests, a notebook) keeps the recent ones
                _VALIDATED.clear()
            _VALIDATED[key] = copy.deepcopy(mcfg)
    with open_dict(cfg):  # the run record names the recipe its values came from, not "auto"
        cfg.trainer.recipe = active_recipe(cfg.trainer)
    return mcfg


_PLAIN = re.compile(r"[\w.+-]*")  # a value Hydra and YAML read alike: no quotes, lists, sweeps or interpolations


def check_given_settings(overrides: list[str]) -> None:
    """The trainer.* values given on the command line, each checked on its own before anything is composed.

    A command-line override is the value the run gets whatever the config files say, so a value that fails
    a check of its own (trainer.max_steps=-1, trainer.max_time=abc) fails here with the message validate()
    would give after composing, in a fraction of the time. Checks between two values, and values that are
    not plain scalars (sweeps, interpolations, lists) or do not fit the schema, are left to validate()."""
    import yaml

    t = None
    for o in overrides:
        key, sep, value = o.partition("=")
        if not sep or not key.startswith("trainer.") or not _PLAIN.fullmatch(value):
            continue
        if t is None:
            t = OmegaConf.structured(TrainerConfig)
        try:
            OmegaConf.update(t, key[len("trainer."):], yaml.safe_load(value), merge=True)
        except (OmegaConfBaseException, yaml.YAMLError):
            return  # a key or type the schema does not take: Hydra's composition names it
    if t is not None:
        _check_settings(OmegaConf.create({"trainer": t, "optimizer": {"lr": 1.0}}), alone=True)


def _check_settings(cfg: DictConfig, alone: bool = False) -> None:
    """The trainer's and the optimizer's values (cheap: no model, no data).

    alone: only the checks of one value each (check_given_settings: the others are the schema's defaults,
    not the run's values)."""
    t = cfg.trainer
    _check(str(t.recipe) in RECIPES, f"trainer.recipe must be one of {', '.join(RECIPES)}; got {t.recipe}")
    _check(t.max_steps >= 0, f"trainer.max_steps must be >= 0, got {t.max_steps}")
    _check(t.batch_size >= 1, f"trainer.batch_size must be >= 1, got {t.batch_size}")
    _check(str(t.precision) in PRECISIONS,
           f"trainer.precision must be one of 32, bf16, 16; got {t.precision}")
    _check(bool(_DEVICE.match(str(t.device))),
           f"trainer.device must be auto, cpu, cuda or cuda:N; got {t.device}")
    for k in ("log_every", "sample_every", "checkpoint_every", "eval_every"):
        _check(t[k] >= 0, f"trainer.{k} must be >= 0 (0 turns it off), got {t[k]}")
    _check(t.best_mode in ("min", "max"), f"trainer.best_mode must be min or max, got {t.best_mode}")
    _check(alone or not t.best_metric or t.eval_every > 0,
           f"trainer.best_metric={t.best_metric} needs trainer.eval_every > 0 (evaluation makes the metric)")
    _check(t.eval_samples >= 2, f"trainer.eval_samples must be >= 2, got {t.eval_samples}")
    for k in ("eval_reference", "eval_nll_images", "eval_nll_k", "eval_featurenet_images"):
        _check(t[k] is None or t[k] >= 1, f"trainer.{k} must be >= 1 (or null for no bound), got {t[k]}")
    for k, v in t.eval_caps.items():
        _check(v is None or v >= (2 if k == "samples" else 1),
               f"trainer.eval_caps.{k} must be >= {2 if k == 'samples' else 1} (or null for no cap), got {v}")
    _check(t.slow_sample_images is None or t.slow_sample_images >= 0,
           f"trainer.slow_sample_images must be >= 0 (0 = no grids for slow samplers), got {t.slow_sample_images}")
    _check(t.sample_steps is None or t.sample_steps >= 1,
           f"trainer.sample_steps must be >= 1 (or null for the model's own), got {t.sample_steps}")
    _check(t.num_threads is None or t.num_threads >= 1, f"trainer.num_threads must be >= 1, got {t.num_threads}")
    _check(t.grad_clip is None or t.grad_clip > 0, f"trainer.grad_clip must be > 0, got {t.grad_clip}")
    from genlab.engine.budget import parse_duration
    from genlab.metrics.table import better

    for k in ("max_time", "eval_every_time", "checkpoint_every_time"):
        parse_duration(t.get(k), f"trainer.{k}")
    _check(t.max_time_clock in ("wall", "cpu"), f"trainer.max_time_clock must be wall or cpu, got {t.max_time_clock}")
    _check(not t.objective or better(t.objective) in ("lower", "higher"),
           f"trainer.objective={t.objective} is not a metric with a direction; use e.g. fid, modes, high_quality, "
           "test_bits_per_dim")
    if alone:
        return
    _check(not (t.sync_batchnorm and str(t.device) == "cpu"),
           "trainer.sync_batchnorm=true needs CUDA devices (SyncBatchNorm has no CPU kernel); leave it false on CPU")
    _check(cfg.optimizer.lr > 0, f"optimizer.lr must be > 0, got {cfg.optimizer.lr}")
    for name, over in (cfg.optimizer.per_network or {}).items():
        lr = over.get("lr") if over is not None else None
        _check(lr is None or lr > 0, f"optimizer.per_network.{name}.lr must be > 0, got {lr}")


def _validate(cfg: DictConfig, planned_first_stage: DictConfig | None = None) -> DictConfig:
    """The checks of validate after _check_settings: the dataset's and the model's."""
    t = cfg.trainer
    from genlab.data import expected_spec, sized

    spec = expected_spec(cfg.dataset)
    if not sized(cfg.dataset):  # n_train/n_test size generated data (the toy mixtures, stacked); files would ignore them
        for key, hint in (("n_train", "dataset.limit={} (the first {} training examples)"),
                          ("n_test", "the dataset's own test split (its size is fixed)")):
            value, default = cfg.dataset.get(key), getattr(DatasetConfig, key)
            _check(value is None or value == default,
                   f"dataset.{key}={value} sizes generated datasets (grid25, ring8, stacked_*); {cfg.dataset.name} "
                   "is read from files: use " + hint.format(value, value))
    attach_first_stage(cfg, planned_first_stage)
    mcfg = typed_model_config(cfg)
    cls = model_class(cfg)
    problem = cls.check(mcfg, spec)
    _check(problem is None, f"{problem}")
    _check(not (cls.translates and (t.eval_every or t.eval_every_time)),
           f"model {cfg.model.name} translates images between two domains: there are no samples for "
           "trainer.eval_every / trainer.eval_every_time to score; set trainer.eval_every=0 trainer.eval_every_time=null "
           "(genlab sample run=DIR input=test translates test images)")
    pack = int(mcfg.get("pack", 1) or 1)  # PacGAN: D's batch is trainer.batch_size / model.pack packs
    _check(t.batch_size % pack == 0, f"model.pack={pack} needs trainer.batch_size divisible by it, got "
           f"{t.batch_size}; e.g. trainer.batch_size={t.batch_size // pack * pack or pack}")
    return mcfg


register_resolvers()  # a config read back from a run folder resolves without register_configs()
