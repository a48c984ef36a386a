"""What the commands share: turning user errors into one line, and loading a finished run."""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from genlab.errors import GenlabError

log = logging.getLogger("genlab")


@contextlib.contextmanager
def user_errors():
    """Inside a command: a GenlabError becomes one 'genlab: error: ...' line on stderr and exit status 2."""
    try:
        yield
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        sys.exit(130)


@dataclass
class LoadedRun:
    """A trained model rebuilt from its run folder alone."""

    model: torch.nn.Module
    cfg: DictConfig
    spec: object
    info: dict
    path: Path


def load_run(run: str, which: str = "last", device: str = "auto") -> LoadedRun:
    """Rebuild the model of a run folder (or .pt) from its checkpoint's config and weights."""
    from genlab.config import build_model
    from genlab.data import Spec
    from genlab.device import resolve_device
    from genlab.engine import checkpoint as ckpt

    path = ckpt.resolve(run, which)
    state = ckpt.load(path)
    cfg = OmegaConf.create(state["config"])
    s = state["spec"]
    spec = Spec(s["kind"], tuple(s["shape"]), s["num_classes"], s.get("binarized", False))
    model = build_model(cfg, spec)
    ckpt.load_model_state(model, state["model"], path)
    model.to(resolve_device(device)).eval()
    return LoadedRun(model, cfg, spec, {**s, "step": state["step"]}, path)
