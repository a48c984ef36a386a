"""genlab eval, the feature network cache, best.pt and the toy visuals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, compose, run_cli

TOY = ["dataset.n_train=2000", "dataset.n_test=1000", "++model.generator.hidden=32", "++model.generator.depth=2",
       "++model.discriminator.hidden=32", "++model.discriminator.depth=2"]
TINY_FN = ["featurenet.epochs=1", "featurenet.width=4", "featurenet.feature_dim=16", "featurenet.batch_size=32"]
CHEAP_EVAL = ["eval.memorization_samples=16", "eval.kid_subsets=5", "eval.kid_subset_size=16"]


def train_run(tmp_path: Path, name: str, overrides: list[str]) -> Path:
    from genlab.commands.train import train

    run = tmp_path / name
    train(compose([*TINY, *overrides]), run)
    return run


def eval_cfg(run: Path, *overrides: str):
    return compose([f"run={run}", *CHEAP_EVAL, *overrides], config_name="eval")


# ---- feature network -------------------------------------------------------------------------
def test_featurenet_cache_hit_and_recipe_hash(mnist_root, tmp_path, monkeypatch):
    from genlab import data as data_lib
    from genlab.metrics import featurenet as fnet

    data = data_lib.build(compose([f"dataset.root={mnist_root}"]).dataset)
    recipe = fnet.recipe_for(data, epochs=1, width=4, feature_dim=16, batch_size=32)
    first = fnet.load_or_train(data, recipe, tmp_path / "cache")
    assert first.id.startswith("lenet-mnist-") and len(first.id) == len("lenet-mnist-") + 8
    assert (tmp_path / "cache" / f"{first.id}.pt").is_file()
    meta = json.loads((tmp_path / "cache" / f"{first.id}.json").read_text())
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and meta["test_accuracy"] == first.test_accuracy

    def no_training(*a, **k):
        raise AssertionError("the cached network should have been reused")

    monkeypatch.setattr(fnet, "train", no_training)
    second = fnet.load_or_train(data, recipe, tmp_path / "cache")
    x = data.test_x[:8]
    assert torch.equal(first.embed(x)[0], second.embed(x)[0])
    f, p = second.embed(x)
    assert f.shape == (8, 16) and p.shape == (8, 10) and torch.allclose(p.sum(1), torch.ones(8))
    # Any change of recipe is a different network (and a different cache file).
    assert fnet.recipe_for(data, epochs=2, width=4, feature_dim=16, batch_size=32).id != recipe.id
    assert fnet.recipe_for(data, epochs=1, width=4, feature_dim=16, batch_size=32, seed=1).id != recipe.id


def test_featurenet_yaml_defaults_match_recipe():
    from dataclasses import fields

    from genlab.metrics.featurenet import Recipe

    defaults = {f.name: f.default for f in fields(Recipe) if f.name in
                ("arch", "width", "feature_dim", "epochs", "batch_size", "lr", "seed")}
    for name in ("eval", "featurenet"):
        cfg = OmegaConf.to_container(compose([], config_name=name).featurenet, resolve=False)
        cfg.pop("cache_dir")
        assert cfg == defaults, name


# ---- eval on images ---------------------------------------------------------------------------
def test_eval_json_table_and_tensorboard(mnist_root, tmp_path, capsys):
    from genlab.commands.eval import evaluate_run

    run = train_run(tmp_path, "gan", ["model=gan", f"dataset.root={mnist_root}",
                                      "++model.generator.base_channels=8", "++model.discriminator.base_channels=8"])
    tb_before = len(list((run / "tb").iterdir()))
    result = evaluate_run(eval_cfg(run, "num_samples=40", f"featurenet.cache_dir={tmp_path / 'fn'}", *TINY_FN))
    out = capsys.readouterr().out
    saved = json.loads((run / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["genlab_version"] == __import__("genlab").__version__
    assert saved["split"] == "train" and saved["heldout_split"] == "test" and saved["dataset"] == "mnist"
    assert saved["num_samples"] == 40 and saved["step"] == 4
    net = saved["feature_networks"][0]
    assert net["id"].startswith("lenet-mnist-") and 0 <= net["test_accuracy"] <= 1
    rows = {r["metric"]: r for r in saved["metrics"]}
    for key in ("fid", "kid", "is", "classes_covered", "precision", "recall", "density", "coverage"):
        assert f"{key}[lenet-mnist]" in rows, key
    fid = rows["fid[lenet-mnist]"]
    assert fid["num_samples"] == 40 and fid["num_reference"] == 64 and fid["feature_network"] == net["id"]
    assert fid["split"] == "train" and fid["better"] == "lower"
    # the floor: the 32 held-out test images against the training split
    assert fid["floor_num_samples"] == 32 and fid["floor"] is not None and fid["floor"] < fid["value"]
    assert fid["floor_blurred"] is not None and fid["floor_blurred"] > fid["floor"]  # blur moves real data away
    assert rows["nn_ratio"]["num_samples"] == 16
    assert any("Inception" in s for s in saved["skipped"])
    # the table
    assert "real-data floor" in out and "fid[lenet-mnist]" in out and "test accuracy" in out
    assert (run / "samples" / "eval_nearest.png").is_file()
    assert len(list((run / "tb").iterdir())) == tb_before + 1


@pytest.mark.slow
def test_eval_cli_on_toy_points_and_errors(tmp_path):
    run = train_run(tmp_path, "toy", ["model=gan", "dataset=ring8", *TOY])
    r = run_cli(["eval", f"run={run}", "num_samples=300", *CHEAP_EVAL], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "modes" in r.stdout and "real-data floor" in r.stdout and "fid[points]" in r.stdout
    saved = json.loads((run / "eval.json").read_text())
    assert saved["feature_networks"][0]["id"] == "points"
    assert saved["floor"]["modes"] == 8 and saved["floor"]["high_quality"] > 0.98
    bad = run_cli(["eval", f"run={run}", "metrics=[fidd]"], cwd=tmp_path)
    assert bad.returncode == 2 and "unknown metric fidd" in bad.stderr and "Traceback" not in bad.stderr


def test_eval_ranks_trained_toy_model_above_untrained(tmp_path):
    from genlab.commands.eval import evaluate_run

    common = ["model=wgan_gp", "dataset=grid25", *TOY, "trainer.batch_size=128", "model.n_critic=2",
              "optimizer.lr=1e-3", "trainer.sample_every=0", "trainer.checkpoint_every=0"]
    untrained = train_run(tmp_path, "untrained", [*common, "trainer.max_steps=0"])
    trained = train_run(tmp_path, "trained", [*common, "trainer.max_steps=150"])
    scores = {}
    for name, run in (("untrained", untrained), ("trained", trained)):
        scores[name] = evaluate_run(eval_cfg(run, "num_samples=500", "metrics=[fid,modes,prdc]"))["values"]
    assert scores["trained"]["fid[points]"] < 0.5 * scores["untrained"]["fid[points]"]
    # 150 steps spread G over the plane but do not yet sharpen it onto the 0.05-wide modes, so coverage (a
    # k-NN ball test) is still near the untrained G's luck of sitting in one mode; recall and reverse KL rank it.
    assert scores["trained"]["recall[points]"] > 5 * scores["untrained"]["recall[points]"]
    assert scores["trained"]["reverse_kl"] < 0.75 * scores["untrained"]["reverse_kl"]


# ---- evaluation during training -------------------------------------------------------------
def test_best_checkpoint_follows_the_metric(tmp_path):
    from genlab.commands.train import train
    from genlab.engine import checkpoint as ckpt

    values = {1: 5.0, 2: 3.0, 3: 4.0, 4: 3.5}
    evaluator = lambda model, data, step: {"fid[points]": values[step]}  # noqa: E731
    run = tmp_path / "best"
    train(compose([*TINY, "model=gan", "dataset=ring8", *TOY, "trainer.eval_every=1", "trainer.best_metric=fid"]),
          run, evaluator=evaluator)
    best = ckpt.load(run / "checkpoints" / "best.pt")
    assert best["step"] == 2 and best["best"] == {"metric": "fid[points]", "value": 3.0, "step": 2}
    history = [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]
    assert [h["fid[points]"] for h in history] == [5.0, 3.0, 4.0, 3.5]
    # max mode keeps the highest
    run2 = tmp_path / "best_max"
    train(compose([*TINY, "model=gan", "dataset=ring8", *TOY, "trainer.eval_every=1", "trainer.best_metric=fid",
                   "trainer.best_mode=max"]), run2, evaluator=evaluator)
    assert ckpt.load(run2 / "checkpoints" / "best.pt")["step"] == 1


def test_default_evaluator_in_training_writes_toy_metrics(tmp_path):
    run = train_run(tmp_path, "evaltrain", ["model=gan", "dataset=grid25", *TOY, "trainer.eval_every=2",
                                            "trainer.eval_samples=200", "trainer.best_metric=modes",
                                            "trainer.best_mode=max"])
    history = [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4]
    assert {"modes", "high_quality", "reverse_kl", "fid[points]", "kid[points]"} <= set(history[0])
    assert (run / "checkpoints" / "best.pt").is_file()


def test_best_metric_needs_eval_every():
    from genlab.config import validate
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match="eval_every"):
        validate(compose([*TINY, "dataset=ring8", "trainer.best_metric=fid"]))


# ---- the theory made visible ------------------------------------------------------------------
def test_toy_visuals_show_the_discriminator_field(tmp_path):
    from genlab import data as data_lib
    from genlab.config import model_class, validate

    for name in ("gan", "wgan_gp"):
        cfg = compose([*TINY, f"model={name}", "dataset=grid25", *TOY])
        data = data_lib.build(cfg.dataset)
        model = model_class(cfg)(validate(cfg), data.spec).eval()
        images = model.visuals({"n": 64, "noise": model.latent(64)}, data)
        key = "critic_field" if name == "wgan_gp" else "discriminator_field"
        assert list(images)[0] == key and "samples" in images
        img = images[key]
        assert img.shape == (3, 256, 256) and 0 <= img.min() and img.max() <= 1
        # a heat-map, not a blank page: the background varies with D's output
        assert img[:, :20, :20].std() > 0 or img[:, -20:, -20:].mean() != img[:, :20, :20].mean()


def test_toy1d_points_curve_and_npz(tmp_path):
    from genlab import data as data_lib
    from genlab.config import model_class, validate

    cfg = compose([*TINY, "model=gan", "dataset=toy1d", *TOY])
    data = data_lib.build(cfg.dataset)
    assert data.shape == (1,) and data.train_x.shape == (2000, 1)
    assert abs(float(data.train_x.mean()) - 3.0) < 0.05
    model = model_class(cfg)(validate(cfg), data.spec).eval()
    img = model.visuals({"n": 64, "noise": model.latent(64)}, data)["discriminator_curve"]
    assert img.shape == (3, 256, 256)
    assert (img == 0).any()  # the black D(x) curve
    import numpy as np

    from genlab.commands.sample import sample

    run = train_run(tmp_path, "toy1d", ["model=gan", "dataset=toy1d", *TOY])
    sample(compose([f"run={run}", "num_samples=50", f"out={tmp_path / 's.npz'}"], config_name="sample"))

    pts = np.load(tmp_path / "s.npz")["points"]
    assert pts.shape == (50, 1) and pts.dtype == np.float32


def test_periodic_eval_skips_sampling_for_slow_samplers():
    """PixelCNN-like models: the trainer's hook must not draw thousands of ancestral samples."""
    from genlab import data as data_lib
    from genlab.metrics.evaluator import EvalSettings, Evaluator

    data = data_lib.build(compose(["dataset=grid25", "dataset.n_train=64", "dataset.n_test=32"]).dataset)

    class Slow(torch.nn.Module):
        family, conditional, slow_sampling = "likelihood", False, True

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def sample(self, n, **kwargs):
            raise AssertionError("sampled")

    assert Evaluator(data, EvalSettings(num_samples=10))(Slow(), data, 0) == {}
    with pytest.raises(AssertionError, match="sampled"):  # asked for explicitly, it does sample
        Evaluator(data, EvalSettings(num_samples=10), metrics=["modes"])(Slow(), data, 0)


def test_eval_reads_the_runs_own_data_root_before_genlab_data(mnist_root, tmp_path, monkeypatch):
    """The data a run is evaluated on: the root given, else the run's own where it still exists, else
    $GENLAB_DATA (a run made elsewhere); a $GENLAB_DATA pointing elsewhere does not hide the run's data."""
    from types import SimpleNamespace

    from genlab.commands.eval import run_data
    from genlab.errors import GenlabError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("GENLAB_DATA", str(elsewhere))
    run = SimpleNamespace(cfg=compose([f"dataset.root={mnist_root}"]))
    data, dcfg = run_data(run)
    assert dcfg.root == str(mnist_root) and len(data.train_x) == 64  # conftest's tiny MNIST
    with pytest.raises(GenlabError, match="dataset mnist not found"):  # the root given wins over both
        run_data(run, str(elsewhere))
    moved = tmp_path / "moved"
    mnist_root.rename(moved)  # the run's folder is gone: $GENLAB_DATA is where its data lives now
    monkeypatch.setenv("GENLAB_DATA", str(moved))
    data, dcfg = run_data(run)
    assert dcfg.root == str(moved) and len(data.train_x) == 64
