"""The Model contract: networks plus an ordered schedule of optimisation steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from genlab.types import Batch, Spec, Step, StepContext

def scalar_settings(cfg):
    """A plain-Python copy of cfg's scalar settings (numbers, strings, None): what the per-update code of
    a model reads. An OmegaConf attribute read costs about 10 us; a WGAN-GP update read ~12 of them."""
    from types import SimpleNamespace

    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return cfg
    node = OmegaConf.to_container(cfg, resolve=True)
    return SimpleNamespace(**{k: v for k, v in node.items() if not isinstance(v, (dict, list))})


# Batch, Step and StepContext live in genlab.types; imported from here by the model modules.
__all__ = ["Batch", "Model", "ModelConfig", "NetConfig", "Spec", "Step", "StepContext", "conv_size_problem"]


@dataclass
class ModelConfig:
    """The options of a model that declares none of its own."""

    name: str = "model"


class Model(nn.Module):
    """Base class for every genlab model.

    Subclasses build their networks in __init__ from (cfg, spec) and implement `networks`,
    `schedule` and `sample`. The trainer owns optimizers (one per key of `networks()`), precision,
    logging and checkpoints; the model owns the objective.
    """

    #: 'adversarial' or 'likelihood'; decides which metrics make sense.
    family: str = "adversarial"
    #: whether sample() accepts labels
    conditional: bool = False
    #: sampling is too slow for the trainer's periodic sample-based metrics (autoregressive models)
    slow_sampling: bool = False
    #: some step leaves part of the network it updates unused (DDP must then search the graph each step)
    ddp_find_unused: bool = False
    #: translates images between two domains (`translate(x, direction)`) rather than sampling noise
    translates: bool = False
    #: sample() takes a `temperature` (flows, VAEs, autoregressive models)
    accepts_temperature: bool = False
    #: an auto-encoder: codes(x) gives the latent codes of data and decode(z) data again, so an ex-post
    #: prior can be fitted to the codes (genlab sample prior=gmm)
    encodes: bool = False
    #: the sampler settings sample() takes (`genlab sample steps= eta= guidance=`): diffusion models
    sample_options: tuple = ()
    #: the trainer's cap on sampling steps around its periodic pictures and evaluation (None: no cap)
    steps_bound: int | None = None
    #: the typed options (model.*); config.py merges the composed model node into it
    Config = ModelConfig
    #: a model trained on another run's model (a VQ-VAE's prior) names the config key of that run;
    #: config.py then checks it holds a `first_stage_model`, copies its model config into
    #: model.<first_stage_config> and the train command hands its weights to `load_first_stage`
    first_stage_key: str | None = None
    first_stage_model: type | None = None
    first_stage_config: str | None = None

    @classmethod
    def check(cls, cfg, spec: Spec) -> str | None:
        """Why cfg cannot work on data of this spec (None if it can); runs before any data is loaded."""
        return None

    def __init__(self, cfg, spec):
        super().__init__()
        self.cfg = cfg
        self.spec = spec
        self.hot = scalar_settings(cfg)

    def load_first_stage(self, state: dict) -> None:
        """Take the weights (a checkpoint's model state) of the run named by first_stage_key."""
        raise NotImplementedError

    def networks(self) -> dict[str, nn.Module]:
        """Optimizer key -> module whose parameters that optimizer updates."""
        raise NotImplementedError

    def compile_targets(self) -> dict[str, nn.Module]:
        """The modules trainer.compile=true compiles in place; a model leaves out what torch.compile cannot run."""
        return {k: m for k, m in self.networks().items() if m is not self}

    def optimizer_ratio(self, key: str) -> float:
        """c in (0, 1]: the trainer runs this network's optimizer at lr * c and betas ** c (StyleGAN2's
        rule for a network that also takes lazy regularisation updates); 1 = as configured."""
        return 1.0

    def schedule(self) -> list[Step]:
        """The ordered steps of one trainer step (one generator update for GANs)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """n samples in data space ([-1, 1] images (n,C,H,W) or points (n,D))."""
        raise NotImplementedError

    def sampling_problem(self, **options) -> str | None:
        """Why these sampler settings (None = not given) cannot work on this model (None if they can)."""
        given = [k for k, v in options.items() if v is not None and k not in self.sample_options]
        if given:
            return (f"{given[0]}= sets a diffusion sampler; {self.cfg.name} does not sample in steps (the images "
                    "per row of mode=interp/traverse are path_length=)" if not self.sample_options
                    else f"{given[0]}= does not apply to {self.cfg.name}; its sampler takes {', '.join(self.sample_options)}")
        return None

    def sample_seconds(self, n: int) -> float | None:
        """An estimate of sample(n)'s seconds on this machine, for a slow sampler's cost line (None: fast)."""
        return None

    def latent_shape(self) -> tuple | None:
        """The shape of one standard-normal latent that sample(noise=...) takes; None: no latent input."""
        return None

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """A latent batch for fixed-noise grids and interpolation; None if the model has no latent input."""
        shape = self.latent_shape()
        if shape is None:
            return None
        dev = generator.device if generator is not None else self.parameter_device()
        return torch.randn(n, *shape, generator=generator, device=dev)

    def parameter_device(self) -> torch.device:
        """The device of the model's parameters, looked up once per move (a walk over the modules per
        latent batch was a measurable part of a small GAN's update)."""
        dev = self.__dict__.get("_parameter_device")
        if dev is None:
            dev = self.__dict__["_parameter_device"] = next(self.parameters()).device
        return dev

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .cpu(), ...: the parameters may have moved
        self.__dict__.pop("_parameter_device", None)
        return super()._apply(fn, *args, **kwargs)

    @torch.no_grad()
    def visuals(self, fixed: dict, data) -> dict[str, torch.Tensor]:
        """Named images (float in [0, 1], (C,H,W)) for TensorBoard; the first one is saved under samples/."""
        from genlab import viz

        x = self.sample(fixed["n"], noise=fixed.get("noise"), labels=fixed.get("labels"),
                        generator=fixed.get("generator"))
        if data.kind == "points":
            return {"samples": viz.scatter(x, data.test_x[:2000], extent=data.extent)}
        return {"samples": viz.grid(x, nrow=fixed.get("nrow"))}

    @torch.no_grad()
    def evaluate(self, data, *, limit: int | None = None, k: int | None = None, on_batch=None) -> dict[str, float]:
        """Held-out metrics the model can compute itself (e.g. test NLL); {} for GANs.

        limit: test examples to use, k: importance samples of an estimated NLL; None = the model's own setting;
        on_batch: called with the number of test examples done after each batch.
        """
        return {}


@dataclass
class NetConfig:
    """Architecture options; `arch: auto` is the MLP family for points and the conv family for images."""

    arch: str = "auto"
    hidden: int = 256
    depth: int = 3
    widths: Optional[list[int]] = None  # MLP: one hidden layer per entry (replaces hidden x depth)
    base_channels: int = 64
    norm: str = "batch"
    spectral_norm: bool = False
    pieces: int = 1  # maxout pieces of an MLP's hidden units (1 = the usual activation)


def conv_size_problem(shape) -> str | None:
    """Why the conv families cannot handle this image shape (None if they can)."""
    c, h, w = shape
    if h != w:
        return f"images must be square for the conv networks, got {h}x{w}; set dataset.image_size"
    s, n = h, 0
    while s % 2 == 0 and s >= 8:
        s, n = s // 2, n + 1
    if n < 2 or s > 8:
        return (f"image size {h} is not supported by the conv networks (it must halve at least twice to a "
                f"size between 3 and 7, e.g. 28, 32, 48, 64); set dataset.image_size")
    return None
