"""Stop signals, full disks, stale temporary files, checkpoint modes and divergence at the step it happens."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlab.commands.common import user_errors
from genlab.commands.train import train
from genlab.engine import checkpoint as ckpt
from genlab.engine import signals
from genlab.errors import GenlabError
from tests.conftest import REPO, assert_same_state, compose

TOY = ["model=gan", "dataset=grid25", "trainer=debug", "trainer.progress=false", "trainer.num_threads=1",
       "trainer.sample_every=0", "trainer.log_every=10", "dataset.n_train=2000", "dataset.n_test=200"]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    env.pop("GENLAB_DATA", None)
    return env


def _genlab(args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genlab", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)


def _start(args, cwd) -> subprocess.Popen:
    # A background job of a non-interactive shell inherits SIGINT as ignored (and genlab honours
    # that, as Python does): give the child the default disposition, as a terminal would.
    return subprocess.Popen([sys.executable, "-m", "genlab", *args], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until `path` exists: the loop is running and its signal handlers are installed."""
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.slow  # three runs in subprocesses
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_finishes_the_step_and_resume_is_bit_identical(sig, code, tmp_path):
    proc = _start(["train", *TOY, "trainer.max_steps=100000", "trainer.checkpoint_every=5",
                   "hydra.run.dir=stopped"], tmp_path)
    _wait_for(tmp_path / "stopped" / "checkpoints" / "last.pt", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"genlab: stopped by {signal.Signals(sig).name} at step "), err
    stopped = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=True)
    n = stopped["step"]
    assert 5 <= n < 100000 and f"at step {n};" in last
    assert not list((tmp_path / "stopped" / "checkpoints").glob("*.tmp"))

    # continue to n + 3 steps, and compare with one run straight to n + 3
    r = _genlab(["train", "trainer.resume=stopped", f"trainer.max_steps={n + 3}", "hydra.run.dir=resumed"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = _genlab(["train", *TOY, f"trainer.max_steps={n + 3}", "trainer.checkpoint_every=5", "hydra.run.dir=straight"],
                tmp_path)
    assert r.returncode == 0, r.stderr
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == n + 3
    assert_same_state(a, b)


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once_and_leaves_a_valid_checkpoint(tmp_path):
    proc = _start(["train", *TOY, "trainer.max_steps=100000", "trainer.checkpoint_every=5", "hydra.run.dir=run"],
                  tmp_path)
    _wait_for(tmp_path / "run" / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and (last == "genlab: interrupted" or last.startswith("genlab: stopped by SIGINT")), err
    state = ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")  # intact: loads, and is a real step
    assert state["step"] >= 5
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def during_step(monkeypatch, step: int, action) -> None:
    """Run `action()` once inside the model's step functions during trainer step `step` (0-based)."""
    from genlab.types import Step

    real, done = Step.__init__, []

    def init(self, *a, **k):
        real(self, *a, **k)
        fn = self.fn

        def wrapped(batch, ctx):
            if ctx.step == step and not done:  # once: a second signal would stop at once
                done.append(1)
                action()
            return fn(batch, ctx)
        self.fn = wrapped

    monkeypatch.setattr(Step, "__init__", init)


def test_stop_request_in_process_writes_the_current_step(tmp_path, monkeypatch):
    cfg = compose([*TOY, "trainer.max_steps=50", "trainer.checkpoint_every=0"])
    during_step(monkeypatch, 6, lambda: signals.request_stop(signal.SIGUSR1))  # during trainer step 7
    with pytest.raises(signals.Stopped) as e:
        train(cfg, tmp_path / "run")
    assert e.value.step == 7 and e.value.exit_code == 138
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 7


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_failed_save_is_one_line_and_keeps_the_previous_checkpoint(err, tmp_path, monkeypatch, capsys):
    cfg = compose([*TOY, "trainer.max_steps=6", "trainer.checkpoint_every=2"])
    real, calls = torch.save, {"n": 0}

    def failing_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 4: the disk is full / became read-only
            raise OSError(err, os.strerror(err))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(SystemExit) as e:
        with user_errors():
            train(cfg, tmp_path / "run")
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genlab: error: cannot write checkpoint "), lines
    assert os.strerror(err) in lines[0] and str(tmp_path / "run" / "checkpoints" / "last.pt") in lines[0]
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2  # the last good one
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_stale_tmp_files_are_removed_and_modes_follow_the_umask(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = [folder / "last.pt.4242-deadbeef.tmp", folder / "best.pt.abc.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 100)
    keep = folder / "notes.tmp"  # not a checkpoint temporary: left alone
    keep.write_text("mine")
    old = os.umask(0o027)
    try:
        ckpt.save({"model": {}, "step": 1}, folder / "last.pt")
    finally:
        os.umask(old)
    assert not any(p.exists() for p in stale) and keep.exists()
    assert (folder / "last.pt").stat().st_mode & 0o777 == 0o640
    ckpt.save({"model": {}, "step": 2}, folder / "last.pt")
    assert (folder / "last.pt").stat().st_mode & 0o777 == 0o666 & ~old


def test_stale_tmp_files_are_removed_at_start(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = run / "checkpoints" / "last.pt.1-x.tmp"
    stale.write_bytes(b"partial")
    train(compose([*TOY, "trainer.max_steps=1", "trainer.checkpoint_every=0"]), run)
    assert not stale.exists()


def test_divergence_is_reported_at_its_step_and_no_nan_checkpoint_is_written(tmp_path, monkeypatch):
    cfg = compose([*TOY, "trainer.max_steps=30", "trainer.checkpoint_every=2", "trainer.log_every=10"])
    from genlab.models.base import Step

    real = Step.__init__

    def nan_from_5(self, *a, **k):
        real(self, *a, **k)
        fn = self.fn

        def wrapped(batch, ctx):
            loss, logs = fn(batch, ctx)
            return (loss * float("nan") if ctx.step >= 4 else loss), logs
        self.fn = wrapped

    monkeypatch.setattr(Step, "__init__", nan_from_5)
    with pytest.raises(GenlabError, match=r"nan/inf at step 5;"):
        train(cfg, tmp_path / "run")
    # checkpoints at steps 2 and 4 were written; the one of step 6 (nan weights) was refused
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4


def test_error_after_the_progress_bar_is_on_its_own_line(tmp_path):
    r = _genlab(["train", *TOY, "trainer.progress=true", "trainer.max_steps=30", "optimizer.lr=1e30",
                 "trainer.log_every=2", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 2
    last = r.stderr.rstrip("\n").split("\n")[-1]
    assert last.startswith("genlab: error: ") and "diverged" in last, r.stderr[-500:]


def test_a_time_budgeted_runs_bar_counts_training_seconds_not_steps(tmp_path):
    """Under trainer.max_time the budget ends the run: the bar shows seconds of it, the step in its postfix
    (it showed steps out of a max_steps of 1e9 that no run reaches)."""
    r = _genlab(["train", *TOY, "trainer.progress=true", "trainer.max_steps=1000000000", "trainer.max_time=2s",
                 "trainer.log_every=5", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    frames = r.stderr.replace("\r", "\n").splitlines()
    bars = [f for f in frames if "of trainer.max_time" in f]
    assert bars and "1000000000" not in r.stderr, r.stderr[-1000:]
    assert bars[-1].startswith("train: 100%") and "2/2 s of trainer.max_time" in bars[-1], bars[-1]
    step = json.loads((tmp_path / "run" / "status.json").read_text())["step"]
    assert any(f"step={s}" in f for f in bars for s in range(max(5, step - 5), step + 1)), bars[-3:]


def test_a_launchers_sigusr2_handler_runs_after_last_pt_is_written(tmp_path, monkeypatch):
    """submitit requeues on SIGUSR2: genlab chains its handler instead of replacing it."""
    seen = {}

    def requeue(signum, frame):  # what submitit's checkpoint_and_try_requeue would do
        seen["signum"] = signum
        seen["step"] = ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["step"]

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        cfg = compose([*TOY, "trainer.max_steps=20", "trainer.checkpoint_every=0"])
        during_step(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGUSR2))
        with pytest.raises(signals.Stopped) as e:
            train(cfg, tmp_path / "run")
        assert e.value.step == 5 and e.value.exit_code == 140
        assert seen == {}  # not yet: the train command hands over once its status is written
        signals.hand_over(e.value.signum)
        assert seen == {"signum": signal.SIGUSR2, "step": 5}
        assert signal.getsignal(signal.SIGUSR2) is requeue  # restored after the run
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_sigusr2_is_left_alone_without_a_launcher_handler():
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    with signals.stop_on_signals():
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


def test_tensorboard_on_a_full_disk_is_one_line_naming_its_file_and_no_thread_traceback(tmp_path, monkeypatch,
                                                                                       capfd):
    from tensorboard.compat.tensorflow_stub.io import gfile

    real, calls = gfile.LocalFileSystem.append, {"n": 0}

    def append(self, filename, content, binary_mode=False):
        calls["n"] += 1
        if calls["n"] > 100:  # the events of some steps are written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, filename, content, binary_mode)

    monkeypatch.setattr(gfile.LocalFileSystem, "append", append)
    cfg = compose([*TOY, "trainer.max_steps=100000", "trainer.log_every=1", "trainer.checkpoint_every=5"])
    with pytest.raises(SystemExit) as e:
        with user_errors():
            train(cfg, tmp_path / "run")
    assert e.value.code == 2
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    (events,) = (tmp_path / "run" / "tb").glob("events.out.tfevents.*")
    assert lines == [f"genlab: error: cannot write {events} (TensorBoard events): No space left on device "
                     "(free some disk space)"], err
    assert "Traceback" not in err and "Exception in thread" not in err
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["step"] % 5 == 0  # the last complete one


def test_a_log_file_that_cannot_be_written_is_one_line_not_a_traceback_per_record(tmp_path, capfd):
    import logging

    from genlab.engine.writers import guard_log_files

    log = logging.getLogger("genlab")
    handler = logging.FileHandler("/dev/full")  # every write: ENOSPC, a real full device
    logging.getLogger().addHandler(handler)
    try:
        guard_log_files()
        with pytest.raises(GenlabError, match=r"^cannot write /dev/full \(the run's log\): No space left on device"):
            log.warning("step 1")
        assert handler not in logging.getLogger().handlers  # said once: never tried again
        log.warning("step 2")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.stream = None  # its buffer cannot be flushed to a full device
    assert "Logging error" not in capfd.readouterr().err


@pytest.mark.parametrize("phase", ["evaluation", "objective"])
def test_a_signal_during_the_final_evaluation_stops_it_at_once(phase, tmp_path, capsys):
    """The final evaluation (for a likelihood model's full protocol, an hour) ends at the signal, not after it."""
    from genlab.commands.sweep import RunStatus

    calls = []

    def slow_evaluator(model, data, step):
        calls.append(step)
        if step == 10:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(120)  # an hour's evaluation: the signal has to cut it short
        return {"modes": 1.0}

    if phase == "evaluation":  # the loop's own final evaluation (10 is not a multiple of eval_every)
        cfg, status = compose([*TOY, "trainer.max_steps=10", "trainer.eval_every=7", "trainer.checkpoint_every=0"]), None
    else:  # the evaluation that gives a sweep its objective
        cfg = compose([*TOY, "trainer.max_steps=10", "trainer.checkpoint_every=0", "trainer.objective=modes"])
        status = RunStatus(tmp_path / "run", [], None)
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as e:
        with user_errors():
            train(cfg, tmp_path / "run", evaluator=slow_evaluator, status=status)
    assert time.monotonic() - t0 < 60 and calls[-1] == 10
    assert e.value.code == 143
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "genlab: stopped by SIGTERM during the final evaluation at step 10; checkpoint "), lines
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 10  # written before it began
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are gone again


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_signal_stops_genlab_sample_and_eval_at_once_with_one_line(command, tmp_path, monkeypatch, capsys,
                                                                     keep_logging):
    from genlab import cli
    from genlab.commands import sample as sample_cmd

    train(compose([*TOY, "trainer.max_steps=2", "trainer.checkpoint_every=0"]), tmp_path / "run")

    def slow_generate(*args, **kwargs):  # drawing samples for an hour
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(120)

    monkeypatch.setattr(sample_cmd, "generate", slow_generate)
    from genlab.metrics.evaluator import Evaluator

    monkeypatch.setattr(Evaluator, "samples", lambda self, model, n=None: slow_generate())
    monkeypatch.setattr(sys, "argv", ["genlab"])
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as e:
        cli.main([command, f"run={tmp_path / 'run'}", f"out={tmp_path / ('x.png' if command == 'sample' else 'e.json')}"])
    assert e.value.code == 143 and time.monotonic() - t0 < 60
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["genlab: stopped by SIGTERM; nothing more was written"], lines
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "e.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
