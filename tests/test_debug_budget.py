"""trainer=debug is a smoke test for every model: its end-of-run evaluation is bounded by the trainer.

The budget is counted, not timed (robust on a busy machine): samples drawn, images the feature
network embeds or trains on, the NLL's test images and importance samples, ancestral samples.
"""

from __future__ import annotations

import time

import pytest

from genlab.cli import group_options
from tests.conftest import compose, make_mnist

MODELS = group_options("model")
# trainer/debug.yaml's bounds: samples drawn by the evaluation (the GAN grids are cheap; a slow
# sampler draws none).
MAX_EVAL_SAMPLES = 64
MAX_EMBEDDED = 256 + 64       # reference images + samples (the debug feature network's own training aside)
MAX_FEATURENET_TRAIN = 512
MAX_NLL_IMAGES, MAX_NLL_K = 16, 4
GENEROUS_CPU_SECONDS = 90     # only catches the pathological (minutes): the counts are the real check


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """MNIST-format files larger than every debug bound, so an unbounded evaluation shows in the counts."""
    root = tmp_path_factory.mktemp("debugdata")
    make_mnist(root, "MNIST", n_train=1200, n_test=600)
    make_mnist(root, "FashionMNIST", n_train=1200, n_test=600, seed=1)
    return root


def test_every_model_yaml_is_covered():
    assert len(MODELS) >= 15 and {"vae", "pixelcnn", "wgan_gp", "glow", "cyclegan"} <= set(MODELS)


@pytest.mark.slow  # 19 models x a few seconds
@pytest.mark.parametrize("model", MODELS)
def test_debug_run_stays_within_its_budget(model, data_root, tmp_path, monkeypatch, tmp_path_factory):
    from genlab.commands.train import train
    from genlab.engine.trainer import Trainer
    from genlab.metrics import featurenet as fnet

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path_factory.getbasetemp() / "debug_cache"))
    monkeypatch.setenv("GENLAB_DATA", str(data_root))
    overrides = [f"model={model}", "trainer=debug", "trainer.progress=false", f"dataset.root={data_root}",
                 "dataset.download=false"]
    if model != "cyclegan":  # its YAML picks its two domains (Fashion-MNIST sneakers and sandals)
        overrides.append("dataset=fashion_mnist")
    if model == "vqvae_prior":  # a second stage: it trains on the codes of a VQ-VAE run, made here as a debug run
        first = tmp_path / "vqvae"
        train(compose(["model=vqvae", *overrides[1:]]), first)
        overrides.append(f"model.vqvae_run={first}")
    cfg = compose(overrides)
    # Every debug run ends with an evaluation, bounded like the others (CycleGAN translates, it has
    # nothing to sample for the sample metrics).
    if not cfg.trainer.eval_every and model != "cyclegan":
        cfg = compose([*overrides, f"trainer.eval_every={cfg.trainer.max_steps}"])
    counts = {"eval_samples": 0, "sample_calls": 0, "embedded": 0, "featurenet_train": 0, "nll": []}
    phase = {"eval": False}

    setup = Trainer.setup

    def counting_setup(self, m, data):
        setup(self, m, data)
        sample, evaluate = m.sample, m.evaluate

        def counted_sample(n, *a, **kw):
            counts["eval_samples"] += int(n) if phase["eval"] else 0
            counts["sample_calls"] += 1
            return sample(n, *a, **kw)

        def counted_evaluate(data, **kw):
            out = evaluate(data, **kw)
            if out:
                counts["nll"].append((int(out.get("eval_images", 0)), int(out.get("eval_k", 0))))
            return out

        m.sample, m.evaluate = counted_sample, counted_evaluate

    run_eval = Trainer.run_eval

    def counted_run_eval(self):
        phase["eval"] = True
        try:
            return run_eval(self)
        finally:
            phase["eval"] = False

    embed = fnet.FeatureNet.embed
    fn_train = fnet.train

    def counted_embed(self, x, *a, **kw):
        counts["embedded"] += len(x)
        return embed(self, x, *a, **kw)

    def counted_train(data, recipe, device="cpu"):
        counts["featurenet_train"] = max(counts["featurenet_train"], recipe.n_train)
        return fn_train(data, recipe, device)

    monkeypatch.setattr(Trainer, "setup", counting_setup)
    monkeypatch.setattr(Trainer, "run_eval", counted_run_eval)
    monkeypatch.setattr(fnet.FeatureNet, "embed", counted_embed)
    monkeypatch.setattr(fnet, "train", counted_train)
    t0 = time.process_time()  # CPU seconds of this process: what other jobs on the machine do not change
    train(cfg, tmp_path)
    seconds = time.process_time() - t0

    assert cfg.trainer.eval_every == 0 or (tmp_path / "eval_history.jsonl").is_file()  # the end-of-run eval ran
    assert counts["eval_samples"] <= MAX_EVAL_SAMPLES, counts
    assert counts["embedded"] <= MAX_EMBEDDED, counts
    assert counts["featurenet_train"] <= MAX_FEATURENET_TRAIN, counts
    for images, k in counts["nll"]:
        assert images <= MAX_NLL_IMAGES and k <= MAX_NLL_K, counts
    if getattr(cfg.model, "_target_", "").endswith("PixelCNN"):
        assert counts["sample_calls"] == 0  # no ancestral sampling in a smoke test
        assert counts["nll"] == [(16, 0)]
    assert seconds < GENEROUS_CPU_SECONDS
