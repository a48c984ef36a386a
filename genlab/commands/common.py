"""What the commands share: turning user errors into one line, and loading a finished run."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from genlab.errors import GenlabError

if TYPE_CHECKING:  # torch only for a type: the CLI's pre-checks use this module and must answer quickly
    import torch

log = logging.getLogger("genlab")


@contextlib.contextmanager
def user_errors():
    """A GenlabError or failed write becomes one 'genlab: error:' line, exit 2; a stop, its signal's status."""
    from genlab.engine import checkpoint as ckpt
    from genlab.engine import signals

    try:
        yield
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk, a read-only or missing folder: the path and the cause
        where = f"{e.filename}: " if e.filename else ""
        print(f"genlab: error: {where}{ckpt.os_cause(e)}", file=sys.stderr)
        sys.exit(2)
    except signals.Stopped as e:
        print(f"genlab: {e}; continue with: genlab train trainer.resume={Path(e.path).parent.parent}",
              file=sys.stderr)
        sys.exit(e.exit_code)
    except signals.Interrupted as e:  # eval and sample stop at once: their outputs are written at the end
        print(f"genlab: stopped by {e}; nothing more was written", file=sys.stderr)
        sys.exit(signals.EXIT_CODES.get(e.signum, 128 + e.signum))
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        sys.exit(signals.EXIT_CODES.get(signals.requested_signal(), 130))


def check_writable(path: Path | str, what: str, folder: bool = False) -> None:
    """Before any work: `path` (a file, or a folder when folder=True) can be created or written.

    A write is tried in the nearest existing folder (a temporary file, gone at once), since
    permissions alone do not tell a read-only mount or /proc apart from a writable folder."""
    import tempfile

    path = Path(os.path.expanduser(str(path)))
    if path.exists() and (path.is_dir() != folder):
        kind = "a folder" if path.is_dir() else "a file"
        raise GenlabError(f"{what}={path} is {kind}; give a {'folder' if folder else 'file'} path")
    probe = path if folder and path.is_dir() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise GenlabError(f"{what}={path} cannot be created: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
        if path.is_file():
            with open(path, "r+b"):
                pass
    except OSError as e:
        raise GenlabError(f"{what}={path} cannot be written ({probe}: {e.strerror or e})") from None


def sampling_cost(model, n: int, batch_size: int, knob: str = "num_samples") -> str | None:
    """The line said before a slow sampler starts: its cost on this machine, and a smaller request's.

    None for models that sample quickly. The estimate is the model's own (timed network passes)."""
    from genlab import progress

    if not model.slow_sampling or n < 1 or model.sample_seconds(1) is None:
        return None

    def seconds(m: int) -> float:
        full, rest = divmod(m, batch_size)
        return full * model.sample_seconds(batch_size) + (model.sample_seconds(rest) if rest else 0.0)

    where = "GPU" if next(model.parameters()).device.type == "cuda" else "CPU"
    small = max(1, n // 10)
    line = f"sampling {n:,} images from {type(model).__name__}: {progress.duration(seconds(n))} on this {where}"
    if small < n:
        line += f"; {knob}={small} for {progress.duration(seconds(small))}"
    return line


def run_folder(run: str | Path) -> Path:
    """The run folder of run= (a folder, or a .pt file inside its checkpoints/)."""
    p = Path(os.path.expanduser(str(run)))
    if p.is_file():
        return p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return p


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
    from genlab.device import resolve_device
    from genlab.engine.checkpoint import RunRecord, load_model_state

    record = RunRecord.load(run, which)
    if record.spec is None:
        raise GenlabError(f"{record.path} holds no record of its data (spec); use a checkpoint written by genlab")
    cfg = record.config
    model = build_model(cfg, record.spec)
    load_model_state(model, record.state["model"], record.path)
    model.to(resolve_device(device)).eval()
    return LoadedRun(model, cfg, record.spec, record.info, record.path)
