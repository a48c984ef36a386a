"""The few records every layer shares (data, models, engine, commands): batches, data specs, steps.

Nothing here imports another genlab module, so any layer may import it without a back-edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    """One training batch on the training device: x in [-1, 1] (images) or raw coordinates (points).

    A step that needs no data (Step.needs_data=False) gets `Batch.of_size(n)`: x is None, len() is n.
    """

    x: torch.Tensor | None
    y: torch.Tensor | None = None
    size: int | None = None

    @classmethod
    def of_size(cls, n: int) -> "Batch":
        """A batch that carries only its size."""
        return cls(None, None, int(n))

    def __len__(self) -> int:
        return self.x.shape[0] if self.x is not None else int(self.size)


@dataclass
class Spec:
    """What a model needs to know about its data to size its networks."""

    kind: str  # 'image' or 'points'
    shape: tuple  # (C, H, W) or (D,)
    num_classes: int | None = None
    binarized: bool = False  # image pixels are exactly -1 or 1
    domains: int = 1  # 2 for unpaired two-domain data (batches: x from domain A, y from domain B)


def _identity(t):
    return t


def _one() -> float:
    return 1.0


def plus(*terms):
    """The sum of loss terms, leaving out absent ones (the Python number 0): `loss + 0.0` would cost an op and
    an autograd node per update, and add nothing."""
    total = None
    for t in terms:
        if isinstance(t, (int, float)) and t == 0:
            continue
        total = t if total is None else total + t
    return 0.0 if total is None else total


@dataclass
class StepContext:
    """What a step function may need from the loop: the global step, loss scaling for autograd.grad, and
    whether its logs are written (log=False: only the loss is, so diagnostics need not be computed)."""

    step: int
    scale: Callable[[torch.Tensor], torch.Tensor] = _identity
    inv_scale: Callable[[], float] = _one
    log: bool = True

    @property
    def scaled(self) -> bool:
        """Whether losses handed to autograd.grad are loss-scaled (fp16); otherwise scale and inv_scale are identities."""
        return self.scale is not _identity or self.inv_scale is not _one


LossFn = Callable[[Batch, StepContext], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


@dataclass
class Step:
    """One phase of a trainer step: `repeat` times draw a batch, compute fn's loss, update `optimizer`'s params.

    every: the phase runs only on trainer steps divisible by it (lazy regularisation, StyleGAN2);
    needs_data: False hands fn a Batch.of_size(batch_size) instead of drawing real data;
    after: called after each optimizer update with the logs fn returned for it (tensors), so a step can
    adapt from its own statistics (clipping, EMA, ADA's p, BEGAN's k_t; adaptive state in buffers).
    """

    name: str
    optimizer: str
    fn: LossFn
    repeat: int = 1
    after: Callable[[dict], None] | None = None
    every: int = 1
    needs_data: bool = True

    def due(self, step: int) -> bool:
        """Whether this phase runs on trainer step `step`."""
        return step % self.every == 0
