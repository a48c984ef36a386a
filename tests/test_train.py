"""End-to-end training: every model on toy and tiny image data, outputs, exact resume, precision, sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genlab.commands.train import train
from genlab.engine import checkpoint as ckpt
from genlab.errors import GenlabError
from tests.conftest import assert_same_state, compose, nets_for, run_cli

FOUNDATION_MODELS = ["gan", "wgan", "wgan_gp", "vae", "realnvp"]
SMALL = {  # small networks so a step takes milliseconds
    "gan": ["model.generator.hidden=32", "model.discriminator.hidden=32", "model.generator.base_channels=8",
            "model.discriminator.base_channels=8"],
    "vae": ["model.encoder.hidden=32", "model.decoder.hidden=32", "model.encoder.base_channels=8",
            "model.decoder.base_channels=8"],
    "realnvp": ["model.hidden=8", "model.n_blocks=1", "model.steps_per_scale=1", "model.n_layers=2"],
}
SMALL["wgan"] = SMALL["wgan_gp"] = SMALL["gan"]


def tiny(model: str, dataset: str, root: Path | None = None, extra=()) -> list[str]:
    kind = "points" if dataset in ("grid25", "ring8") else "image"
    o = [f"model={model}", f"dataset={dataset}", "trainer=debug", "trainer.progress=false", *nets_for(SMALL[model], kind)]
    if dataset in ("grid25", "ring8"):
        o += ["dataset.n_train=512", "dataset.n_test=256"]
    if root is not None:
        o += [f"dataset.root={root}", "dataset.download=false"]
    return o + list(extra)


def scalars(run_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {"scalars": acc.Tags()["scalars"], "images": acc.Tags()["images"]}


@pytest.mark.parametrize("model", FOUNDATION_MODELS)
@pytest.mark.parametrize("dataset", ["grid25", "mnist"])
def test_every_model_trains_and_writes_outputs(model, dataset, mnist_root, tmp_path):
    cfg = compose(tiny(model, dataset, mnist_root if dataset == "mnist" else None))
    last = train(cfg, tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    pngs = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert pngs == ["step_000000.png", "step_000002.png", "step_000004.png"]
    tags = scalars(tmp_path)
    assert "perf/steps_per_sec" in tags["scalars"] and any(t.startswith("lr/") for t in tags["scalars"])
    assert "images/samples" in tags["images"]
    assert all(torch.isfinite(torch.tensor(v)) for v in last.values())
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4 and state["config"]["model"]["name"] == model
    if model in ("gan", "wgan", "wgan_gp"):
        crit = "critic" if model != "gan" else "discriminator"
        assert {f"{crit}/loss", "generator/loss", f"{crit}/grad_norm", "generator/grad_norm"} <= set(tags["scalars"])
        if model == "gan":
            assert {"discriminator/D_x", "discriminator/D_G_z"} <= set(tags["scalars"])
        else:
            assert "critic/wasserstein" in tags["scalars"]
        if model == "wgan_gp":
            assert "critic/gradient_penalty" in tags["scalars"]
    if model == "vae":
        assert {"vae/reconstruction", "vae/kl", "vae/neg_elbo"} <= set(tags["scalars"])
    if model == "realnvp" and dataset == "mnist":
        assert "flow/bits_per_dim" in tags["scalars"]


def test_wgan_clipping_keeps_critic_weights_in_bounds(tmp_path):
    cfg = compose(tiny("wgan", "grid25", extra=["optimizer.lr=0.5"]))  # a big lr pushes weights out each step
    train(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    critic = [v for k, v in state.items() if k.startswith("discriminator.") and v.is_floating_point()]
    assert critic and max(v.abs().max().item() for v in critic) <= 0.01 + 1e-7
    gen = [v for k, v in state.items() if k.startswith("generator.") and "weight" in k]
    assert max(v.abs().max().item() for v in gen) > 0.01  # the generator is not clipped


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


@pytest.mark.parametrize("model, dataset", [("wgan_gp", "grid25"), ("gan", "mnist"), ("vae", "mnist"),
                                            ("realnvp", "grid25")])
def test_resume_is_bit_identical(model, dataset, mnist_root, tmp_path):
    root = mnist_root if dataset == "mnist" else None
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    n = 3
    train(compose(tiny(model, dataset, root, [f"trainer.max_steps={2 * n}", "trainer.sample_every=2"])), straight)
    train(compose(tiny(model, dataset, root, [f"trainer.max_steps={n}", "trainer.sample_every=2"])), first)
    train(compose(tiny(model, dataset, root, [f"trainer.max_steps={2 * n}", f"trainer.resume={first}",
                                              "trainer.sample_every=2"])), second)
    a, b = _weights(straight), _weights(second)
    assert a["step"] == b["step"] == 2 * n
    assert_same_state(a, b)
    # the first run's checkpoint is untouched by the resumed run
    assert _weights(first)["step"] == n


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_on_cpu(precision, mnist_root, tmp_path):
    cfg = compose(tiny("wgan_gp", "mnist", mnist_root, [f"trainer.precision={precision}", "trainer.max_steps=8",
                                                         "trainer.log_every=8"]))
    last = train(cfg, tmp_path)
    state = _weights(tmp_path)
    if precision == "16":
        # GradScaler skips overflowing steps and backs off from 2^16 until the gradients fit
        assert set(state["scalers"]) == {"discriminator", "generator"}
        assert 0 < state["scalers"]["discriminator"]["scale"] < 2.0 ** 16
        assert last["perf/loss_scale/discriminator"] == state["scalers"]["discriminator"]["scale"]
        assert torch.isfinite(torch.tensor(last["critic/loss"]))
    else:
        assert state["scalers"] == {}
        assert all(torch.isfinite(torch.tensor(v)) for v in last.values())


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    run = tmp_path / "run"
    train(compose(tiny("gan", "grid25")), run)
    good = (run / "checkpoints" / "last.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(GenlabError, match="corrupt, truncated or not a genlab checkpoint"):
        ckpt.load(bad)
    other = tmp_path / "other"
    with pytest.raises(GenlabError, match="does not match"):
        train(compose(tiny("gan", "grid25", extra=["model.generator.hidden=64", f"trainer.resume={run}",
                                                   "trainer.max_steps=6"])), other)
    assert (run / "checkpoints" / "last.pt").read_bytes() == good  # nothing lost


def test_cli_train_resume_sample_and_errors(tmp_path):
    base = ["train", *tiny("wgan_gp", "grid25"), "hydra.run.dir=run1"]
    r = run_cli(base, tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run1"
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    assert "done: 4 steps" in (run / "train.log").read_text()
    # resume: only the new step budget is given; the model and data come from the resumed run
    r = run_cli(["train", f"trainer.resume={run}", "trainer.max_steps=6", "hydra.run.dir=run2"], tmp_path)
    assert r.returncode == 0, r.stderr
    state = torch.load(tmp_path / "run2" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 6 and state["config"]["model"]["name"] == "wgan_gp"
    assert state["config"]["dataset"]["name"] == "grid25"
    # sampling: npz of points, png scatter
    r = run_cli(["sample", f"run={run}", "num_samples=10", "out=pts.npz"], tmp_path)
    assert r.returncode == 0, r.stderr
    import numpy as np

    pts = np.load(tmp_path / "pts.npz")
    assert list(pts.keys()) == ["points"] and pts["points"].shape == (10, 2) and pts["points"].dtype == np.float32
    r = run_cli(["sample", f"run={run}", "out=grid.png"], tmp_path)
    assert r.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 0
    # a corrupt checkpoint: one line, exit 2, the earlier run intact
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoints").mkdir()
    (tmp_path / "junk" / "checkpoints" / "last.pt").write_bytes(b"garbage")
    for args in (["train", f"trainer.resume={tmp_path / 'junk'}"], ["sample", f"run={tmp_path / 'junk'}"]):
        r = run_cli(args, tmp_path)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "corrupt" in lines[0], r.stderr
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 4


def test_cli_sample_images(mnist_root, tmp_path):
    r = run_cli(["train", *tiny("gan", "mnist", mnist_root), "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr
    import numpy as np

    r = run_cli(["sample", "run=run", "num_samples=7", "out=x.npz", "seed=3"], tmp_path)
    assert r.returncode == 0, r.stderr
    x = np.load(tmp_path / "x.npz")["images"]
    assert x.shape == (7, 28, 28, 1) and x.dtype == np.uint8
    run_cli(["sample", "run=run", "num_samples=7", "out=y.npz", "seed=3"], tmp_path)
    assert (np.load(tmp_path / "y.npz")["images"] == x).all()  # same seed, same images


def test_multirun_two_jobs(tmp_path):
    r = run_cli(["train", "-m", *tiny("gan", "grid25"), "seed=0,1", "hydra.sweep.dir=sweep"], tmp_path)
    assert r.returncode == 0, r.stderr
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2 and [p.name.split("_")[0] for p in runs] == ["0", "1"]
    seeds = [torch.load(p / "checkpoints" / "last.pt", weights_only=True)["config"]["seed"] for p in runs]
    assert seeds == [0, 1]
    w = [torch.load(p / "checkpoints" / "last.pt", weights_only=True)["model"] for p in runs]
    assert not all(torch.equal(w[0][k], w[1][k]) for k in w[0])


def test_eval_history_is_written(tmp_path):
    cfg = compose(tiny("realnvp", "grid25", extra=["trainer.eval_every=2"]))
    train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "eval_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all("test_nll_nats" in r for r in rows)
