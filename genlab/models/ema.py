"""Exponential moving average of a network's weights (Polyak averaging; Karras et al., Yazici et al. 2019).

The shadow copy is a submodule of the model that owns it, so checkpoints carry it with everything
else; it is never given to an optimizer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """shadow <- decay * shadow + (1 - decay) * source after each update; buffers (BN statistics) are copied."""

    def __init__(self, source: nn.Module, decay: float, warmup: bool = False):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = copy.deepcopy(source)
        self.shadow.requires_grad_(False)
        self.shadow.eval()
        # warmup: decay min(decay, (1 + n) / (10 + n)) after n updates, so a short run's average is not
        # mostly its initial weights (0.999 ** 1000 = 0.37); the count is saved with the weights
        self.warmup = warmup
        if warmup:
            self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """The decay of the next update."""
        if not self.warmup:
            return self.decay
        n = int(self.updates)
        return min(self.decay, (1 + n) / (10 + n))

    def train(self, mode: bool = True):
        # The shadow only ever evaluates: its batch-norm layers use the running statistics copied
        # from the source.
        super().train(mode)
        self.shadow.eval()
        return self

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        """Move the shadow weights towards `source`'s and copy its buffers."""
        decay = self.current_decay()
        if self.warmup:
            self.updates += 1
        src = dict(source.named_parameters())
        for name, p in self.shadow.named_parameters():
            p.lerp_(src[name].detach().to(p.dtype), 1.0 - decay)
        src_buf = dict(source.named_buffers())
        for name, b in self.shadow.named_buffers():
            b.copy_(src_buf[name])

    def forward(self, *args, **kwargs):
        return self.shadow(*args, **kwargs)
