"""Window averages of the step functions' logs, kept on the device until they are written.

A step only appends its detached tensors (no arithmetic, no host sync); the finite-value filtering
and the means happen once per logging window, in one stacked operation per key.
"""

from __future__ import annotations

import torch

_FOLD = 512  # a long window (large log_every) is folded into a partial sum now and then


class WindowMeans:
    """Per-key means over a window, leaving non-finite values out (0/0 = nan: no finite value at all)."""

    def __init__(self):
        self.values: dict[str, list[torch.Tensor]] = {}
        self.partial: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, prefix: str, logs: dict) -> None:
        for k, v in logs.items():
            key = f"{prefix}/{k}"
            vals = self.values.setdefault(key, [])
            vals.append(v.detach() if v.requires_grad else v)
            if len(vals) >= _FOLD:
                self._fold(key)

    def _fold(self, key: str) -> None:
        v = torch.stack([x.float().reshape(()) for x in self.values.pop(key)])
        ok = torch.isfinite(v)
        s, n = torch.where(ok, v, 0.0).sum(), ok.sum()
        if key in self.partial:
            s0, n0 = self.partial[key]
            s, n = s + s0, n + n0
        self.partial[key] = (s, n)

    def means(self) -> dict[str, float]:
        """The window's means as floats (one host sync), and a fresh window."""
        for key in list(self.values):
            self._fold(key)
        keys = list(self.partial)
        if not keys:
            return {}
        sums = torch.stack([self.partial[k][0] for k in keys])
        counts = torch.stack([self.partial[k][1] for k in keys]).float()
        self.partial = {}
        return dict(zip(keys, (sums / counts).tolist()))


class FirstNonFinite:
    """The first step whose loss was not finite, kept on the device without an op per update.

    Each update's loss is kept (detached); the kept losses are checked in one stacked operation every
    _FOLD updates or when the flag is read (logging and saving read it; under torchrun every step
    does), so divergence is still named at the step it happened.
    """

    def __init__(self, never: int, device):
        self.first = torch.full((), never, dtype=torch.int64, device=device)
        self.never = never
        self.losses: list[torch.Tensor] = []
        self.steps: list[int] = []

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach())
        self.steps.append(step)
        if len(self.losses) >= _FOLD:
            self.flag()

    def flag(self) -> torch.Tensor:
        """The first non-finite step as an int64 tensor on the device (`never` while every loss was finite)."""
        if self.losses:
            v = torch.stack([x.reshape(()) for x in self.losses])
            steps = torch.tensor(self.steps, dtype=torch.int64).to(v.device, non_blocking=True)
            first = torch.where(torch.isfinite(v), self.never, steps).min()
            self.first = torch.minimum(self.first, first)
            self.losses, self.steps = [], []
        return self.first
