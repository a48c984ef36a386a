"""One run on several processes (gloo on CPU): the same numbers as one process with the global batch."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import REPO, compose

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")

TOY = ["trainer=debug", "trainer.progress=false", "trainer.num_threads=1", "trainer.sample_every=0",
       "trainer.checkpoint_every=0", "dataset.n_train=4000", "dataset.n_test=500"]
# No batch norm: per-rank batch statistics would differ from one process's (sync BN needs CUDA).
WGAN_GP = ["model=wgan_gp", "dataset=grid25", "model.generator.norm=none", "model.generator.hidden=32",
           "model.discriminator.hidden=32", "model.z_dim=8", "model.n_critic=2", "optimizer.lr=1e-3"]
# Weight clipping, a generator EMA, spectral norm's power-iteration buffers and one GradScaler per optimizer.
WGAN_TRICKS = ["model=wgan", "dataset=grid25", "model.generator.norm=none", "model.generator.hidden=32",
               "model.discriminator.hidden=32", "model.z_dim=8", "model.n_critic=2", "optimizer.lr=1e-3",
               "model.ema_decay=0.5", "model.discriminator.spectral_norm=true"]
# The MLP denoiser (no batch norm) and its EMA with the warm-up counter.
DDPM = ["model=ddpm", "dataset=grid25", "model.net.hidden=32", "optimizer.lr=1e-3", "trainer.eval_every=0"]
FLOW = ["model=realnvp", "dataset=ring8", "model.n_layers=4", "model.hidden=32", "trainer.eval_every=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_noise(rank: int, world: int):
    """Noise drawn as one process would draw the global batch, each rank keeping its slice."""
    g = torch.Generator().manual_seed(123)

    def draw(fn, n, *shape):
        full = fn(n * world, *shape, generator=g)
        return full[rank * n:(rank + 1) * n]
    return draw


def _patch_noise(rank: int, world: int) -> None:
    from genlab.models import diffusion, gan, penalties

    draw = _global_noise(rank, world)
    diffusion.DDPM.draw = lambda self, x: (
        draw(lambda m, generator: torch.randint(0, self.T, (m,), generator=generator), len(x)),
        draw(torch.randn, len(x), *x.shape[1:]))
    gan.GAN._noise = lambda self, n: draw(torch.randn, n, self.cfg.z_dim)
    penalties.interpolates = lambda real, fake, group=1: (lambda a: a * real + (1 - a) * fake)(
        draw(torch.rand, len(real) // group, *([1] * (real.dim() - 1))).repeat_interleave(group, 0))


def _worker(rank: int, world: int, port: int, overrides: list[str], run_dir: str, patch: bool) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if patch:
        _patch_noise(rank, world)
    from genlab.commands.train import train
    from genlab.engine.trainer import Trainer

    fit, seen = Trainer.fit, []
    Trainer.fit = lambda self, *a, **kw: (seen.append(self), fit(self, *a, **kw))[1]
    last = train(compose(overrides), run_dir)
    t = seen[0]  # what each rank ends with, to check that the ranks stayed in lockstep
    torch.save({"model": t.model.state_dict(), "scalers": t.precision.state_dict()}, Path(run_dir, f"rank{rank}.pt"))
    if rank == 0:
        Path(run_dir, "last.json").write_text(json.dumps(last))


def run(world: int, overrides: list[str], run_dir: Path, patch: bool = False) -> tuple[dict, dict]:
    """Train on `world` processes (1: in this process); (rank 0's checkpoint, its last averaged scalars)."""
    if world > 1:
        mp.spawn(_worker, args=(world, free_port(), overrides, str(run_dir), patch), nprocs=world, join=True)
        last = json.loads((run_dir / "last.json").read_text())
    else:
        from genlab.commands.train import train
        from genlab.models import diffusion, gan, penalties

        saved = gan.GAN._noise, penalties.interpolates, diffusion.DDPM.draw
        try:
            if patch:
                _patch_noise(0, 1)
            last = train(compose(overrides), run_dir)
        finally:
            gan.GAN._noise, penalties.interpolates, diffusion.DDPM.draw = saved
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True), last


def assert_close_weights(a: dict, b: dict, tol: float) -> float:
    worst = 0.0
    for k, v in a.items():
        if v.is_floating_point():
            worst = max(worst, (v - b[k]).abs().max().item())
    assert worst < tol, worst
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides, patch", [("wgan_gp", WGAN_GP, True), ("wgan_tricks", WGAN_TRICKS, True),
                                                     ("realnvp", FLOW, False), ("ddpm", DDPM, True)])
def test_two_ranks_match_one_process_with_the_global_batch(name, overrides, patch, tmp_path):
    steps = ["trainer.max_steps=3"]
    two, two_last = run(2, [*TOY, *overrides, *steps, "trainer.batch_size=8"], tmp_path / "two", patch)
    one, one_last = run(1, [*TOY, *overrides, *steps, "trainer.batch_size=16"], tmp_path / "one", patch)
    half, _ = run(1, [*TOY, *overrides, *steps, "trainer.batch_size=8"], tmp_path / "half", patch)
    init = run(1, [*TOY, *overrides, "trainer.max_steps=0"], tmp_path / "init", patch)[0]
    worst = assert_close_weights(two["model"], one["model"], 1e-5)
    assert two["scalers"].keys() == one["scalers"].keys()
    for k, sc in one["scalers"].items():
        assert two["scalers"][k]["scale"] == sc["scale"] and two["scalers"][k]["_growth_tracker"] == sc["_growth_tracker"]
    print(f"{name}: largest weight difference 2 ranks x {8} vs 1 process x 16 after 3 steps: {worst:.2e}")
    # The comparison can fail: training moved the weights, and half the batch moves them elsewhere.
    moved = max((v - init["model"][k]).abs().max().item() for k, v in one["model"].items() if v.is_floating_point())
    assert moved > 1e-3
    with pytest.raises(AssertionError):
        assert_close_weights(half["model"], one["model"], 1e-5)
    # Logged scalars are averaged over ranks: the mean of two half-batch means is the global mean.
    for k, v in one_last.items():
        if not k.startswith("perf/"):
            assert two_last[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    assert_ranks_identical(tmp_path / "two")
    # Every rank's RNG and sampler state is in the checkpoint; the ranks share one global permutation.
    assert len(two["ranks"]) == 2
    reps = 3 * 2 if name.startswith("wgan") else 3  # data draws: 2 critic steps per step (G needs none)
    assert [r["data"]["pos"] for r in two["ranks"]] == [reps * 16, reps * 16] == [one["data"]["pos"]] * 2
    assert not torch.equal(two["ranks"][0]["rng"]["torch"], two["ranks"][1]["rng"]["torch"])


def assert_ranks_identical(run_dir: Path) -> None:
    r0, r1 = (torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), k
    assert r0["scalers"] == r1["scalers"]


@pytest.mark.slow
def test_fp16_grad_scalers_skip_and_step_together_on_every_rank(tmp_path):
    # Gradients are averaged before unscaling, so an inf on one rank is an inf on all: every rank
    # skips the same steps and backs off its per-optimizer scale the same way.
    state, _ = run(2, [*TOY, *WGAN_TRICKS, "trainer.precision=16", "trainer.max_steps=4", "trainer.batch_size=8"],
                   tmp_path, patch=True)
    assert set(state["scalers"]) == {"discriminator", "generator"}
    assert_ranks_identical(tmp_path)


def _actnorm_worker(rank: int, world: int, port: int, x: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    from genlab.nets.flows import ActNorm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    layer = ActNorm(x.shape[1])
    n = len(x) // world
    layer(x[rank * n:(rank + 1) * n])
    torch.save({"loc": layer.loc.detach(), "log_scale": layer.log_scale.detach()}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_actnorm_initialises_from_the_global_batch_on_every_rank(tmp_path):
    x = torch.randn(12, 3, 4, 4) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1) + 5
    mp.spawn(_actnorm_worker, args=(2, free_port(), x, str(tmp_path / "an")), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"an.{r}", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["loc"], r1["loc"]) and torch.equal(r0["log_scale"], r1["log_scale"])
    dims = (0, 2, 3)
    assert torch.allclose(r0["loc"], -x.mean(dims), atol=1e-5)
    assert torch.allclose(r0["log_scale"], -torch.log(x.std(dims, unbiased=False) + 1e-6), atol=1e-5)


# ---- the CLI under torchrun ----------------------------------------------------------------------------
CLI = ["model=wgan_gp", "dataset=grid25", "trainer=debug", "trainer.progress=false", "trainer.num_threads=1",
       "trainer.sample_every=0", "trainer.checkpoint_every=0", "trainer.log_every=1", "dataset.n_train=4000",
       "dataset.n_test=500", "model.generator.hidden=32", "model.discriminator.hidden=32"]


def torchrun(args: list[str], outputs: Path, env: dict | None = None) -> subprocess.Popen:
    """`torchrun --nproc_per_node=2 -m genlab train ARGS` with run folders under `outputs`."""
    env = env or {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GENLAB_OUTPUTS": str(outputs)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "genlab", "train", *CLI, *args]
    return subprocess.Popen(cmd, env=env, cwd=outputs.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(p: subprocess.Popen, timeout: int = 300) -> str:
    out, _ = p.communicate(timeout=timeout)
    return out


def run_folder(outputs: Path) -> Path:
    folders = [p.parent.parent for p in outputs.glob("*/*/.hydra/config.yaml")]
    assert len(folders) == 1, folders  # ranks > 0 made no folder of their own
    return folders[0]


def workers(p: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == p.pid:
                env = (stat.parent / "environ").read_bytes().split(b"\0")
                rank = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
                out[rank[0]] = int(stat.parent.name)
        except (OSError, IndexError, ValueError):
            continue
    return out


def wait_training(p: subprocess.Popen, outputs: Path, timeout: float = 120) -> Path:
    """The run folder once rank 0 has logged a few steps to TensorBoard."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert p.poll() is None, finish(p)
        events = list(outputs.glob("*/*/tb/events.*"))
        if events and events[0].stat().st_size > 2000 and len(workers(p)) == 2:
            return events[0].parent.parent
        time.sleep(0.5)
    p.kill()
    raise AssertionError("training did not start")


def stop_steps(out: str) -> dict[int, int]:
    return {int(r): int(s) for r, s in re.findall(r"rank (\d): stopping at step (\d+)", out)}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_sigterm_to_one_rank_stops_both_at_one_step_with_one_checkpoint(tmp_path):
    p = torchrun(["trainer.max_steps=100000"], tmp_path / "out")
    run = wait_training(p, tmp_path / "out")
    os.kill(workers(p)[1], signal.SIGTERM)
    out = finish(p)
    steps = stop_steps(out)
    assert set(steps) == {0, 1} and steps[0] == steps[1], out
    # Exit 128+15 on both ranks (torchrun then reports it); no traceback from genlab's own code.
    assert p.returncode != 0 and "exitcode  : 143" in out and 'genlab/engine' not in out, out
    assert [f.name for f in (run / "checkpoints").iterdir()] == ["last.pt"]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == steps[0]
    assert run_folder(tmp_path / "out") == run


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_sigterm_to_the_job_then_resume_on_two_ranks_is_bit_identical(tmp_path):
    p = torchrun(["trainer.max_steps=100000"], tmp_path / "stopped")
    stopped = wait_training(p, tmp_path / "stopped")
    p.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to every rank
    out = finish(p)
    steps = stop_steps(out)
    assert set(steps) == {0, 1} and steps[0] == steps[1], out
    n = steps[0]
    assert [f.name for f in (stopped / "checkpoints").iterdir()] == ["last.pt"]
    resumed = finish(torchrun([f"trainer.max_steps={n + 2}", f"trainer.resume={stopped}"], tmp_path / "resumed"))
    straight = finish(torchrun([f"trainer.max_steps={n + 2}"], tmp_path / "straight"))
    a = torch.load(run_folder(tmp_path / "resumed") / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run_folder(tmp_path / "straight") / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == n + 2, (resumed, straight)
    for k, v in b["model"].items():
        assert torch.equal(a["model"][k], v), k
    for r in range(2):
        assert torch.equal(a["ranks"][r]["rng"]["torch"], b["ranks"][r]["rng"]["torch"])


FAIL_ON_RANK1 = '''
import os
if os.environ.get("RANK") == "1":
    from genlab.models import gan
    _step, calls = gan.GAN.generator_step, []
    def failing(self, batch, ctx):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated failure on rank 1")
        return _step(self, batch, ctx)
    gan.GAN.generator_step = failing
'''


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_one_error_not_a_hang(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAIL_ON_RANK1)  # runs in each worker at start-up
    p = torchrun(["trainer.max_steps=100000"], tmp_path / "out",
                 env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}", "OMP_NUM_THREADS": "1",
                      "GENLAB_OUTPUTS": str(tmp_path / "out")})
    out = finish(p, timeout=240)
    assert p.returncode != 0
    assert out.count("RuntimeError: simulated failure on rank 1") == 1, out
    assert "lost contact" not in out and "Connection closed by peer" not in out, out
    assert "genlab: error" not in out, out


NAN_ON_RANK1 = '''
import os, time
if os.environ.get("RANK") == "1":
    from genlab.models import gan
    _step, calls = gan.GAN.generator_step, []
    def nan_once(self, batch, ctx):
        loss, logs = _step(self, batch, ctx)
        calls.append(1)
        if len(calls) == 3:  # trainer step 3 on this rank only: the value is nan, the gradients are not
            open(os.environ["NAN_PLANTED"], "w").write(repr(time.time()))
            return loss + float("nan"), logs
        return loss, logs
    gan.GAN.generator_step = nan_once
from genlab.engine import distributed
_close = distributed.Dist.close
def close(self):  # every rank passes here once it has left the loop
    open(os.environ["NAN_PLANTED"] + f".left{self.rank}", "w").write(repr(time.time()))
    _close(self)
distributed.Dist.close = close
'''


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_at_that_step_with_one_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NAN_ON_RANK1)
    planted = tmp_path / "planted"
    # No logging and no checkpoint for 1000 steps: only the per-step agreement of the ranks can stop them.
    p = torchrun(["trainer.max_steps=100000", "trainer.log_every=1000", "trainer.checkpoint_every=1000"],
                 tmp_path / "out", env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}", "OMP_NUM_THREADS": "1",
                                        "GENLAB_OUTPUTS": str(tmp_path / "out"), "NAN_PLANTED": str(planted)})
    out = finish(p, timeout=240)
    stopped = time.time()
    assert p.returncode != 0 and planted.exists(), out
    errors = [ln for ln in out.splitlines() if ln.startswith("genlab: error:")]
    assert errors == [errors[0]] and errors[0].startswith("genlab: error: the loss became nan/inf at step 3 on rank 1;"), out
    assert "lost contact" not in out and "genlab/engine" not in out, out
    assert "exitcode  : 2" in out, out  # both ranks left with the user-error status, none was killed
    assert not (run_folder(tmp_path / "out") / "checkpoints").exists()  # nothing written after the nan
    t0 = float(planted.read_text())
    left = [float(Path(f"{planted}.left{r}").read_text()) - t0 for r in (0, 1)]
    print(f"after the nan on rank 1: rank 0 left the loop in {left[0]:.3f} s, rank 1 in {left[1]:.3f} s; "
          f"the torchrun job ended in {stopped - t0:.2f} s")
    assert max(left) < 30 and stopped - t0 < 120  # within the step, not at the next log or checkpoint
