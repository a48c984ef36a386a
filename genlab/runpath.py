"""Which checkpoint a run folder names: without torch, so the CLI says a wrong run= in a tenth of a second."""

from __future__ import annotations

import os
from pathlib import Path

from genlab.errors import GenlabError


def resolve(path_or_run: str | Path, name: str = "last") -> Path:
    """A checkpoint file from a .pt path or a run folder (its checkpoints/<name>.pt)."""
    p = Path(os.path.expanduser(str(path_or_run)))
    if p.is_dir():
        p = p / "checkpoints" / f"{name}.pt"
    if not p.is_file():
        raise GenlabError(f"no checkpoint at {p}; give a run folder that has checkpoints/{name}.pt or a .pt file")
    return p
