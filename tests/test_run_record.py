"""The run record: written once by the trainer (config, the whole Spec, the data description), read by
one constructor (RunRecord.load) in train's resume, preflight, sample and eval; a resume reads last.pt once."""

from __future__ import annotations

import torch

from genlab.commands.common import load_run
from genlab.commands.preflight import check_resume
from genlab.commands.train import train
from genlab.engine import checkpoint as ckpt
from genlab.types import Spec
from tests.conftest import compose

TOY = ["model=gan", "dataset=grid25", "dataset.n_train=128", "dataset.n_test=64", "trainer=debug",
       "trainer.progress=false", "model.generator.hidden=8", "model.discriminator.hidden=8", "trainer.sample_every=0"]


def test_record_round_trips_the_whole_spec(tmp_path):
    train(compose([*TOY, "trainer.max_steps=2"]), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["spec"]["domains"] == 1 and state["spec"]["binarized"] is False  # every Spec field is written
    record = ckpt.RunRecord.load(tmp_path / "run")
    assert record.spec == Spec("points", (2,), None, False, 1) and record.step == 2
    assert record.info["extent"] > 0 and record.config.model.name == "gan"
    run = load_run(str(tmp_path / "run"), device="cpu")
    assert run.spec == record.spec and run.info["step"] == 2
    # a two-domain run keeps its domains (load_run used to drop them)
    two = ckpt.RunRecord.from_state({**state, "spec": {**state["spec"], "domains": 2}}, tmp_path / "x.pt")
    assert two.spec.domains == 2


def test_a_resume_reads_its_checkpoint_once(tmp_path, monkeypatch):
    train(compose([*TOY, "trainer.max_steps=2"]), tmp_path / "first")
    reads = []
    real_load = ckpt.load
    monkeypatch.setattr(ckpt, "load", lambda path: reads.append(path) or real_load(path))
    cfg = compose([*TOY, "trainer.max_steps=4", f"trainer.resume={tmp_path / 'first'}"])
    check_resume(cfg)  # preflight, as the CLI runs it before Hydra's job
    train(cfg, tmp_path / "second")
    assert len(reads) == 1
    assert torch.load(tmp_path / "second" / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    # a newer file at the same path is read again
    train(compose([*TOY, "trainer.max_steps=3", f"trainer.resume={tmp_path / 'first'}"]), tmp_path / "first")
    assert ckpt.RunRecord.load(tmp_path / "first").step == 3 and len(reads) == 2
