"""Augmentations of what the discriminator sees: a table from `model.augment` names to modules.

Every input of D (real, fake, interpolates, R1's reals) passes through GAN.discriminate, which applies
the model's augmentation module first (as stylegan2-ada-pytorch's `run_D` applies its augment pipe), so
an augmentation written here works for every GAN variant. Contract of an augmentation module:
- built as `cls(cfg, spec)` from the model's typed config and the data spec;
- forward(x) -> x', differentiable in x (G's gradient flows through it), identity in eval mode
  (`self.training` False: visuals, heat-maps and evaluation see D unaugmented);
- adapt(logs): called after every discriminator update with that step's logs (e.g. `real_sign`,
  E[sign D(real)]); adaptive state lives in registered buffers, so checkpoints carry it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class Augment(nn.Module):
    """The identity augmentation and the base of every other: no op, nothing to adapt."""

    def __init__(self, cfg=None, spec=None):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adapt(self, logs: dict) -> None:
        """Update adaptive state (buffers) from the discriminator step's logs; nothing here."""


# name -> "module.Class" (imported on use); a new augmentation is one file and one entry here.
AUGMENTS: dict[str, str] = {"none": "genlab.models.augment.Augment"}


@dataclass
class Augmentation:
    """The augmentation every adversarial model takes as config (a Config mixin)."""

    augment: str = "none"  # a name of AUGMENTS


def augment_problem(cfg) -> str | None:
    """Why model.augment cannot work (None if it can)."""
    if cfg.augment not in AUGMENTS:
        return f"unknown model.augment={cfg.augment}; choose one of {', '.join(AUGMENTS)}"
    return None


def build_augment(cfg, spec) -> Augment:
    """The augmentation module named by cfg.augment."""
    from hydra.utils import get_class

    return get_class(AUGMENTS[cfg.augment])(cfg, spec)
