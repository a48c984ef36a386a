"""TensorBoard's custom-scalars layout: D's and G's losses on one chart, the Wasserstein estimate, gradient
norms and each eval metric on their own; only charts a logged tag fills; written into a real run's events
next to a working HParams tab."""

from __future__ import annotations

import re

from genlab.engine.tb_layout import Layout, layout
from tests.conftest import TINY, compose

WGAN_GP_TAGS = ["critic/loss", "generator/loss", "critic/wasserstein", "critic/gradient_penalty",
                "critic/grad_norm", "generator/grad_norm", "lr/critic", "lr/generator", "perf/steps_per_sec",
                "eval/fid[points]", "eval/kid[points]", "eval/kid_std[points]", "eval/modes", "perf/eval_seconds"]


def charts(lay: dict) -> dict[str, list[str]]:
    """{chart title: the tags it draws} of a layout (patterns are ^escaped-tag$)."""
    return {title: [re.sub(r"\\(.)", r"\1", p[1:-1]) for p in spec[1]]
            for cat in lay.values() for title, spec in cat.items()}


def test_wgan_gp_charts():
    lay = layout(WGAN_GP_TAGS)
    assert list(lay) == ["losses", "optimisation", "evaluation"]
    c = charts(lay)
    assert c["losses (every step's: D and G together)"] == ["critic/loss", "generator/loss"]
    assert c["Wasserstein estimate (critic)"] == ["critic/wasserstein"]
    assert c["penalties"] == ["critic/gradient_penalty"]
    assert c["gradient norms"] == ["critic/grad_norm", "generator/grad_norm"]
    assert c["fid[points]"] == ["eval/fid[points]"]
    assert c["kid[points]"] == ["eval/kid[points]", "eval/kid_std[points]"]  # the spread beside its metric
    assert c["modes"] == ["eval/modes"]
    assert "D(x) and D(G(z))" not in c  # no empty charts: WGAN-GP's critic logs no D_x
    for spec in (s for cat in lay.values() for s in cat.values()):
        assert spec[0] == "Multiline"


def test_a_vae_gets_no_gan_charts_and_the_patterns_are_exact():
    c = charts(layout(["model/loss", "model/kl", "lr/model", "eval/test_bits_per_dim", "images/samples"]))
    assert c == {"losses (every step's: D and G together)": ["model/loss"], "learning rates": ["lr/model"],
                 "test_bits_per_dim": ["eval/test_bits_per_dim"]}
    lay = layout(["eval/fid[lenet-mnist]"])  # brackets are escaped: the regex matches that tag alone
    pattern = lay["evaluation"]["fid[lenet-mnist]"][1][0]
    assert re.search(pattern, "eval/fid[lenet-mnist]") and not re.search(pattern, "eval/fidl")


def test_the_layout_is_rewritten_only_when_a_tag_adds_a_chart():
    class Writer:
        def __init__(self):
            self.layouts = []

        def add_custom_scalars(self, lay):
            self.layouts.append(lay)

    w = Writer()
    lay = Layout(w)
    lay.update(["critic/loss", "generator/loss"])
    lay.update(["critic/loss"])
    lay.update(["images/x"])  # no chart draws it
    assert len(w.layouts) == 1
    lay.update(["eval/modes"])
    assert len(w.layouts) == 2 and "evaluation" in w.layouts[-1]


def test_a_run_writes_the_layout_and_keeps_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    from genlab.commands.train import train

    run = tmp_path / "run"
    train(compose([*TINY, "model=wgan_gp", "dataset=grid25", "dataset.n_train=512", "dataset.n_test=256",
                   "trainer.eval_every=2", "trainer.eval_samples=200", "trainer.sample_every=0",
                   "model.generator.hidden=16", "model.discriminator.hidden=16"]), run)
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    events = acc.Tensors(metadata.CONFIG_SUMMARY_TAG)
    proto = layout_pb2.Layout()
    proto.ParseFromString(events[-1].tensor_proto.string_val[0])  # TensorBoard reads the latest one
    got = {c.title: list(c.multiline.tag) for cat in proto.category for c in cat.chart}
    scalars = set(acc.Tags()["scalars"])
    loss = got["losses (every step's: D and G together)"]
    assert any(re.search(p, "critic/loss") for p in loss) and any(re.search(p, "generator/loss") for p in loss)
    assert "Wasserstein estimate (critic)" in got and "gradient norms" in got and "modes" in got
    for title, patterns in got.items():  # every chart draws tags the run really logged
        assert all(any(re.search(p, t) for t in scalars) for p in patterns), title
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")  # the HParams tab still works
