"""Shared fixtures: tiny datasets written as real files, config composition, and running the CLI."""

from __future__ import annotations

import gzip
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tests use tiny tensors: an intra-op thread pool costs far more than it saves, worst on a busy machine.
torch.set_num_threads(1)

# The tests pin the paper recipe (the networks each model file names), which is what they check on a
# CPU as on a GPU; tests/test_recipe.py checks trainer.recipe=auto|cpu itself. Subprocesses inherit it.
os.environ["GENLAB_RECIPE"] = "paper"
# Nor do they read the user's data folder: each test names its tiny dataset's root (or sets GENLAB_DATA).
os.environ.pop("GENLAB_DATA", None)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Feature networks and reference statistics of the tests' tiny datasets never reach the user's cache."""
    before = os.environ.get("GENLAB_CACHE")
    os.environ["GENLAB_CACHE"] = str(tmp_path_factory.mktemp("genlab_cache"))
    yield
    if before is None:
        os.environ.pop("GENLAB_CACHE", None)
    else:
        os.environ["GENLAB_CACHE"] = before


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state (and one thread: a run may have set more)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist(root: Path, folder: str = "MNIST", n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """Tiny MNIST-format files in torchvision's layout: root/<folder>/raw/*-idx?-ubyte.gz.

    Class k is a bright square in a class-specific position, so classes are distinguishable.
    """
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = 2 + (k // 5) * 12, 2 + (k % 5) * 5
            images[i, r:r + 10, c:c + 5] = 255
        write_idx(raw / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return root


@pytest.fixture
def mnist_root(tmp_path) -> Path:
    """A data root with tiny MNIST and Fashion-MNIST files."""
    root = tmp_path / "data"
    make_mnist(root, "MNIST")
    make_mnist(root, "FashionMNIST", seed=1)
    return root


def compose(overrides: list[str], config_name: str = "train"):
    """The composed config for these overrides, as the CLI would build it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from genlab.config import register_configs

    register_configs()
    with initialize_config_module("genlab.configs", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m genlab ARGS` with this checkout's genlab first on the path."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("GENLAB_DATA", None) if env is None or "GENLAB_DATA" not in env else None
    return subprocess.run([sys.executable, "-m", "genlab", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


TINY = ["trainer=debug", "trainer.progress=false"]


NET_KEYS = {"points": (".hidden=", ".depth="), "image": (".base_channels=",)}
NET_NODES = ("model.generator.", "model.discriminator.", "model.encoder.", "model.decoder.")


def nets_for(overrides: list[str], kind: str) -> list[str]:
    """The network-size overrides that apply to `kind` ('points': MLP sizes, 'image': conv widths); a network
    setting its architecture does not take is an error, so one list serving both is filtered here."""
    other = NET_KEYS["image" if kind == "points" else "points"]
    return [o for o in overrides if not (o.lstrip("+").startswith(NET_NODES) and any(k in o for k in other))]


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold bit-identical weights and optimizer states at the same step."""
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for key in a["optimizers"]:
        sa, sb = a["optimizers"][key]["state"], b["optimizers"][key]["state"]
        for i in sa:
            for name in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][name]), torch.as_tensor(sb[i][name])), (key, i, name)


@pytest.fixture
def keep_logging():
    """Hydra apps run in this process configure logging onto the test's captured streams: undo that afterwards."""
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    saved = {lg.name: (lg.handlers[:], lg.level, lg.propagate) for lg in loggers}
    yield
    for name in list(logging.root.manager.loggerDict) + ["root"]:
        lg = logging.getLogger() if name == "root" else logging.getLogger(name)
        handlers, level, propagate = saved.get(lg.name, ([], logging.NOTSET, True))
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
