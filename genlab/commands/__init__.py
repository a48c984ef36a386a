"""Thin Hydra apps, one per CLI command."""
