"""Checkpoints that continue a run exactly: networks, optimizers, scalers, counters, RNG states, config.

Written to a temporary file in the same folder and renamed, so a crash never leaves a half-written
last.pt; read with torch.load(weights_only=True), so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import random
import uuid
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError
from genlab.runpath import resolve  # noqa: F401 - checkpoint.resolve, re-exported
from genlab.types import Spec

FORMAT = 1


def rng_state() -> dict:
    """Python, numpy, torch and CUDA generator states in weights_only-loadable types."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() captured."""
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


TMP_GLOB = "*.pt.*.tmp"
NOT_OURS = "it is corrupt, truncated or not a genlab checkpoint; use checkpoints/last.pt of a genlab run"


def save(state: dict, path: Path) -> None:
    """Atomically write `state` to `path`; a failed write is one line and leaves the old file intact."""
    path = Path(path)
    tmp = path.parent / f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(path.parent)
        # 0o666 less the umask, like every other file of the run (mkstemp would make it 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        # torch's zip writer turns a full disk into RuntimeError("unexpected pos ...") raised while
        # handling the OSError: the OSError is the cause.
        cause = e if isinstance(e, OSError) else e.__context__ if isinstance(e.__context__, OSError) else None
        if cause is not None:
            raise GenlabError(f"cannot write checkpoint {path}: {os_cause(cause)}; "
                              f"the previous {path.name} (if any) is kept") from None
        raise


def os_cause(e: OSError) -> str:
    """'No space left on device (free some disk space)': the cause and what to do, from an OSError."""
    cause = e.strerror or str(e)
    hints = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk quota",
             errno.EROFS: "write to another folder", errno.EACCES: "check the folder's permissions",
             errno.ENOTDIR: "a parent of it is a file, not a folder"}
    return cause + (f" ({hints[e.errno]})" if e.errno in hints else "")


def remove_stale_tmp(folder: Path) -> list[Path]:
    """Delete temporary checkpoint files a killed writer left in `folder`; returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(TMP_GLOB):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def load(path: Path) -> dict:
    """Read a checkpoint safely; a corrupt or foreign file is a one-line error."""
    from genlab import safeio

    state = safeio.load_tensors(path, "checkpoint", corrupt=NOT_OURS, advice="; use a checkpoint written by genlab")
    if not isinstance(state, dict) or "format" not in state or "model" not in state:
        raise GenlabError(f"{path} is not a genlab checkpoint (no model state in it)")
    return state


def model_mismatch(model: torch.nn.Module, state_dict: dict) -> str | None:
    """What differs between a model's weights and a checkpoint's (names, shapes), or None."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}")
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
    return "; ".join(parts) or None


def load_model_state(model: torch.nn.Module, state_dict: dict, path) -> None:
    """Load weights strictly, turning a mismatch into one line that names what differs."""
    problem = model_mismatch(model, state_dict)
    if problem:
        raise GenlabError(f"checkpoint {path} does not match this model/config ({problem}); "
                          "use the same model and dataset settings as the run that wrote it")
    model.load_state_dict(state_dict)


def describe_run(cfg, data) -> dict:
    """The run record a checkpoint carries (written once, by the trainer): the composed config, the
    data Spec the model was sized for (every field, domains included) and what visuals and `genlab
    sample` need of the data (extent, class names)."""
    from omegaconf import OmegaConf

    spec = dataclasses.asdict(data.spec)
    spec["shape"] = list(spec["shape"])
    return {"config": OmegaConf.to_container(cfg, resolve=True),
            "spec": {**spec, "extent": data.extent, "class_names": data.class_names}}


@dataclasses.dataclass
class RunRecord:
    """A checkpoint read once: its state, config, data Spec, data description and step.

    train (resume), sample, eval, preflight and the CLI's resume expansion all read a checkpoint
    through RunRecord.load, which keeps the last file it read: a resume reads last.pt once."""

    path: Path
    state: dict
    spec: Spec | None  # None for a checkpoint without a record of its data (never written by genlab)
    info: dict  # the data description (extent, class_names, ...) and the step

    @property
    def config(self):
        from omegaconf import OmegaConf

        return OmegaConf.create(self.state.get("config") or {})

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @classmethod
    def load(cls, run, which: str = "last") -> "RunRecord":
        """The record of a run folder's checkpoints/<which>.pt (or a .pt file); read from disk once per version."""
        path = resolve(run, which)
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        if _LAST.get("key") != key:
            _LAST.clear()
            _LAST.update(key=key, record=cls.from_state(load(path), path))
        return _LAST["record"]

    @classmethod
    def take(cls, run, which: str = "last") -> "RunRecord":
        """RunRecord.load for a caller that resumes from the state: the optimizers' tensors it loads alias
        the record's and move on with training, so the record is forgotten (a later load reads the file)."""
        record = cls.load(run, which)
        _LAST.clear()
        return record

    @classmethod
    def from_state(cls, state: dict, path) -> "RunRecord":
        """The record of a loaded checkpoint state."""
        s = dict(state.get("spec") or {})
        names = {f.name for f in dataclasses.fields(Spec)}
        spec = None
        if s:
            spec = Spec(**{k: v for k, v in s.items() if k in names})
            spec.shape = tuple(spec.shape)
        info = {k: v for k, v in s.items() if k not in names}
        return cls(Path(path), state, spec, {**info, "step": int(state["step"])})


_LAST: dict = {}  # RunRecord.load's last file: its (path, mtime, size) and record
