"""genlab: a config-driven lab for training and comparing generative models."""

__version__ = "0.1.0"
