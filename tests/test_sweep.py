"""Sweeps that survive and compare: failure isolation, short job folders, time budgets, resume=auto,
objectives, quoted run paths, optional Hydra plugins, and `genlab report` checked against eval.json."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import statistics
from pathlib import Path

import pytest

from genlab.commands.sweep import RunStatus
from genlab.commands.train import train
from genlab.engine import checkpoint as ckpt
from genlab.engine.budget import parse_duration
from genlab.errors import GenlabError
from tests.conftest import compose, run_cli

SMALL = ["model.generator.hidden=16", "model.discriminator.hidden=16", "dataset.n_train=512",
         "dataset.n_test=256", "trainer.num_threads=1"]
FAST = ["trainer=debug", "trainer.progress=false", "trainer.sample_every=0", *SMALL]


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


@pytest.mark.parametrize("text,seconds", [(90, 90.0), ("90", 90.0), ("90s", 90.0), ("10m", 600.0),
                                          ("1h30m", 5400.0), ("1.5h", 5400.0), ("2m30s", 150.0), (None, None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten minutes", "5d", "0", "-3", "m"])
def test_parse_duration_rejects(bad):
    with pytest.raises(GenlabError, match="max_time"):
        parse_duration(bad)


def test_samples_seen_counts_batches_of_due_phases_that_draw_data():
    from genlab.commands.sweep import samples_seen
    from genlab.types import Step

    fn = lambda batch, ctx: None  # noqa: E731
    schedule = [Step("critic", "critic", fn, repeat=5), Step("r1", "critic", fn, every=4),
                Step("generator", "generator", fn, needs_data=False)]
    # brute force: walk the steps as the trainer does
    brute = sum(16 * s.repeat for step in range(10) for s in schedule if s.due(step) and s.needs_data)
    assert samples_seen(10, 16, schedule) == brute == 16 * (5 * 10 + 3)


@pytest.mark.slow
def test_sweep_survives_a_diverging_job_and_job_folders_work_as_paths(tmp_path):
    # many overrides: the old `<num>_<override_dirname>` folders broke run= and grew too long
    many = [f"trainer.{k}={v}" for k, v in (("log_every", 1), ("checkpoint_every", 2), ("eval_every", 0),
                                            ("batch_size", 16), ("grad_clip", "null"), ("best_mode", "min"))]
    r = run_cli(["train", "-m", "model=gan", "dataset=ring8", *FAST, *many, "optimizer.lr=2e-4,1e6,1e-4",
                 "trainer.max_steps=4", "hydra.sweep.dir=sweep"], tmp_path)
    assert r.returncode == 1, r.stderr
    sweep = tmp_path / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2"]
    states = [status(sweep / j) for j in jobs]
    assert [s["state"] for s in states] == ["done", "failed", "done"]
    assert "diverged" in states[1]["error"] and states[1]["step"] < 4
    assert [s["step"] for s in (states[0], states[2])] == [4, 4]
    assert states[0]["samples_seen"] == 4 * 16  # one real batch per discriminator step; G draws only noise
    assert "optimizer.lr=1000000.0" in states[1]["overrides"]
    err = [line for line in r.stderr.splitlines() if line.startswith("genlab: error: job 1:")]
    assert len(err) == 1 and "diverged" in err[0]
    assert "3 jobs: 2 done, 1 failed (job 1: " in r.stderr
    assert "Traceback" not in r.stderr
    # every finished job folder works as run=, and so does a folder named the old way
    old = sweep / "0_dataset=ring8,model=gan,optimizer.lr=2e-4"
    shutil.copytree(sweep / "0", old)
    for i, run in enumerate((sweep / "0", sweep / "2", old)):
        s = run_cli(["sample", f"run={run}", f"out=s{i}.png", "num_samples=16"], tmp_path)
        assert s.returncode == 0, s.stderr
        assert (tmp_path / f"s{i}.png").is_file()


def test_single_run_failure_keeps_one_line_and_exit_2(tmp_path):
    r = run_cli(["train", "model=gan", "dataset=ring8", *FAST, "optimizer.lr=1e6", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("genlab: error: ") and "diverged" in r.stderr
    assert status(tmp_path / "run")["state"] == "failed"


def _train(run: Path, *extra: str) -> tuple[dict, RunStatus]:
    """Train in-process into `run` as the train command does, returning its finished status record."""
    st = RunStatus(run)
    train(compose(["model=gan", "dataset=ring8", *FAST, *extra]), run, status=st)
    return st.write("done"), st


def test_status_json_follows_the_run_at_every_checkpoint(tmp_path, monkeypatch):
    seen, write = [], RunStatus.write

    def spy(self, state, error=None):
        r = write(self, state, error)
        seen.append((json.loads(self.path.read_text())["state"], json.loads(self.path.read_text())["step"]))
        return r

    monkeypatch.setattr(RunStatus, "write", spy)
    record, _ = _train(tmp_path / "run", "trainer.max_steps=6", "trainer.checkpoint_every=2")
    # step 6's periodic checkpoint is the final one: last.pt is not written twice
    assert seen == [("running", 2), ("running", 4), ("running", 6), ("done", 6)]
    assert record["samples_seen"] > 0 and status(tmp_path / "run")["state"] == "done"


def test_max_time_stops_at_a_step_boundary_and_resumes(tmp_path):
    run = tmp_path / "run"
    rec, _ = _train(run, "trainer.max_steps=1000000", "trainer.max_time=3", "trainer.log_every=10")
    assert rec["stopped_by"] == "max_time" and 0 < rec["step"] < 1000000
    per_step = rec["train_time"] / rec["step"]
    # at or past the budget, by less than one step (plus the time to save the checkpoint on a busy machine)
    assert 3.0 <= rec["train_time"] <= 3.0 + per_step + 0.5
    state = ckpt.load(run / "checkpoints" / "last.pt")
    assert state["step"] == rec["step"] and state["elapsed"] == pytest.approx(rec["train_time"], abs=0.01)
    # the checkpoint resumes: trainer.resume=auto continues in the same folder up to a 4 s budget in all
    rec2, _ = _train(run, "trainer.max_steps=1000000", "trainer.max_time=4", "trainer.log_every=10",
                     "trainer.resume=auto")
    assert rec2["step"] > rec["step"] and 4.0 <= rec2["train_time"] <= 4.0 + per_step + 0.5


def test_evaluation_is_outside_the_time_budget(tmp_path):
    import time

    def slow_evaluator(model, data, step):
        time.sleep(0.5)
        return {"fid[points]": float(step)}

    run = tmp_path / "run"
    st = RunStatus(run)
    train(compose(["model=gan", "dataset=ring8", *FAST, "trainer.eval_every=1"]), run, evaluator=slow_evaluator,
          status=st)
    rec = st.write("done")
    times = [json.loads(line)["train_time"] for line in (run / "eval_history.jsonl").read_text().splitlines()]
    assert len(times) == 4 and times == sorted(times) and times[-1] <= rec["train_time"]
    assert rec["wall_time"] - rec["train_time"] >= 4 * 0.5  # the four evaluations are not training time


def test_resume_auto_starts_fresh_without_a_checkpoint_and_objective_is_returned(tmp_path):
    run = tmp_path / "run"
    _, st = _train(run, "trainer.resume=auto", "trainer.objective=modes", "trainer.eval_samples=200")
    hist = [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [4]  # eval_every=0: the objective asks for one evaluation at the end
    assert st.objective == {"metric": "modes", "value": hist[-1]["modes"], "direction": "maximize"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()  # TensorBoard's HParams tab: the run's final metrics next to its overrides
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert acc.Scalars("hparams/modes")[-1].value == hist[-1]["modes"]


def test_objective_must_have_a_direction():
    from genlab.config import validate

    with pytest.raises(GenlabError, match="trainer.objective=banana"):
        validate(compose(["model=gan", "dataset=ring8", *FAST, "trainer.objective=banana"]))


def test_missing_plugin_names_the_extra(monkeypatch, capsys):
    from genlab import cli

    monkeypatch.setitem(cli.PLUGINS, ("hydra/launcher", "joblib"), ("hydra_plugins.no_such_launcher", "joblib"))
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "-m", "hydra/launcher=joblib", "seed=0,1"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("genlab: error: hydra/launcher=joblib needs the no-such-launcher plugin; "
                                       "install it with: pip install 'genlab[joblib]'\n")


def test_quote_paths_only_touches_existing_paths(tmp_path):
    from genlab.cli import quote_paths

    odd = tmp_path / "0_dataset=grid25,model=gan"
    odd.mkdir()
    assert quote_paths([f"run={odd}", "trainer.resume=a,b", "seed=0,1"]) == [
        f"run='{odd}'", "trainer.resume=a,b", "seed=0,1"]


def _sweep_2x2(tmp_path: Path, extra=()) -> Path:
    r = run_cli(["train", "-m", "model=gan,wgan", "dataset=ring8", *FAST, "seed=0,1", "trainer.max_steps=2",
                 "hydra.sweep.dir=sweep", *extra], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 jobs: 4 done" in r.stdout
    return tmp_path / "sweep"


@pytest.mark.slow
def test_report_aggregates_the_runs_own_eval_json(tmp_path):
    from genlab.commands.eval import evaluate_run

    sweep = _sweep_2x2(tmp_path)
    evals = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        evaluate_run(compose([f"run={job}", "num_samples=200", "metrics=[fid,modes]", "floor=false",
                              "device=cpu"], "eval"))
        evals[job.name] = json.loads((job / "eval.json").read_text())["values"]
    r = run_cli(["report", str(sweep)], tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["configuration"]: row for row in csv.DictReader(open(sweep / "report.csv"))}
    assert set(rows) == {"model=gan", "model=wgan"}
    for label, jobs in (("model=gan", ["0", "1"]), ("model=wgan", ["2", "3"])):
        for metric in ("fid[points]", "modes"):
            vals = [evals[j][metric] for j in jobs]
            assert float(rows[label][f"{metric}_mean"]) == pytest.approx(statistics.fmean(vals), rel=1e-9)
            assert float(rows[label][f"{metric}_std"]) == pytest.approx(statistics.stdev(vals), rel=1e-9, abs=1e-12)
            assert rows[label][f"{metric}_n"] == "2"
        assert rows[label]["steps_mean"] == "2.0" and rows[label]["status"] == "2 done"
    best = min(rows, key=lambda k: float(rows[k]["fid[points]_mean"]))
    line = next(line for line in r.stdout.splitlines() if line.startswith(best))
    assert line.count("*") >= 1
    assert (sweep / "report.md").read_text().count("| model=") == 2
    assert (sweep / "runs.csv").read_text().count("\n") == 5


def test_report_bad_input_is_one_line(tmp_path, capsys):
    from genlab.commands import report

    for args in ([str(tmp_path / "nope")], [str(tmp_path)], ["--bogus", "x"], []):
        with pytest.raises(SystemExit) as e:
            report.main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("genlab: error: report")
    r = run_cli(["report", str(tmp_path / "nope")], tmp_path)  # through the CLI too, and its --help
    assert r.returncode == 2 and r.stderr == f"genlab: error: report: {tmp_path / 'nope'} is not a folder; give " \
        "sweep folders (outputs/multirun/DATE/TIME) or run folders\n"
    h = run_cli(["report", "--help"], tmp_path)
    assert h.returncode == 0 and "DIR" in h.stdout


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="needs genlab[joblib]")
def test_joblib_sweep_runs_in_parallel_and_reports(tmp_path):
    r = run_cli(["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=gan", "dataset=ring8",
                 *FAST, "seed=0,1", "trainer.eval_every=2", "trainer.eval_samples=200", "hydra.sweep.dir=sweep"],
                tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 jobs: 2 done" in r.stdout
    rep = run_cli(["report", "sweep"], tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "seed" not in rep.stdout.splitlines()[1]  # seeds of one configuration are aggregated
    row = next(csv.DictReader(open(tmp_path / "sweep" / "report.csv")))
    assert row["n"] == "2" and row["status"] == "2 done" and row["modes_n"] == "2"
    assert list((tmp_path / "sweep").glob("report_*.png"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="needs genlab[sweep]")
def test_optuna_search_of_three_trials(tmp_path):
    r = run_cli(["train", "-m", "hparams_search=grid25_wgan_gp", "hydra.sweeper.n_trials=3", *FAST,
                 "trainer.max_steps=2", "trainer.max_time=null", "trainer.eval_samples=200",
                 "hydra.sweep.dir=sweep"], tmp_path)
    assert r.returncode == 0, r.stderr
    sweep = tmp_path / "sweep"
    states = [status(sweep / str(i)) for i in range(3)]
    assert all(s["state"] == "done" and s["objective"]["metric"] == "modes" for s in states)
    from omegaconf import OmegaConf

    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == max(s["objective"]["value"] for s in states)
    assert {"optimizer.lr", "model.n_critic", "model.gp_weight"} <= set(best.best_params)
    rep = run_cli(["report", "sweep"], tmp_path)
    assert rep.returncode == 0 and rep.stdout.count("1 done") == 3, rep.stdout



@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="needs genlab[slurm]")
def test_slurm_launcher_config_composes():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module("genlab.configs", version_base="1.3"):
        cfg = hydra_compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                            return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.max_num_timeout == 3 and launcher.timeout_min == 240


@pytest.mark.slow
def test_a_requeued_sweep_job_resumes_from_its_own_folder(tmp_path):
    # what submitit does on preemption: the same job (same overrides, same folder) starts again
    args = ["train", "-m", "model=gan", "dataset=ring8", *FAST, "seed=0,1", "trainer.resume=auto",
            "hydra.sweep.dir=sweep"]
    first = run_cli([*args, "trainer.max_steps=2"], tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli([*args, "trainer.max_steps=4"], tmp_path)
    assert again.returncode == 0, again.stderr
    for job, seed in (("0", 0), ("1", 1)):
        run = tmp_path / "sweep" / job
        assert f"resumed from {run.resolve() / 'checkpoints' / 'last.pt'} at step 2" in (run / "train.log").read_text()
        state = ckpt.load(run / "checkpoints" / "last.pt")
        assert state["step"] == 4 and state["config"]["seed"] == seed
        assert status(run)["state"] == "done" and status(run)["step"] == 4


def test_status_json_records_the_commits_that_trained_the_run(tmp_path, monkeypatch):
    """A run records genlab's commit; a resume at another commit appends its own, the same one does not."""
    import genlab
    from genlab.commands.sweep import RunStatus, read_status

    monkeypatch.setattr(genlab, "_COMMIT", "aaa1111")
    RunStatus(tmp_path).write("done")
    assert read_status(tmp_path)["commits"] == ["aaa1111"] and read_status(tmp_path)["genlab"] == genlab.__version__
    RunStatus(tmp_path).write("done")  # resumed at the same commit
    assert read_status(tmp_path)["commits"] == ["aaa1111"]
    monkeypatch.setattr(genlab, "_COMMIT", "bbb2222+changes")
    RunStatus(tmp_path).write("done")
    assert read_status(tmp_path)["commits"] == ["aaa1111", "bbb2222+changes"]


def test_status_json_records_the_machines_that_trained_the_run(tmp_path, monkeypatch):
    """The machine (CPU model and cores) is recorded the same way: a resume on another one appends it;
    the zoo's header counts the jobs per machine, older records as 'not recorded'."""
    import os

    import genlab
    from genlab.commands import zoo
    from genlab.commands.sweep import RunStatus, read_status

    here = genlab.machine_name()
    assert here.endswith(f", {os.cpu_count()} cores")
    RunStatus(tmp_path / "a").write("done")
    RunStatus(tmp_path / "a").write("done")  # resumed on the same machine
    assert read_status(tmp_path / "a")["machines"] == [here]
    monkeypatch.setattr(genlab, "machine_name", lambda: "Other CPU, 64 cores")
    RunStatus(tmp_path / "a").write("done")
    assert read_status(tmp_path / "a")["machines"] == [here, "Other CPU, 64 cores"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "status.json").write_text('{"state": "done", "step": 3}')  # a record from before
    cells = [zoo.Cell("x", "d", [], [0], tmp_path / "x"), zoo.Cell("y", "d", [], [0], tmp_path / "y")]
    cells[0].job_dir = lambda s: tmp_path / "a"
    cells[1].job_dir = lambda s: tmp_path / "b"
    assert zoo.run_machines(cells) == f"{here}: 1 job(s); Other CPU, 64 cores: 1 job(s); not recorded: 1 job(s)"
