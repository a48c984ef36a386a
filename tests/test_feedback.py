"""Fast feedback: the reference cache, its location, the quick CLI, threads, the loop's log window."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, compose, make_mnist

TINY_FN = {"epochs": 1, "width": 4, "feature_dim": 16, "batch_size": 32}


# ---- the reference cache ---------------------------------------------------------------------
def _data(root):
    from genlab import data as data_lib

    cfg = compose(["dataset=mnist", f"dataset.root={root}", "dataset.download=false"]).dataset
    return data_lib.build(cfg, "cpu")


def _evaluator(data, cache, **fn):
    from genlab.metrics.evaluator import EvalSettings, Evaluator

    settings = EvalSettings(num_samples=40, seed=0, featurenet={"cache_dir": str(cache), **TINY_FN, **fn}, prdc_k=3,
                            kid_subsets=4, kid_subset_size=16)
    return Evaluator(data, settings, metrics=["fid", "kid", "prdc", "is"])


@pytest.fixture
def embedded(monkeypatch):
    """Rows the feature network embeds, counted."""
    from genlab.metrics import featurenet as fnet

    rows = {"n": 0}
    embed = fnet.FeatureNet.embed

    def counting(self, x, *a, **kw):
        rows["n"] += len(x)
        return embed(self, x, *a, **kw)

    monkeypatch.setattr(fnet.FeatureNet, "embed", counting)
    return rows


def test_reference_is_computed_once_then_read_from_the_cache(tmp_path, embedded):
    root = make_mnist(tmp_path / "data", "MNIST", n_train=200, n_test=100)
    data = _data(root)
    x = data.test_x[:40]
    cold = _evaluator(data, tmp_path / "fn")
    first = cold.score(x, ["fid", "kid", "prdc", "is"])
    net = cold.nets()[0]
    assert cold._cache(net).computed == 2  # the train split's features and the PRDC radii
    assert embedded["n"] == 200 + 40
    refs = sorted(p.name for p in (tmp_path / "fn" / f"{net.id}.refs").iterdir())
    assert len(refs) == 2 and refs[0].startswith("mnist-train-200")

    embedded["n"] = 0
    warm = _evaluator(data, tmp_path / "fn")  # a new process would see the same: only the files are shared
    second = warm.score(x, ["fid", "kid", "prdc", "is"])
    assert warm._cache(warm.nets()[0]).computed == 0
    assert embedded["n"] == 40  # the samples only, not the 200 reference images
    assert {k: e.value for k, e in second.items()} == {k: e.value for k, e in first.items()}
    # the floor reads the held-out split's features from the cache too
    warm.floor(["fid"])
    embedded["n"] = 0
    _evaluator(data, tmp_path / "fn").floor(["fid"])
    assert embedded["n"] == 0


def test_reference_cache_is_invalidated_by_a_new_featurenet_or_new_data(tmp_path, embedded):
    root = make_mnist(tmp_path / "data", "MNIST", n_train=200, n_test=100)
    data = _data(root)
    x = data.test_x[:40]
    base = _evaluator(data, tmp_path / "fn")
    fid = base.score(x, ["fid"])
    # another feature network (a different recipe): new reference features
    other = _evaluator(data, tmp_path / "fn", seed=1)
    other.score(x, ["fid"])
    assert other.nets()[0].id != base.nets()[0].id and other._cache(other.nets()[0]).computed == 1
    # the same recipe retrained to different weights (e.g. featurenet retrain=true after a change)
    with torch.no_grad():
        again = _evaluator(data, tmp_path / "fn")
        net = again.nets()[0]
        net.net.head.bias.add_(1.0)
        net.net.fc[2].weight.mul_(1.5)
    refit = again.score(x, ["fid"])
    assert again._cache(net).computed == 1 and refit != fid
    # the same dataset name with other images
    root2 = make_mnist(tmp_path / "data2", "MNIST", n_train=200, n_test=100, seed=5)
    changed = _evaluator(_data(root2), tmp_path / "fn")
    changed._nets = [base.nets()[0]]  # the very same network: only the data differ
    embedded["n"] = 0
    changed.score(x, ["fid"])
    assert changed._cache(base.nets()[0]).computed == 1 and embedded["n"] == 200 + 40


def test_cache_root_is_the_users_cache_never_the_working_folder(tmp_path, monkeypatch):
    from genlab.metrics import featurenet as fnet
    from genlab.metrics.refcache import cache_root

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"
    assert fnet.cache_dir() == tmp_path / "explicit" / "featurenets"
    monkeypatch.delenv("GENLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "genlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "genlab"
    for name in ("eval", "featurenet"):
        assert compose([], config_name=name).featurenet.cache_dir is None


def test_nll_bounds_reach_the_model(tmp_path):
    """The trainer's eval_nll_images / eval_nll_k replace the model's own eval_limit / eval_k."""
    from genlab.config import model_class, validate

    root = make_mnist(tmp_path / "data", "MNIST", n_train=64, n_test=48)
    cfg = compose(["model=vae", "dataset=mnist", f"dataset.root={root}", "dataset.download=false",
                   "model.encoder.base_channels=4", "model.decoder.base_channels=4"])
    data = _data(root)
    vae = model_class(cfg)(validate(cfg), data.spec).eval()
    out = vae.evaluate(data, limit=7, k=3)
    assert out["eval_images"] == 7 and out["eval_k"] == 3
    own = vae.evaluate(data)
    assert own["eval_images"] == 48 and own["eval_k"] == cfg.model.eval_k


# ---- the quick CLI -----------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["train", "--help"], ["eval", "--help"], ["train", "--cfg", "job"],
                                  ["sample", "--cfg", "job", "run=x"], ["train", "trainer.max_steps=-1"],
                                  ["eval", "run=nonexistent"], ["sample", "run=.", "checkpoint=best"]])
def test_informational_flags_and_pre_checks_do_not_import_torch(args, tmp_path):
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr))\n"
            f"sys.argv = ['genlab', *{args!r}]\n"
            "from genlab.cli import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert "NO_TORCH" in r.stderr
    if "trainer.max_steps=-1" in args:  # a pre-check error: one line, exit 2, before torch
        assert r.returncode == 2 and "genlab: error: trainer.max_steps must be >= 0" in r.stderr
        return
    if "run=nonexistent" in args or "checkpoint=best" in args:  # a wrong run folder: one line, before torch
        where = "nonexistent" if "run=nonexistent" in args else "checkpoints/best.pt"
        assert r.returncode == 2 and "genlab: error: no checkpoint at " in r.stderr and where in r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert ("is powered by Hydra" in r.stdout) if "--help" in args else ("model:" in r.stdout or "run: x" in r.stdout)


# ---- threads -----------------------------------------------------------------------------------
def test_default_threads_use_idle_cores_and_one_for_points(monkeypatch):
    from genlab.engine import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.2, 0.0, 0.0))
    assert threads.default_threads("image") == 8  # 13 idle cores, at most 8
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (11.0, 0.0, 0.0))
    assert threads.default_threads("image") == 5
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (40.0, 0.0, 0.0))
    assert threads.default_threads("image") == 1
    assert threads.default_threads("points") == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes share the 16 cores
    assert threads.default_threads("image") == 4


# ---- the loop's log window -----------------------------------------------------------------------
def test_window_means_skip_non_finite_values_and_fold_long_windows():
    from genlab.engine import scalars

    w = scalars.WindowMeans()
    for v in (1.0, float("nan"), 3.0, float("inf")):
        w.add("critic", {"loss": torch.tensor(v), "bad": torch.tensor(float("nan"))})
    out = w.means()
    assert out["critic/loss"] == 2.0 and math.isnan(out["critic/bad"])
    assert w.means() == {}  # a fresh window
    values = torch.arange(2000, dtype=torch.float32)
    for v in values:
        w.add("g", {"loss": v})
    assert w.means()["g/loss"] == pytest.approx(float(values.mean()))
