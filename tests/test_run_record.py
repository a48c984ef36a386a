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
    # a resume took the record (its optimizer tensors trained on), so the next resume reads the file again,
    # and a newer file at the same path is read again
    train(compose([*TOY, "trainer.max_steps=3", f"trainer.resume={tmp_path / 'first'}"]), tmp_path / "first")
    assert len(reads) == 2
    assert ckpt.RunRecord.load(tmp_path / "first").step == 3 and len(reads) == 3


def test_validate_is_handed_on_and_a_resume_builds_its_model_once(tmp_path, monkeypatch):
    """As `genlab train trainer.resume=RUN` runs it: the CLI's validate and pre-flight, then the job. The job
    is handed validate's result and the model pre-flight built for its checkpoint, and still resumes exactly."""
    from genlab import config
    from genlab.commands.preflight import Preflight
    from genlab.models.gan import GAN

    train(compose([*TOY, "trainer.max_steps=2"]), tmp_path / "first")
    checks, builds = [], []
    real_validate, real_init = config._validate, GAN.__init__
    monkeypatch.setattr(config, "_validate", lambda cfg, *a: checks.append(1) or real_validate(cfg, *a))
    monkeypatch.setattr(GAN, "__init__", lambda self, *a: builds.append(1) or real_init(self, *a))
    over = [*TOY, "trainer.max_steps=4", f"trainer.resume={tmp_path / 'first'}"]
    cli_cfg = compose(over)
    config.validate(cli_cfg)
    Preflight().train(cli_cfg)
    train(compose(over), tmp_path / "second")  # Hydra's job composes its own copy
    assert (len(checks), len(builds)) == (1, 1)
    # the same resume without the pre-flight builds its own model and ends in the same state
    fresh = tmp_path / "third"
    train(compose(over), fresh)
    assert len(builds) == 2
    a = torch.load(tmp_path / "second" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(fresh / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another config is validated again
    config.validate(compose([*TOY, "trainer.max_steps=5"]))
    assert len(checks) == 2
