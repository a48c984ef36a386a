"""Progress on every wait: bars on stderr only when it is a terminal (or forced), progress=false turns them
off, time left shown; the cost line and the bar of `genlab sample` of a PixelCNN under a real terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time

import pytest

from genlab import progress
from tests.conftest import REPO, TINY, compose


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
    monkeypatch.setattr(progress, "_allowed", True)
    monkeypatch.setattr(progress, "DELAY_S", 0)


def test_bar_follows_the_terminal_and_the_switch(monkeypatch):
    monkeypatch.setattr(progress, "_terminal", lambda: False)
    assert not progress.is_enabled()
    assert progress.is_enabled(True)
    monkeypatch.setattr(progress, "_terminal", lambda: True)
    assert progress.is_enabled()
    progress.configure(False)
    assert not progress.is_enabled() and not progress.is_enabled(False)
    assert progress.is_enabled(True)  # a forced bar still shows
    progress.configure(True)
    assert progress.is_enabled()


def test_bar_writes_count_rate_and_time_left_to_stderr_only(capsys):
    with progress.bar(10, "test NLL", "img", enabled=True) as bar:
        for _ in range(10):
            bar.update()
    out, err = capsys.readouterr()
    assert out == ""
    assert "test NLL" in err and "10/10" in err and "img/s" in err
    assert "<" in err  # tqdm's [elapsed<remaining]
    with progress.bar(10, "quiet", enabled=False) as bar:
        bar.update(10)
    assert capsys.readouterr() == ("", "")


def test_bar_is_silent_when_stderr_is_not_a_terminal(capsys):
    with progress.bar(5, "sampling", "img") as bar:  # capsys's stderr is no terminal
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_duration_words():
    assert progress.duration(0.2) == "about 1 s"
    assert progress.duration(42) == "about 42 s"
    assert progress.duration(7 * 60) == "about 7 min"
    assert progress.duration(70 * 60) == "about 70 min"
    assert progress.duration(9000) == "about 2.5 h"


@pytest.fixture(scope="module")
def pixelcnn_run(tmp_path_factory):
    from genlab.commands.train import train
    from tests.conftest import make_mnist

    tmp = tmp_path_factory.mktemp("pixelcnn")
    root = make_mnist(tmp / "data")
    run = tmp / "run"
    train(compose([*TINY, "model=pixelcnn", "dataset=mnist", f"dataset.root={root}", "model.hidden=8",
                   "model.n_layers=2", "dataset.image_size=12", "trainer.sample_every=0", "trainer.eval_every=0"]), run)
    return run


def in_terminal(args: list[str], cwd) -> tuple[int, str, str]:
    """Run `python -m genlab ARGS` with stderr on a pseudo-terminal; returns (status, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 120, 0, 0))  # 120 wide, 0 lines (as `script` makes)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GENLAB_PROGRESS_DELAY": "0"}
    p = subprocess.Popen([sys.executable, "-m", "genlab", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out = p.stdout.read().decode()
    p.wait(timeout=300)
    os.close(master)
    return p.returncode, out, err.decode(errors="replace")


def test_pixelcnn_sample_says_its_cost_and_shows_a_bar_in_a_terminal(pixelcnn_run, tmp_path):
    code, out, err = in_terminal(["sample", f"run={pixelcnn_run}", f"out={tmp_path / 'g.png'}", "num_samples=20",
                                  "batch_size=10", "device=cpu"], tmp_path)
    assert code == 0, err
    assert (tmp_path / "g.png").is_file()
    assert "sampling 20 images from PixelCNN: about" in err
    assert "on this CPU; num_samples=2 for about" in err
    assert "PixelCNN sampling 10 images" in err and "144/144" in err and "px/s" in err
    assert "sampling" not in out  # stdout keeps the result line alone


def test_progress_false_turns_every_bar_off(pixelcnn_run, tmp_path, capsys, monkeypatch):
    from genlab.commands.sample import sample

    monkeypatch.setattr(progress, "_terminal", lambda: True)
    sample(compose([f"run={pixelcnn_run}", f"out={tmp_path / 'h.png'}", "num_samples=2", "device=cpu",
                    "progress=false"], config_name="sample"))
    err = capsys.readouterr().err
    assert "sampling 2 images from PixelCNN" in err  # the cost line is said anyway
    assert "px/s" not in err and "144/144" not in err
    assert not progress.is_enabled()


def test_pixelcnn_cost_estimate_is_close_to_the_real_time(pixelcnn_run):
    import torch

    from genlab.commands.common import load_run

    model = load_run(str(pixelcnn_run), "last", "cpu").model
    est = model.sample_seconds(8)
    # CPU time, not wall time: on a busy machine the long loop is preempted far more than the few timed steps
    t0 = time.process_time()
    model.sample(8, generator=torch.Generator().manual_seed(0))
    real = time.process_time() - t0
    assert 0.25 < est / real < 8, (est, real)


def test_nll_alone_draws_no_samples_and_says_no_sampling_cost(pixelcnn_run, tmp_path, capsys, monkeypatch):
    from genlab.commands.eval import evaluate_run
    from genlab.models.pixelcnn import PixelCNN

    def no_sampling(*a, **k):
        raise AssertionError("metrics=[nll] must not draw ancestral samples")

    monkeypatch.setattr(PixelCNN, "sample", no_sampling)
    res = evaluate_run(compose([f"run={pixelcnn_run}", "metrics=[nll]", "eval.nll_images=8", "device=cpu",
                                f"out={tmp_path / 'e.json'}"], config_name="eval"))
    assert res["values"]["test_bits_per_dim"] > 0
    assert "sampling" not in capsys.readouterr().err
