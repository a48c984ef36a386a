"""The model-agnostic training machinery: the loop, precision, checkpoints, logging."""
