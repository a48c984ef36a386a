"""DDPM and flow matching through the loop and the CLI: debug runs, pictures, the NLL in the likelihood
table, exact resume, genlab sample's sampler settings and bad input as one line."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from genlab.commands.train import train
from tests.conftest import assert_same_state, compose, run_cli
from tests.test_train import scalars

POINTS = ["dataset=grid25", "dataset.n_train=512", "dataset.n_test=256", "model.net.hidden=32"]
IMAGES = ["dataset=mnist", "dataset.download=false", "model.net.base_channels=8", "model.net.channel_mult=[1,2]"]


def tiny(model: str, data: list[str], root=None, extra=()) -> list[str]:
    o = [f"model={model}", "trainer=debug", "trainer.progress=false", *data]
    if root is not None:
        o.append(f"dataset.root={root}")
    return o + list(extra)


def _history(run):
    return [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", ["ddpm", "flow_matching"])
@pytest.mark.parametrize("data", ["points", "images"])
def test_debug_run_trains_evaluates_and_draws_in_seconds(model, data, mnist_root, tmp_path):
    cfg = compose(tiny(model, POINTS if data == "points" else IMAGES, mnist_root if data == "images" else None,
                       ["trainer.eval_every=4", "trainer.eval_metrics=[nll]"]))
    t0 = time.perf_counter()
    train(cfg, tmp_path)
    assert time.perf_counter() - t0 < 30
    ev = _history(tmp_path)[-1]
    assert ev["step"] == 4 and np.isfinite(ev["test_bits_per_dim"]) and ev["test_bits_per_dim"] > 0
    assert ev["eval_images"] == 16  # trainer=debug bounds the NLL to 16 test examples ...
    if model == "ddpm":
        assert ev["bound_terms"] == 4 and ev["nll"].startswith("variational bound")  # ... and 4 terms of the bound
    else:
        assert ev["ode_steps"] == 4 and ev["divergence"] == ("exact" if data == "points" else "hutchinson")
    tags = scalars(tmp_path)
    assert "denoiser/mse" in tags["scalars"]
    want = "images/point_cloud_over_t" if data == "points" else "images/denoising_trajectory"
    assert {"images/samples", want} <= set(tags["images"])
    assert (tmp_path / "samples" / "step_000004.png").is_file()


def test_periodic_pictures_take_at_most_trainer_sample_steps(mnist_root, tmp_path, monkeypatch):
    from genlab.models.diffusion import DDPM

    seen = []
    chain = DDPM.chain
    monkeypatch.setattr(DDPM, "chain", lambda self, x, p, steps, *a: (seen.append(steps), chain(self, x, p, steps, *a))[1])
    train(compose(tiny("ddpm", POINTS, extra=["trainer.sample_steps=3", "trainer.max_steps=2"])), tmp_path)
    assert seen and set(seen) == {3}  # the model's own sampler takes all T = 1000 steps


@pytest.mark.parametrize("model, data, extra", [
    ("ddpm", "points", ["model.min_snr_gamma=5", "model.target=v"]),
    ("flow_matching", "points", []),
    ("ddpm", "images", ["model.conditional=true", "model.schedule=cosine"]),
])
def test_resume_is_bit_identical(model, data, extra, mnist_root, tmp_path):
    over = POINTS if data == "points" else IMAGES
    root = mnist_root if data == "images" else None
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    n = 3
    train(compose(tiny(model, over, root, [*extra, f"trainer.max_steps={2 * n}"])), straight)
    train(compose(tiny(model, over, root, [*extra, f"trainer.max_steps={n}"])), first)
    train(compose(tiny(model, over, root, [*extra, f"trainer.max_steps={2 * n}", f"trainer.resume={first}"])), second)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(second / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 2 * n
    assert int(a["model"]["net_ema.updates"]) == 2 * n  # the EMA's warm-up count travels with it
    assert_same_state(a, b)


@pytest.mark.slow
def test_cli_samples_with_steps_eta_and_guidance(mnist_root, tmp_path):
    run = tmp_path / "run"
    r = run_cli(["train", *tiny("ddpm", IMAGES, mnist_root, ["model.conditional=true", "trainer.max_steps=2",
                                                               f"hydra.run.dir={run}"])], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s.npz"
    r = run_cli(["sample", f"run={run}", "num_samples=6", "steps=5", "eta=0", "guidance=2", "labels=[3]",
                 f"out={out}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    z = np.load(out)
    assert z["images"].shape == (6, 28, 28, 1) and z["images"].dtype == np.uint8 and (z["labels"] == 3).all()
    # eta = 0 is deterministic given the seed's starting noise
    again = tmp_path / "s2.npz"
    assert run_cli(["sample", f"run={run}", "num_samples=6", "steps=5", "eta=0", "guidance=2", "labels=[3]",
                    f"out={again}"], cwd=tmp_path).returncode == 0
    assert np.array_equal(np.load(again)["images"], z["images"])
    # the DDIM path of two noises
    r = run_cli(["sample", f"run={run}", "mode=interp", "num_samples=8", "path_length=4", "steps=3", "eta=0",
                 f"out={tmp_path / 'i.npz'}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "i.npz")["images"].shape[0] == 8


# Through the CLI: one line, exit 2, no run folder.
BAD_CLI = {
    "steps above T": (["sample", "run={ddpm}", "steps=1001"], "steps must be in 1..1000"),
    "eta on flow matching": (["eval", "run={fm}", "eta=0.5"], "eta= does not apply to flow_matching"),
    "unknown schedule": (["train", "model=ddpm", "model.schedule=quadratic"], "model.schedule must be one of"),
}
# The same checks in-process (each CLI start costs seconds): the config's validation ...
BAD_CONFIG = {
    "unknown target": (["model=ddpm", "model.target=score"], "model.target must be one of"),
    "unknown sampler": (["model=flow_matching", "model.sampler=rk4"], "model.sampler must be one of"),
    "sample_steps above T": (["model=ddpm", "model.sample_steps=2000"], "model.sample_steps must be <="),
    "conditional on points": (["model=ddpm", "model.conditional=true"], "needs a labelled dataset"),
    "guidance in training config": (["model=ddpm", "model.guidance=2"], "applies to class-conditional"),
    "unet on points": (["model=ddpm", "model.net.arch=unet"], "needs images"),
    "bad trainer bound": (["model=ddpm", "trainer.sample_steps=0"], "trainer.sample_steps must be >= 1"),
}
# ... and the sampler settings of genlab sample / eval
BAD_SAMPLING = {
    "guidance unconditional": ("ddpm", {"guidance": 3.0}, "guidance= needs a class-conditional model"),
    "negative eta": ("ddpm", {"eta": -1.0}, "eta must be >= 0"),
    "zero steps": ("fm", {"steps": 0}, "steps must be >= 1"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion_runs")
    out = {}
    for name, model in (("ddpm", "ddpm"), ("fm", "flow_matching")):
        train(compose(tiny(model, POINTS, extra=["trainer.max_steps=1"])), root / name)
        out[name] = root / name
    return out


@pytest.mark.parametrize("case", list(BAD_CLI))
def test_bad_input_is_one_line(case, runs, tmp_path):
    args, message = BAD_CLI[case]
    args = [a.format(**runs) for a in args]
    if args[0] == "train":
        args += ["dataset=grid25", "trainer=debug", f"hydra.run.dir={tmp_path / 'run'}"]
    r = run_cli(args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("genlab: error:") and message in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_bad_config_is_refused_before_training(case):
    from genlab.config import validate
    from genlab.errors import GenlabError

    overrides, message = BAD_CONFIG[case]
    with pytest.raises(GenlabError, match=message.replace("(", r"\(")):
        validate(compose(["dataset=grid25", "trainer=debug", *overrides]))


@pytest.mark.parametrize("case", list(BAD_SAMPLING))
def test_bad_sampler_settings_are_refused(case, runs):
    from genlab.commands.common import load_run
    from genlab.commands.sample import sampler_options
    from genlab.errors import GenlabError
    from omegaconf import OmegaConf

    name, opts, message = BAD_SAMPLING[case]
    run = load_run(str(runs[name]), "last", "cpu")
    with pytest.raises(GenlabError, match=message):
        sampler_options(OmegaConf.create(opts), run.model)
