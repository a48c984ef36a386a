"""genlab zoo: a tiny zoo end to end (table against the runs' own eval.json, gallery tiles, rerun skips),
bad input as one line before any job starts, --help, and the trainer's evaluation by training time."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import run_cli

from genlab.commands import zoo
from genlab.errors import GenlabError

TINY_ZOO = ["zoo.models=[dcgan,vae]", "zoo.datasets=[fashion_mnist]", "zoo.budget=2s", "zoo.samples=64",
            "zoo.eval_every=1s", "trainer=debug", "trainer.num_threads=1"]


@pytest.mark.slow
def test_tiny_zoo_end_to_end(tmp_path, mnist_root):
    env = {"GENLAB_DATA": str(mnist_root)}
    out = tmp_path / "zoo"
    r = run_cli(["zoo", *TINY_ZOO, f"zoo.out={out}"], tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["model"]: row for row in csv.DictReader(open(out / "zoo.csv"))}
    assert set(rows) == {"dcgan", "vae"}
    for model, row in rows.items():
        job = out / "runs" / "fashion_mnist" / model / "s0"
        ev = json.loads((job / "eval.json").read_text())
        st = json.loads((job / "status.json").read_text())
        assert row["status"] == "done" and st["stopped_by"] == "max_time" and st["train_time"] >= 2.0
        assert row["recipe"] == "paper"  # the conftest's GENLAB_RECIPE, as each run's checkpoint records it
        fid = next(v for k, v in ev["values"].items() if k.startswith("fid["))
        assert math.isclose(float(row["fid_mean"]), fid, rel_tol=1e-9)
        assert ev["num_samples"] == 64
        assert int(float(row["steps_mean"])) == st["step"]
        assert math.isclose(float(row["steps_per_s_mean"]), st["step"] / st["train_time"], rel_tol=1e-9)
        assert float(row["s_per_1k_samples_mean"]) > 0
        history = [json.loads(x) for x in (job / "eval_history.jsonl").read_text().splitlines()]
        assert history[-1]["step"] == st["step"]  # the curve ends where training did
        blurred = next(v for k, v in ev["floor_blurred"].items() if k.startswith("fid["))
        classes = next(v for k, v in ev["values"].items() if k.startswith("classes_covered"))
        all_classes = next(v for k, v in ev["floor"].items() if k.startswith("classes_covered"))
        assert (row["target"] == "met") == (fid < blurred and classes >= all_classes), row["target"]
    assert "test_bits_per_dim_mean" in rows["vae"] and rows["vae"]["test_bits_per_dim_mean"] != ""
    assert rows["dcgan"]["test_bits_per_dim_mean"] == ""  # a GAN has no likelihood
    md = (out / "zoo.md").read_text()
    import genlab

    for text in ("Protocol:", "64 samples per run", "target: FID below the blurred floor's", "feature network lenet-fashion_mnist", "real data (test split)",
                 "commit", "cores", f"runs trained on: {genlab.machine_name()}: 2 job(s)"):
        assert text in md, text
    from PIL import Image

    g = Image.open(out / "gallery.png")
    assert g.size == (2 * (zoo.TILE + 8), zoo.TILE + 22)  # one tile per model, side by side
    assert (out / "zoo_fid.png").is_file()

    before = {m: json.loads((out / "runs" / "fashion_mnist" / m / "s0" / "status.json").read_text()) for m in rows}
    again = run_cli(["zoo", *TINY_ZOO, f"zoo.out={out}"], tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "genlab zoo: training" not in again.stdout  # every job was finished: nothing is trained again
    for m in rows:
        assert json.loads((out / "runs" / "fashion_mnist" / m / "s0" / "status.json").read_text()) == before[m]

    # A zoo copied without its checkpoints (scripts/zoo_light.py, as committed under docs/results/) still
    # tabulates the same, and a rerun into the copy trains nothing.
    import subprocess
    import sys

    from conftest import REPO

    light = tmp_path / "light"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "zoo_light.py"), str(out), str(light)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not list(light.glob("runs/**/*.pt")) and (light / "runs/fashion_mnist/vae/s0/eval.json").is_file()
    again = run_cli(["zoo", *TINY_ZOO, f"zoo.out={light}"], tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "genlab zoo: training" not in again.stdout
    assert (light / "zoo.csv").read_text() == (out / "zoo.csv").read_text()
    assert Image.open(light / "gallery.png").size == g.size

    # Every eval.json names the training of its feature network (the id is the recipe's); jobs scored by
    # two trainings of one recipe (its cache rebuilt, e.g. on another machine) are flagged in the header.
    assert "trainings of the feature network" not in md
    ev_path = light / "runs/fashion_mnist/vae/s0/eval.json"
    ev = json.loads(ev_path.read_text())
    assert len(ev["feature_networks"][0]["weights"]) == 12
    ev["feature_networks"][0]["weights"] = "0123456789ab"
    ev_path.write_text(json.dumps(ev))
    again = run_cli(["zoo", *TINY_ZOO, f"zoo.out={light}"], tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    flagged = (light / "zoo.md").read_text()
    assert "rows scored by 2 trainings of the feature network" in flagged
    assert "weights 0123456789ab: 1 job(s)" in flagged


@pytest.mark.slow
def test_a_two_stage_row_trains_on_its_first_stage_run_of_the_same_zoo(tmp_path, mnist_root):
    """vqvae_prior is trained after vqvae, on that row's run of the same seed, and tabulated like any row."""
    out = tmp_path / "zoo"
    args = ["zoo", "zoo.models=[vqvae_prior,vqvae]", *TINY_ZOO[1:], f"zoo.out={out}"]
    r = run_cli(args, tmp_path, env={"GENLAB_DATA": str(mnist_root)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.index("training vqvae on") < r.stdout.index("training vqvae_prior on")
    rows = {row["model"]: row for row in csv.DictReader(open(out / "zoo.csv"))}
    assert rows["vqvae"]["status"] == rows["vqvae_prior"]["status"] == "done"
    import torch

    prior = out / "runs" / "fashion_mnist" / "vqvae_prior" / "s0"
    state = torch.load(prior / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert Path(state["config"]["model"]["vqvae_run"]) == out / "runs" / "fashion_mnist" / "vqvae" / "s0"
    ev = json.loads((prior / "eval.json").read_text())
    for model in ("vqvae", "vqvae_prior"):  # the ELBO's bits/dim: uniform code prior, then the PixelCNN's
        ev = json.loads((out / "runs" / "fashion_mnist" / model / "s0" / "eval.json").read_text())
        bpd = ev["values"]["test_elbo_bits_per_dim"]
        assert math.isclose(float(rows[model]["test_elbo_bits_per_dim_mean"]), bpd, rel_tol=1e-9)
    assert "two-stage rows (vqvae_prior on vqvae)" in (out / "zoo.md").read_text()


def test_diffusion_is_scored_with_its_runs_sample_steps():
    """The zoo evaluates and times a diffusion run with its trainer.sample_steps, not the chain's T steps."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"trainer": {"sample_steps": 50}})
    assert zoo.sample_steps(SimpleNamespace(cfg=cfg, model=SimpleNamespace(sample_options=("steps", "eta")))) == 50
    assert zoo.sample_steps(SimpleNamespace(cfg=cfg, model=SimpleNamespace(sample_options=()))) is None
    cfg.trainer.sample_steps = None
    assert zoo.sample_steps(SimpleNamespace(cfg=cfg, model=SimpleNamespace(sample_options=("steps",)))) is None


def test_bad_input_is_one_line_before_any_job(tmp_path):
    out = tmp_path / "zoo"
    r = run_cli(["zoo", "zoo.models=[nosuch]", f"zoo.out={out}"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("genlab: error: unknown model 'nosuch'") and "Traceback" not in r.stderr
    assert not out.exists()
    cases = [
        (["zoo.suite=nosuch"], "unknown suite 'nosuch'"),
        (["zoo.budget=5 minutes"], "zoo.budget=5 minutes is not a duration"),
        (["zoo.models=[cyclegan]", "zoo.datasets=[grid25]"], "model cyclegan cannot run on dataset grid25"),
        (["zoo.models=[pixelcnn]", "zoo.datasets=[grid25,ring8]"], "model pixelcnn cannot run on dataset grid25"),
        (["zoo.seeds=0"], "zoo.seeds must be a whole number >= 1"),
        (["zoo.colour=red"], "unknown key zoo.colour"),
        (["zoo.models=[vqvae_prior]"], r"add vqvae to zoo.models \(zoo.models=\[vqvae,vqvae_prior\]\)"),
        (["zoo.models=[vqvae,vqvae_prior]", "model.n_layers=0"],
         "invalid config for model=vqvae dataset=fashion_mnist: Could not override 'model.n_layers'"),
    ]
    for args, message in cases:
        with pytest.raises(GenlabError, match=message):
            zoo.run([*args, f"zoo.out={out}"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GenlabError, match="zoo.out=.* is a file"):
        zoo.run([f"zoo.out={blocker}"])
    assert not out.exists()


def test_models_go_where_their_class_says():
    opts, over, given = zoo.parse_args(["zoo.models=[dcgan,cyclegan,cgan]"])
    cells = zoo.zoo_cells(opts, over, Path("/nonexistent"), given)
    where = {(c.model, c.dataset) for c in cells}
    assert where == {("dcgan", "fashion_mnist"), ("dcgan", "grid25"), ("dcgan", "ring8"),
                     ("cyclegan", "unpaired_sneaker_sandal"), ("cgan", "fashion_mnist")}
    # a two-stage row goes where its first stage goes, and names the row it trains on
    opts, over, given = zoo.parse_args(["zoo.models=[vqvae_prior,vqvae]"])
    cells = zoo.zoo_cells(opts, over, Path("/nonexistent"), given)
    assert [(c.model, c.dataset) for c in cells] == [("vqvae_prior", "fashion_mnist"), ("vqvae", "fashion_mnist")]
    assert cells[0].first_stage is cells[1] and cells[0].stage_key == "vqvae_run" and cells[1].first_stage is None


def test_help_lists_suites_models_and_keys(tmp_path):
    r = run_cli(["zoo", "--help"], tmp_path)
    assert r.returncode == 0
    for text in ("zoo.budget", "zoo.models", "zoo.suite", "pacgan_toy", "stacked", "wgan_gp", "cyclegan", "vae"):
        assert text in r.stdout, text


def test_eval_and_checkpoint_follow_training_time(tmp_path, monkeypatch):
    from conftest import compose

    from genlab.commands.train import train

    cfg = compose(["model=gan", "dataset=grid25", "trainer=debug", "trainer.progress=false", "trainer.max_steps=30",
                   "trainer.eval_every_time=1", "trainer.checkpoint_every_time=1", "trainer.checkpoint_every=0",
                   "trainer.eval_samples=100", "dataset.n_train=256", "dataset.n_test=128"])
    from genlab.engine import trainer as trainer_mod

    saved = []
    monkeypatch.setattr(trainer_mod.Trainer, "train_time", lambda self: self.step * 0.25)  # 4 steps a second
    real_save = trainer_mod.Trainer.save
    monkeypatch.setattr(trainer_mod.Trainer, "save", lambda self, name="last": saved.append(self.step) or real_save(self, name))
    train(cfg, tmp_path / "run")
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "eval_history.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12, 16, 20, 24, 28, 30]  # each second of training, and the last step
    assert saved == [4, 8, 12, 16, 20, 24, 28, 30]


def test_jobs_are_counted_per_training_of_the_feature_network():
    """An eval.json from before weights digests were kept counts with the training of its accuracy; the
    protocol (header, floor rows) is the first job's that used a feature network, not a bits/dim-only job's."""
    from genlab.commands.zoo import note_protocol

    old = {"feature_networks": [{"id": "lenet-x", "test_accuracy": 0.9032}]}
    here = {"feature_networks": [{"id": "lenet-x", "test_accuracy": 0.9031, "weights": "aaa"}]}
    again = {"feature_networks": [{"id": "lenet-x", "test_accuracy": 0.9032, "weights": "bbb"}]}
    protocol = {}
    note_protocol(protocol, "fashion_mnist", {"feature_networks": [], "metrics": []})  # bits/dim alone (MAF)
    for ev in (old, old, here, again, old):
        note_protocol(protocol, "fashion_mnist", ev)
    assert protocol["fashion_mnist"]["net_trainings"] == {"lenet-x (test accuracy 0.9031), weights aaa": 1,
                                                         "lenet-x (test accuracy 0.9032), weights bbb": 4}
    assert protocol["fashion_mnist"]["feature_networks"] == old["feature_networks"]  # the first job's protocol


def test_the_target_says_met_or_what_is_missing_against_the_blurred_floor_and_the_classes():
    floors = [{"label": "real", "dataset": "d", "kind": "floor", "fid": (0.1, 0.0, 1), "classes_covered": (10, 0.0, 1)},
              {"label": "blurred", "dataset": "d", "kind": "floor_blurred", "fid": (100.0, 0.0, 1),
               "classes_covered": (10, 0.0, 1)}]
    table = [{"dataset": "d", "fid": (99.0, 1.0, 2), "classes_covered": (10, 0.0, 2)},
             {"dataset": "d", "fid": (100.0, 0.0, 1), "classes_covered": (10, 0.0, 1)},
             {"dataset": "d", "fid": (30.0, 0.0, 1), "classes_covered": (7, 0.0, 1)},
             {"dataset": "d", "fid": (130.0, 0.0, 1), "classes_covered": (9.5, 0.5, 2)},
             {"dataset": "d", "fid": None, "test_bits_per_dim": (3.0, 0.0, 1)},
             {"dataset": "points", "fid": (0.2, 0.0, 1)}]  # no blurred floor for points
    assert zoo.targets(table, floors)
    assert [r["target"] for r in table] == [
        "met", "FID not below the blurred floor's 100", "7 of 10 classes",
        "FID not below the blurred floor's 100; 9.5 ± 0.5 of 10 classes", "", ""]
    assert not zoo.targets(table[4:], floors)
    row = {"label": "m", "seeds": 2, "recipe": "cpu", "status": "done", "error": "", "steps": None, "steps_per_s": None,
           "train_s": None, "s_per_1k_samples": None, **table[0]}
    md = zoo.markdown([row], floors, ["fid"], ["# t"], target=True)
    assert md.splitlines()[2].split(" | ")[-3] == "target" and "| met |" in md


def test_a_translator_trains_in_the_zoo_without_the_evaluation_curves(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(zoo.subprocess, "run", lambda argv, **kw: seen.append(argv) or type("P", (), {"returncode": 0}))
    common = ["trainer.resume=auto", "trainer.eval_every_time=1m", "trainer.max_time=5m"]
    cycle = zoo.Cell("cyclegan", "unpaired_sneaker_sandal", [], [0], tmp_path / "runs" / "u" / "cyclegan",
                     model="cyclegan", translates=True)
    gan = zoo.Cell("gan", "fashion_mnist", [], [0], tmp_path / "runs" / "f" / "gan", model="gan")
    zoo._train_group("unpaired_sneaker_sandal", (0,), [cycle], common, [], False)
    zoo._train_group("fashion_mnist", (0,), [gan], common, [], False)
    assert "trainer.eval_every_time=null" in seen[0] and "trainer.eval_every_time=1m" not in seen[0]
    assert "trainer.max_time=5m" in seen[0] and "trainer.eval_every_time=1m" in seen[1]


def test_the_protocol_names_a_feature_network_without_a_test_accuracy():
    protocol = {}
    ev = {"feature_networks": [{"id": "mlp-grid25-1", "test_accuracy": None}], "values": {}}
    zoo.note_protocol(protocol, "grid25", ev)
    zoo.note_protocol(protocol, "grid25", ev)
    assert protocol["grid25"]["net_trainings"] == {"mlp-grid25-1": 2}
