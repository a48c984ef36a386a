"""What is optimised: one module per family. `build(cfg, spec)` instantiates cfg.model._target_."""

from __future__ import annotations

from genlab.models.base import Batch, Model, Step, StepContext

__all__ = ["Batch", "Model", "Step", "StepContext", "build"]


def build(cfg, spec) -> Model:
    """The model named by cfg.model._target_, with its typed config, sized for `spec`."""
    from genlab.config import model_class, typed_model_config

    return model_class(cfg)(typed_model_config(cfg), spec)
