"""Datasets: `build(cfg.dataset)` gives a Data held on the training device; `expected_spec` its shape
and `check` its presence without loading anything (so a run fails before its folder is made)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genlab.errors import GenlabError

if TYPE_CHECKING:
    from genlab.data.base import Data, Spec

__all__ = ["Data", "Spec", "build", "check", "expected_spec", "full_dataset", "sized"]


def __getattr__(name: str):
    # Data and Spec load torch: imported on first use, so that the config schemas (genlab.data.schema)
    # do not make `genlab train --help` import torch.
    if name in ("Data", "Spec"):
        from genlab.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'genlab.data' has no attribute {name!r}")


def _loader(cfg):
    from hydra.utils import get_method

    try:
        return get_method(cfg._target_)
    except Exception as e:  # noqa: BLE001
        raise GenlabError(f"dataset._target_={cfg._target_} cannot be imported ({e})") from None


def build(cfg, device="cpu", seed: int = 0) -> Data:
    """Load the dataset described by cfg and move it to `device`."""
    return _loader(cfg)(cfg, seed=seed).to(device)


def sized(cfg) -> bool:
    """Whether the dataset is generated to dataset.n_train / n_test examples (a loader says so by `sized`)."""
    return bool(getattr(_loader(cfg), "sized", False))


def expected_spec(cfg) -> Spec:
    """The Spec a dataset config will produce (a loader declares it via its `spec` attribute)."""
    fn = _loader(cfg)
    return fn.spec(cfg)


def check(cfg) -> None:
    """Before a run: the dataset's files are there (a loader declares how via its `check` attribute).

    Cheap on purpose: files are found and headers verified, nothing is decoded."""
    _loader(cfg).check(cfg)


def full_dataset(dataset_cfg, data=None) -> Data:
    """The labelled dataset a feature network trains on: the whole of it (no dataset.limit/classes),
    so that runs trained on subsets are still scored by the same network; `data` is reused if it
    already is the whole dataset."""
    from omegaconf import OmegaConf

    if data is not None and dataset_cfg.get("limit") is None and dataset_cfg.get("classes") is None:
        return data
    cfg = OmegaConf.create(OmegaConf.to_container(dataset_cfg, resolve=True))
    cfg.limit, cfg.classes = None, None
    return build(cfg, "cpu")
