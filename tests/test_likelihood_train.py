"""Likelihood models, the runs: every model/config trains a few steps on tiny data, writes events,
samples, a checkpoint and eval_history with its protocol, and resumes; ActNorm survives a checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genlab.commands.train import train
from genlab.nets.flows import ActNorm
from tests.conftest import TINY, compose, nets_for, run_cli

SMALL = {
    "vae": ["model.encoder.base_channels=8", "model.decoder.base_channels=8", "model.z_dim=4",
            "model.eval_k=20", "model.eval_limit=16"],
    "realnvp": ["model.hidden=8", "model.n_blocks=1", "model.steps_per_scale=2", "model.eval_limit=16"],
    "glow": ["model.hidden=8", "model.n_blocks=1", "model.steps_per_scale=2", "model.eval_limit=16"],
    "nice": ["model.hidden=16", "model.n_blocks=1", "model.eval_limit=16"],
    "pixelcnn": ["model.hidden=8", "model.n_layers=2", "model.eval_limit=16", "model.visual_samples=4",
                 "model.progress=false"],
}
CASES = {
    "vae": ["model=vae", *SMALL["vae"]],
    "vae_binarized": ["model=vae", "dataset.binarize=dynamic", *SMALL["vae"]],
    "vae_gaussian_warmup_freebits": ["model=vae", "model.decoder_dist=gaussian", "model.kl_warmup_steps=3",
                                     "model.free_bits=0.1", "model.encoder.arch=mlp", "model.decoder.arch=mlp",
                                     *nets_for(SMALL["vae"], "points")],
    "beta_vae": ["model=beta_vae", *SMALL["vae"]],
    "iwae": ["model=iwae", "dataset.binarize=static", *SMALL["vae"]],
    "realnvp": ["model=realnvp", *SMALL["realnvp"]],
    "glow": ["model=glow", *SMALL["glow"]],
    "nice": ["model=nice", *SMALL["nice"]],
    "pixelcnn": ["model=pixelcnn", *SMALL["pixelcnn"]],
    "pixelcnn_conditional": ["model=pixelcnn", "model.conditional=true", *SMALL["pixelcnn"]],
}


def _cfg(root, overrides, steps=4):
    # The sample-based evaluator (FID, ...) is tested in test_eval.py; here only the model's own NLL.
    # trainer.eval_nll_*=null, slow_sample_images=null: the models' own eval_k / eval_limit /
    # visual_samples (these nets are tiny), not the debug trainer's bounds.
    return compose(["dataset=mnist", f"dataset.root={root}", *TINY, "trainer.eval_every=2",
                    "trainer.eval_metrics=[nll]", "trainer.eval_samples=2", "trainer.eval_nll_k=null",
                    "trainer.eval_nll_images=null", "trainer.slow_sample_images=null", f"trainer.max_steps={steps}", *overrides])


def _history(run):
    return [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_likelihood_model_trains_evaluates_and_resumes(case, mnist_root, tmp_path):
    run = tmp_path / "run"
    train(_cfg(mnist_root, CASES[case]), run)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "samples" / "step_000004.png").is_file()
    assert (run / "checkpoints" / "last.pt").is_file()
    hist = _history(run)
    assert [h["step"] for h in hist] == [2, 4]
    last = hist[-1]
    assert math.isfinite(last["test_nll_nats"]) and last["test_nll_nats"] > 0
    assert last["test_bits_per_dim"] == pytest.approx(last["test_nll_nats"] / (784 * math.log(2)))
    assert last["eval_images"] == 16
    binarize = next((o.split("=")[1] for o in CASES[case] if o.startswith("dataset.binarize")), "none")
    assert last["binarize"] == binarize
    if "vae" in case:
        assert last["test_nll_nats"] <= last["test_neg_elbo_nats"] + 1.0  # importance sampling tightens
        assert last["eval_k"] == 20 and 0 <= last["active_units"] <= 4
        assert last["decoder"] == ("bernoulli" if binarize != "none" else
                                   "gaussian" if "gaussian" in case else "logistic")
    # resume: continues from step 4 to 6 with the same config
    train(_cfg(mnist_root, [*CASES[case], f"trainer.resume={run}"], steps=6), run)
    assert [h["step"] for h in _history(run)] == [2, 4, 6]


def _actnorms(model):
    return [m for m in model.modules() if isinstance(m, ActNorm)]


@pytest.mark.parametrize("model", ["glow", "realnvp"])
def test_actnorm_init_survives_a_trainer_checkpoint(model, mnist_root, tmp_path):
    from genlab.commands.common import load_run

    over = [f"model={model}", *SMALL[model], "trainer.eval_every=0"]
    a, b = tmp_path / "a", tmp_path / "b"
    train(_cfg(mnist_root, over, steps=4), a)  # uninterrupted
    train(_cfg(mnist_root, over, steps=2), b)
    loaded = load_run(str(b), device="cpu").model
    norms = _actnorms(loaded)
    assert norms and all(bool(n.initialized) and n._ready for n in norms)
    before = [(n.loc.clone(), n.log_scale.clone()) for n in norms]
    loaded.train()
    loaded.flow(torch.randn(8, 1, 28, 28))  # a training-mode forward on other data must not re-initialise
    for n, (loc, ls) in zip(norms, before):
        assert torch.equal(n.loc, loc) and torch.equal(n.log_scale, ls)
    # resuming 2 -> 4 lands exactly where the uninterrupted run did (a re-init would not)
    train(_cfg(mnist_root, [*over, f"trainer.resume={b}"], steps=4), b)
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)["model"]
    sb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k)


def test_cli_trains_a_binarised_vae_and_logs_nll(mnist_root, tmp_path):
    r = run_cli(["train", "model=vae", "dataset=mnist", f"dataset.root={mnist_root}", "dataset.binarize=dynamic",
                 *TINY, "trainer.eval_every=4", *SMALL["vae"], f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert r.returncode == 0, r.stderr
    h = _history(tmp_path / "run")[-1]
    assert h["binarize"] == "dynamic" and h["decoder"] == "bernoulli" and h["test_nll_nats"] > 0
    assert "test_nll_nats=" in r.stderr + r.stdout


def test_cli_trains_nice_and_its_nll_falls(mnist_root, tmp_path):
    """NICE from the CLI: a debug run that logs bits/dim, evaluates with the flows' protocol and improves."""
    r = run_cli(["train", "model=nice", "dataset=mnist", f"dataset.root={mnist_root}", *TINY, *SMALL["nice"],
                 "trainer.max_steps=12", "trainer.eval_every=4", "trainer.eval_metrics=[nll]",
                 f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert r.returncode == 0, r.stderr
    hist = _history(tmp_path / "run")
    assert [h["step"] for h in hist] == [4, 8, 12]
    assert hist[0]["n_bits"] == 8 and hist[0]["dequantization"] == "uniform"
    bpd = [h["test_bits_per_dim"] for h in hist]
    assert bpd[-1] < bpd[0], bpd  # evaluation noise is fixed (EVAL_SEED): the gap is the model's


def test_cli_refuses_bernoulli_on_grey_images(mnist_root, tmp_path):
    r = run_cli(["train", "model=vae", "dataset=mnist", f"dataset.root={mnist_root}", "model.decoder_dist=bernoulli"],
                tmp_path)
    assert r.returncode == 2 and "dataset.binarize" in r.stderr


@pytest.mark.slow
def test_realnvp_with_actnorm_keeps_improving_over_300_steps(mnist_root, tmp_path):
    """The nets author's smoke run (300 steps on toy images) saw bits/dim go back up without
    normalisation between couplings; with ActNorm the held-out bits/dim must keep falling.

    The evaluation's noise is fixed (likelihood.EVAL_SEED), so successive evaluations differ by the
    model only; what is left is SGD's own wobble (one 50-step interval once rose by 0.02), so the
    checks compare trends with margins it cannot cross rather than every pair of evaluations."""
    over = ["model=realnvp", "model.norm=actnorm", "model.hidden=32", "model.n_blocks=1", "trainer.batch_size=16",
            "trainer.sample_every=0", "trainer.checkpoint_every=0", "trainer.log_every=50"]
    train(compose(["dataset=mnist", f"dataset.root={mnist_root}", *TINY, *over, "trainer.max_steps=300",
                   "trainer.eval_every=50"]), tmp_path / "run")
    bpd = [h["test_bits_per_dim"] for h in _history(tmp_path / "run")]
    assert len(bpd) == 6
    assert bpd[-1] < bpd[0] - 0.1, bpd  # it learns
    assert sum(bpd[3:]) / 3 < sum(bpd[:3]) / 3 - 0.05, bpd  # the last 150 steps beat the first 150
    assert bpd[-1] <= min(bpd) + 0.03, bpd  # still at its best at the end: no rebound
    assert all(b <= a + 0.05 for a, b in zip(bpd, bpd[1:])), bpd  # no interval goes back up by more than noise


def test_genlab_eval_reports_a_vae_nll_with_its_protocol(tmp_path):
    run = tmp_path / "vae"
    train(compose([*TINY, "model=vae", "dataset=grid25", "dataset.n_train=500", "dataset.n_test=200",
                   "model.encoder.hidden=16", "model.decoder.hidden=16", "model.eval_k=10", "model.eval_limit=50"]),
          run)
    r = run_cli(["eval", f"run={run}", "num_samples=200", f"out={tmp_path / 'eval.json'}"], tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "eval.json").read_text()
    assert "test_nll_nats" in text and "gaussian" in text  # the number and its protocol (decoder)
