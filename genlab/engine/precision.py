"""Mixed precision in one place: autocast, loss scaling (fp16) and the backward/step sequence.

trainer.precision: '32' (plain fp32), 'bf16' (autocast to bfloat16, no scaling needed) or '16'
(autocast to float16 with one GradScaler per optimizer, since the players' losses differ in scale).
"""

from __future__ import annotations

import contextlib
import math

import torch

from genlab.types import StepContext

DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class Precision:
    """Autocast + GradScaler policy for one device."""

    def __init__(self, mode: str, device: torch.device):
        self.mode = str(mode)
        self.device = torch.device(device)
        self.dtype = DTYPES[self.mode]
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    def autocast(self):
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self, key: str) -> torch.amp.GradScaler | None:
        if self.mode != "16":
            return None
        if key not in self.scalers:
            self.scalers[key] = torch.amp.GradScaler(self.device.type)
        return self.scalers[key]

    def context(self, step: int, key: str, log: bool = True) -> StepContext:
        """What a step function needs to take input gradients safely (the AMP gradient-penalty recipe)."""
        sc = self.scaler(key)
        if sc is None:
            return StepContext(step, log=log)
        return StepContext(step, scale=sc.scale, inv_scale=lambda: 1.0 / sc.get_scale(), log=log)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, key: str, params,
                          grad_clip: float | None = None, need_norm: bool = False) -> torch.Tensor | None:
        """Backward, unscale, optional clipping, optimizer step, scaler update; returns the grad norm."""
        sc = self.scaler(key)
        optimizer.zero_grad(set_to_none=True)
        if sc is None:
            loss.backward()
        else:
            sc.scale(loss).backward()
            sc.unscale_(optimizer)
        norm = None
        if grad_clip is not None or need_norm:
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf)
        if sc is None:
            optimizer.step()
        else:
            sc.step(optimizer)
            sc.update()
        return norm

    def state_dict(self) -> dict:
        return {k: s.state_dict() for k, s in self.scalers.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, s in state.items():
            sc = self.scaler(k)
            if sc is not None:
                sc.load_state_dict(s)
