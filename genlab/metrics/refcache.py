"""Where genlab caches what it computes once: feature networks and their reference-side statistics.

The cache root is $GENLAB_CACHE, else $XDG_CACHE_HOME/genlab, else ~/.cache/genlab: never the working
folder, so a new run folder does not train the feature network again. Reference entries (features of
a dataset split, their mean and covariance, k-NN radii) live next to the feature network, in
`<featurenets>/<net id>.refs/`, and are keyed by everything that decides them: the network (id and a
digest of its weights), the dataset (name and a digest of the split's stored tensor), the split and
the number of points.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch

from genlab import safeio
from genlab.errors import GenlabError

log = logging.getLogger("genlab")


def _entry_of(entry, key: dict) -> bool:
    """Whether a loaded file is a cache entry for key: {"key": key, "value": {name: tensor}}."""
    return (isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("value"), dict)
            and all(isinstance(v, torch.Tensor) for v in entry["value"].values()))


def cache_root() -> Path:
    """$GENLAB_CACHE, else $XDG_CACHE_HOME/genlab, else ~/.cache/genlab."""
    env = os.environ.get("GENLAB_CACHE")
    if env:
        return Path(os.path.expanduser(env))
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(os.path.expanduser(xdg)) if xdg else Path.home() / ".cache") / "genlab"


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short content hash of tensors (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def module_digest(module: torch.nn.Module) -> str:
    """A content hash of a network's weights: a retrained network gets new reference entries."""
    return tensor_digest(*module.state_dict().values())


class ReferenceCache:
    """Entries (dicts of tensors) in memory and, when folder is set, on disk; `computed` counts misses."""

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None
        self.memory: dict[str, dict] = {}
        self.computed = 0

    def _path(self, name: str, key: dict) -> tuple[str, Path | None]:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        file = f"{name}-{digest}.pt"
        return file, (self.folder / file if self.folder is not None else None)

    def get(self, name: str, key: dict, compute: Callable[[], dict]) -> dict:
        """The entry for key, computing (and storing) it on a miss."""
        file, path = self._path(name, key)
        if file in self.memory:
            return self.memory[file]
        if path is not None and path.is_file():
            try:
                entry = safeio.load_tensors(path, "reference cache")
            except GenlabError as e:  # a torn, foreign or unsafe file: never used, recomputed
                log.warning("%s; recomputing it", e)
            else:
                if _entry_of(entry, key):
                    self.memory[file] = entry["value"]
                    return entry["value"]
                log.warning("reference cache %s does not hold an entry for its key; recomputing it", path)
        value = compute()
        self.computed += 1
        self.memory[file] = value
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                torch.save({"key": key, "value": value}, tmp)
                os.replace(tmp, path)
            except OSError as e:  # a read-only cache is slower, not an error
                log.warning("cannot write the reference cache %s (%s)", path, e)
        return value
