"""The new likelihood and auto-encoder models, the runs: each trains a few steps on tiny data, writes
samples, a checkpoint and its evaluation, and resumes bit-identically."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genlab.commands.train import train
from tests.conftest import TINY, assert_same_state, compose

FLOWS = {
    "maf": ["model=maf", "model.hidden=16", "model.n_layers=2"],
    "made": ["model=made", "model.hidden=16"],
    "nsf": ["model=nsf", "model.hidden=8", "model.n_blocks=1", "model.steps_per_scale=1", "model.spline_bins=4"],
}
CASES = {**FLOWS}


def tiny(case: str, root, dataset: str = "mnist", steps: int = 4, extra=()) -> list[str]:
    data = [f"dataset={dataset}"]
    data += [f"dataset.root={root}"] if dataset == "mnist" else ["dataset.n_train=256", "dataset.n_test=128"]
    return compose([*data, *TINY, "trainer.eval_every=2", "trainer.eval_metrics=[nll]", "trainer.eval_samples=2",
                    "trainer.slow_sample_images=4", "model.eval_limit=16", f"trainer.max_steps={steps}",
                    *CASES[case], *extra])


def history(run):
    return [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("case", sorted(FLOWS))
def test_new_flow_trains_evaluates_and_samples(case, mnist_root, tmp_path):
    run = tmp_path / "run"
    train(tiny(case, mnist_root), run)
    assert (run / "samples" / "step_000004.png").is_file()
    last = history(run)[-1]
    assert last["step"] == 4 and last["eval_images"] == 16
    assert math.isfinite(last["test_nll_nats"]) and last["test_nll_nats"] > 0
    assert last["test_bits_per_dim"] == pytest.approx(last["test_nll_nats"] / (784 * math.log(2)))


def resumes_exactly(case, root, tmp_path, dataset="mnist", n=3, extra=()):
    straight, first = tmp_path / "straight", tmp_path / "first"
    train(tiny(case, root, dataset, 2 * n, ["trainer.sample_every=2", *extra]), straight)
    train(tiny(case, root, dataset, n, ["trainer.sample_every=2", *extra]), first)
    train(tiny(case, root, dataset, 2 * n, ["trainer.sample_every=2", f"trainer.resume={first}", *extra]), first)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(first / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 2 * n
    assert_same_state(a, b)
    return a


@pytest.mark.parametrize("case,dataset", [("maf", "grid25"), ("nsf", "mnist")])
def test_new_flow_resumes_bit_identically(case, dataset, mnist_root, tmp_path):
    state = resumes_exactly(case, mnist_root, tmp_path, dataset)
    if case == "maf":  # the batch norms' running averages are state too, and they moved
        means = [v for k, v in state["model"].items() if k.endswith("running_mean")]
        assert means and all(m.abs().sum() > 0 for m in means)


def test_reverse_kl_flow_resumes_bit_identically(mnist_root, tmp_path):
    resumes_exactly("nsf", mnist_root, tmp_path, "ring8", extra=["model.objective=reverse_kl", "model.n_layers=2"])


def test_max_time_clock_cpu_counts_process_seconds(tmp_path, monkeypatch):
    """trainer.max_time_clock=cpu: the budget is read from time.process_time (here a fake one that
    advances 0.5 s per reading), not the wall clock."""
    import time

    from genlab.engine import checkpoint as ckpt

    calls = {"n": 0}

    def fake_cpu():
        calls["n"] += 1
        return 0.5 * calls["n"]

    monkeypatch.setattr(time, "process_time", fake_cpu)
    run = tmp_path / "run"
    train(compose(["model=realnvp", "dataset=ring8", *TINY, "model.hidden=8", "model.n_layers=2",
                   "dataset.n_train=256", "dataset.n_test=128", "trainer.max_steps=100000", "trainer.max_time=3",
                   "trainer.max_time_clock=cpu", "trainer.eval_every=0", "trainer.sample_every=0",
                   "trainer.checkpoint_every=0"]), run)
    state = ckpt.load(run / "checkpoints" / "last.pt")
    # a reading when the loop starts and one (or so) per step: 3 fake seconds last about 6 steps, whatever
    # the wall clock says
    assert 3 <= state["step"] <= 6 and 3.0 <= state["elapsed"] <= 4.5
