"""Checkpoints that continue a run exactly: networks, optimizers, scalers, counters, RNG states, config.

Written to a temporary file in the same folder and renamed, so a crash never leaves a half-written
last.pt; read with torch.load(weights_only=True), so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError

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


def save(state: dict, path: Path) -> None:
    """Atomically write `state` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def resolve(path_or_run: str | Path, name: str = "last") -> Path:
    """A checkpoint file from a .pt path or a run folder (its checkpoints/<name>.pt)."""
    p = Path(os.path.expanduser(str(path_or_run)))
    if p.is_dir():
        p = p / "checkpoints" / f"{name}.pt"
    if not p.is_file():
        raise GenlabError(f"no checkpoint at {p}; give a run folder that has checkpoints/{name}.pt or a .pt file")
    return p


def load(path: Path) -> dict:
    """Read a checkpoint safely; a corrupt or foreign file is a one-line error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling fails in many ways
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenlabError(f"cannot read checkpoint {path}: it is corrupt, truncated or not a genlab checkpoint ({msg[:160]})") from None
    if not isinstance(state, dict) or "format" not in state or "model" not in state:
        raise GenlabError(f"{path} is not a genlab checkpoint (no model state in it)")
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict, path) -> None:
    """Load weights strictly, turning a mismatch into one line that names what differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise GenlabError(f"checkpoint {path} does not match this model/config ({'; '.join(parts)}); "
                          "use the same model and dataset settings as the run that wrote it")
    model.load_state_dict(state_dict)
