"""How fast the lab answers: debug runs, evaluation, CLI start-up, short-budget WGAN-GP, loop overhead.

    python scripts/bench_feedback.py                          # every part
    python scripts/bench_feedback.py --parts cli,debug --models vae,pixelcnn
    python scripts/bench_feedback.py --parts eval --eval-samples 10000
    python scripts/bench_feedback.py --parts wgan --budget 150 --experiments default,cpu_wgan_gp
    python scripts/bench_feedback.py --parts loop --loop-repeats 5
    python scripts/bench_feedback.py --parts threads
    python scripts/bench_feedback.py --pythonpath ../other-checkout --parts cli,debug   # another genlab

Parts: cli (help / --cfg / pre-check error), debug (trainer=debug per model), eval (genlab eval of
--eval-samples Fashion-MNIST samples, cold then warm cache), wgan (WGAN-GP for --budget seconds, then
its own LeNet FID and coverage next to steps/s), loop (Trainer vs a bare PyTorch loop:
scripts/bench_loop.py), threads (1 vs 2 threads, OMP_WAIT_POLICY). Wall seconds depend on
what else runs on the machine, so CPU seconds (user + system of the child) are printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = ("cli", "debug", "eval", "wgan", "loop", "threads")


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(args: list[str], env: dict, cwd: Path, timeout: float) -> tuple[float, float, int, str]:
    """(wall s, CPU s, exit status, output tail) of `python -m genlab ARGS`."""
    c0, t0 = child_cpu(), time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "genlab", *args], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=timeout)
        rc, out = p.returncode, (p.stdout + p.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        rc, out = 124, "timeout"
    return time.perf_counter() - t0, child_cpu() - c0, rc, out


def environment(args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(args.pythonpath).resolve()), "OMP_NUM_THREADS": "1"}
    env.setdefault("GENLAB_CACHE", str(Path(tempfile.gettempdir()) / "genlab-bench-cache"))
    return env


def part_cli(args) -> None:
    env = environment(args)
    print("\n## CLI start-up (s)\ncommand                          wall    cpu")
    for cmd in (["train", "--help"], ["eval", "--help"], ["train", "--cfg", "job"],
                ["train", "trainer.max_steps=-1"], ["train", "model=nope"]):
        with tempfile.TemporaryDirectory() as d:
            wall, cpu, rc, _ = run(cmd, env, Path(d), 120)
        print(f"{' '.join(cmd):<32}{wall:>6.2f}{cpu:>7.2f}   exit {rc}")


def models(args) -> list[str]:
    if args.models:
        return args.models.split(",")
    return sorted(p.stem for p in (Path(args.pythonpath) / "configs" / "model").glob("*.yaml") if not p.stem.startswith("_"))


def part_debug(args) -> None:
    env = environment(args)
    print(f"\n## trainer=debug per model on {args.dataset} (s, timeout {args.timeout:.0f})\n"
          "model          wall    cpu  exit")
    for m in models(args):
        ds = [] if m == "cyclegan" else [f"dataset={args.dataset}"]
        with tempfile.TemporaryDirectory() as d:
            wall, cpu, rc, out = run(["train", f"model={m}", *ds, "trainer=debug", "trainer.progress=false",
                                      "trainer.num_threads=1", f"hydra.run.dir={d}/run"], env, Path(d), args.timeout)
        print(f"{m:<12}{wall:>7.1f}{cpu:>7.1f}  {rc}" + ("" if rc in (0, 124) else f"  {out.splitlines()[-1][:80]}"))


def part_eval(args) -> None:
    env = environment(args)
    with tempfile.TemporaryDirectory() as d:
        cache = Path(d) / "cache"
        env = {**env, "GENLAB_CACHE": str(cache)}
        run_dir = Path(d) / "run"
        wall, cpu, rc, out = run(["train", "model=wgan_gp", "dataset=fashion_mnist", "trainer=debug",
                                  "trainer.progress=false", f"hydra.run.dir={run_dir}"], env, Path(d), 600)
        if rc:
            print(f"eval: the training run failed: {out[-300:]}")
            return
        print(f"\n## genlab eval, {args.eval_samples} Fashion-MNIST samples of a WGAN-GP run (s)\n"
              "cache        wall    cpu  exit")
        for name in ("cold", "warm"):
            wall, cpu, rc, out = run(["eval", f"run={run_dir}", f"num_samples={args.eval_samples}", "device=cpu"],
                                     env, Path(d), args.timeout_eval)
            print(f"{name:<10}{wall:>7.1f}{cpu:>7.1f}  {rc}" + ("" if rc == 0 else f"  {out[-200:]}"))


def part_wgan(args) -> None:
    """WGAN-GP on Fashion-MNIST for --budget seconds of training, one thread, then genlab's own eval."""
    env = environment(args)
    print(f"\n## WGAN-GP on Fashion-MNIST, {args.budget:.0f} s budget, 1 thread; eval on {args.wgan_eval_samples} "
          "samples (LeNet features)\nrecipe          steps  steps/s  steps/cpu-s     fid  coverage  classes")
    for exp in args.experiments.split(","):
        with tempfile.TemporaryDirectory() as d:
            over = [] if exp == "default" else [f"experiment={exp}"]
            argv = ["train", "model=wgan_gp", "dataset=fashion_mnist", *over, "trainer.max_steps=10000000",
                    "trainer.num_threads=1", "trainer.progress=false", "trainer.sample_every=0",
                    "trainer.checkpoint_every=0", f"hydra.run.dir={d}/run"]
            t0, c0 = time.perf_counter(), child_cpu()
            # SIGINT at the budget: the trainer writes its checkpoint and stops (start-up included).
            subprocess.run(["timeout", "-s", "INT", str(args.budget), sys.executable, "-m", "genlab", *argv],
                           env=env, cwd=d, capture_output=True, text=True)
            train_s, train_cpu = time.perf_counter() - t0, child_cpu() - c0
            ckpt = Path(d) / "run" / "checkpoints" / "last.pt"
            if not ckpt.is_file():
                print(f"{exp:<14} no checkpoint")
                continue
            wall, cpu, rc, out = run(["eval", f"run={d}/run", f"num_samples={args.wgan_eval_samples}",
                                      "metrics=[fid,prdc,classes]", "floor=false", "device=cpu"], env, Path(d), 900)
            res = json.loads((Path(d) / "run" / "eval.json").read_text())
            v = res["values"]
            fid = next(x for k, x in v.items() if k.startswith("fid"))
            cov = next(x for k, x in v.items() if k.startswith("coverage"))
            cls = next(x for k, x in v.items() if k.startswith("classes_covered"))
            steps = res["step"]
            print(f"{exp:<14}{steps:>6}{steps / train_s:>9.2f}{steps / train_cpu:>13.2f}{fid:>8.2f}{cov:>10.3f}"
                  f"{cls:>9.0f}   (train: {train_s:.0f} s wall, {train_cpu:.0f} s CPU)")


def part_loop(args) -> None:
    """Trainer vs bare loop: scripts/bench_loop.py (alternating pinned runs, MLP and conv)."""
    print("\n## Trainer vs bare PyTorch loop (scripts/bench_loop.py)", flush=True)
    subprocess.run([sys.executable, str(REPO / "scripts" / "bench_loop.py"), "--repeats", str(args.loop_repeats),
                    "--pythonpath", str(Path(args.pythonpath).resolve())], timeout=3 * 3600)


def part_threads(args) -> None:
    print("\n## threads: ms per update (median), CPU ms per update; small MLP and conv nets")
    print("net     threads  OMP_WAIT_POLICY   ms/update  cpu-ms/update")
    for net in ("mlp", "conv"):
        for threads in (1, 2):
            for policy in ("", "PASSIVE"):
                if threads == 1 and policy:
                    continue
                env = {**environment(args), "OMP_NUM_THREADS": str(threads)}
                env.pop("OMP_WAIT_POLICY", None)
                if policy:
                    env["OMP_WAIT_POLICY"] = policy
                p = subprocess.run([sys.executable, __file__, "--child", f"threads:{net}"], env=env,
                                   capture_output=True, text=True, timeout=600)
                print(f"{net:<8}{threads:>7}  {policy or '(unset)':<16}{p.stdout.strip() or p.stderr[-300:]}")


# ---- children: measured in their own process (threads and imports are per process) -------------
def child_threads(net: str) -> None:
    """Median wall ms and CPU ms per Adam update of a 256-wide MLP (batch 256) or DCGAN-style convs (batch 64)."""
    import torch

    from genlab import nets
    from genlab.models.base import NetConfig

    torch.manual_seed(0)
    if net == "mlp":
        from genlab.data import Spec

        spec, x = Spec("points", (2,), None), torch.randn(256, 2)
    else:
        from genlab.data import Spec

        spec, x = Spec("image", (1, 28, 28), 10), torch.randn(64, 1, 28, 28)
    from omegaconf import OmegaConf

    d = nets.discriminator(OmegaConf.structured(NetConfig(norm="layer")), spec)
    opt = torch.optim.Adam(d.parameters(), lr=1e-4)
    times, cpus = [], []
    for i in range(60 if net == "mlp" else 20):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = d(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    times.sort()
    cpus.sort()
    print(f"{1000 * times[len(times) // 2]:>9.2f}  {1000 * cpus[len(cpus) // 2]:>12.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    p.add_argument("--pythonpath", default=str(REPO), help="the genlab checkout to measure (default: this one)")
    p.add_argument("--models", default="", help="debug part: comma-separated models (default: all)")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--timeout", type=float, default=300, help="debug part: seconds per run")
    p.add_argument("--eval-samples", type=int, default=10000)
    p.add_argument("--timeout-eval", type=float, default=900)
    p.add_argument("--budget", type=float, default=150, help="wgan part: training seconds per recipe")
    p.add_argument("--experiments", default="default,cpu_wgan_gp")
    p.add_argument("--wgan-eval-samples", type=int, default=5000)
    p.add_argument("--loop-repeats", type=int, default=3)
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child.startswith("threads:"):
        return child_threads(args.child.split(":", 1)[1])
    print(f"genlab from {Path(args.pythonpath).resolve()}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (wall times on a shared machine vary with its load)")
    for part in args.parts.split(","):
        globals()[f"part_{part}"](args)


if __name__ == "__main__":
    main()
