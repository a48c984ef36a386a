"""Which torch device a run uses: shared by the trainer, the commands and the evaluators."""

from __future__ import annotations

import torch

from genlab.errors import GenlabError


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; an unavailable cuda is a user error."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GenlabError(f"trainer.device={name} but CUDA is not available here; use trainer.device=cpu or auto")
        idx = torch.device(name).index or 0
        if idx >= torch.cuda.device_count():
            raise GenlabError(f"trainer.device={name} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not torch.backends.mps.is_available():
        raise GenlabError("trainer.device=mps but MPS is not available; use trainer.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GenlabError(f"device={name} is not a device; use auto, cpu, cuda or cuda:N") from None
