"""In-memory datasets held as tensors on the training device; batches are drawn by indexing."""

from __future__ import annotations

import torch

from genlab.pixels import from_levels
from genlab.types import Batch, Spec

__all__ = ["Batch", "Data", "Spec"]


class Data:
    """A train/test split held as tensors.

    Images are stored as uint8 (N, C, H, W) and converted to float in [-1, 1] per batch; points are
    float32 (N, D). Batches come from an epoch-wise random permutation driven by a private generator,
    whose state is part of the checkpoint so a resumed run draws the same batches.
    """

    def __init__(self, name: str, kind: str, train_x: torch.Tensor, train_y: torch.Tensor | None,
                 test_x: torch.Tensor, test_y: torch.Tensor | None, num_classes: int | None = None,
                 class_names: list[str] | None = None, seed: int = 0, binarize: str | None = None,
                 **info):
        self.name = name
        self.kind = kind
        self._train_x = train_x
        self._test_x = test_x
        self.train_y = train_y
        self.test_y = test_y
        self.num_classes = num_classes
        self.class_names = class_names
        self.binarize = binarize  # None, 'static' or 'dynamic'
        self.info = info  # e.g. mixture centers/std for toy data, extent for plots
        self.device = train_x.device
        self._gen = torch.Generator().manual_seed(seed)
        self._perm: torch.Tensor | None = None
        self._pos = 0
        self._rank, self._world = 0, 1
        if binarize not in (None, "static", "dynamic"):
            raise ValueError(f"binarize must be None, 'static' or 'dynamic', got {binarize!r}")
        if binarize is not None:
            g = torch.Generator().manual_seed(seed + 1)
            if binarize == "static":
                self._train_x = _bernoulli_u8(self._train_x, g)
            # The test split is binarised once with a fixed seed in both modes, so a held-out
            # likelihood is measured on the same binary images every time (the IWAE paper's protocol).
            self._test_x = _bernoulli_u8(self._test_x, g)

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def spec(self) -> Spec:
        return Spec(self.kind, tuple(self._train_x.shape[1:]), self.num_classes,
                    binarized=self.binarize is not None)

    @property
    def shape(self) -> tuple:
        return tuple(self._train_x.shape[1:])

    @property
    def extent(self) -> float:
        """Half-width of the square the toy data is plotted in."""
        return float(self.info.get("extent", 1.0))

    def __len__(self) -> int:
        return self._train_x.shape[0]

    # ---- tensors ------------------------------------------------------------------------------
    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return from_levels(x)
        return x

    @property
    def train_x(self) -> torch.Tensor:
        return self._to_float(self._train_x)

    @property
    def test_x(self) -> torch.Tensor:
        return self._to_float(self._test_x)

    def raw(self, split: str = "train") -> torch.Tensor:
        """The stored tensor: uint8 images or float points."""
        return self._train_x if split == "train" else self._test_x

    def to(self, device) -> "Data":
        for k in ("_train_x", "_test_x", "train_y", "test_y"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, v.to(device))
        self.device = torch.device(device)
        return self

    # ---- batches ------------------------------------------------------------------------------
    def _indices(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self._perm is None or self._pos >= len(self._perm):
                self._perm = torch.randperm(len(self), generator=self._gen)
                self._pos = 0
            take = self._perm[self._pos:self._pos + n]
            self._pos += len(take)
            n -= len(take)
            out.append(take)
        return out[0] if len(out) == 1 else torch.cat(out)

    def shard(self, rank: int, world: int) -> None:
        """Draw as rank `rank` of `world`: each draws the same global batch of world x batch_size and keeps its slice."""
        self._rank, self._world = rank, world

    def next(self, batch_size: int) -> Batch:
        """The next training batch (a fresh permutation each epoch)."""
        # Every rank advances the same permutation by the global batch, so N ranks see exactly the
        # batch one process would see with N x batch_size, and their sampler states stay equal.
        idx = self._indices(batch_size * self._world)[self._rank * batch_size:(self._rank + 1) * batch_size]
        idx = idx.to(self.device)
        x = self._train_x[idx]
        if self.binarize == "dynamic":
            x = _bernoulli_u8(x, None)
        y = self.train_y[idx] if self.train_y is not None else None
        return Batch(self._to_float(x), y)

    def batches(self, split: str = "test", batch_size: int = 500, limit: int | None = None):
        """Iterate over a split in order (for evaluation)."""
        xs = self._test_x if split == "test" else self._train_x
        ys = self.test_y if split == "test" else self.train_y
        n = len(xs) if limit is None else min(limit, len(xs))
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            yield Batch(self._to_float(xs[i:j]), ys[i:j] if ys is not None else None)

    def state_dict(self) -> dict:
        return {"gen": self._gen.get_state(), "perm": self._perm, "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self._gen.set_state(state["gen"])
        self._perm = state["perm"]
        self._pos = int(state["pos"])


def _bernoulli_u8(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Binarise uint8 images: each pixel is 255 with probability x/255, else 0."""
    p = x.float() / 255.0
    if gen is None:
        u = torch.rand(p.shape, device=p.device)
    else:
        u = torch.rand(p.shape, generator=gen).to(p.device)
    return ((u < p).to(torch.uint8) * 255)
