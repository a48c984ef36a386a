"""What is optimised: one module per family. `genlab.config.build_model` instantiates cfg.model._target_."""

from __future__ import annotations

from genlab.models.base import Batch, Model, Step, StepContext

__all__ = ["Batch", "Model", "Step", "StepContext"]
