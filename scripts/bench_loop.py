"""The training loop's own cost: genlab's Trainer against a bare PyTorch loop over the same networks.

    python scripts/bench_loop.py                              # MLP and conv, 5 alternating repeats each
    python scripts/bench_loop.py --nets mlp --repeats 7 --core 1
    python scripts/bench_loop.py --pythonpath ../other-checkout   # measure another genlab (e.g. the old loop)
    python scripts/bench_loop.py --profile mlp                # where one Trainer step's time goes
    python scripts/bench_loop.py --paired --repeats 10        # Trainer and bare steps interleaved in one process

Both sides get the same networks, data tensors, optimizers and batch: WGAN-GP (5 critic steps per
generator step), `mlp` on the 25-Gaussian grid (256-wide MLPs, batch 256) and `conv` on Fashion-MNIST
(the default DCGAN-style conv nets, batch 64). The Trainer runs with its default logging interval
(trainer.log_every=50), no sample grids and no periodic checkpoints; its timed span is the whole fit
(set-up, steps, final checkpoint), the bare loop's its steps. Every run is its own process, pinned
with taskset to one core, one thread; bare and Trainer alternate (A B, B A, ...) so slow drifts of
a shared machine hit both. Printed: steps per CPU second of each run, min/median/max, and the
ratio Trainer/bare of the medians (the headline) and of the best runs.

Three sides, not two: `bare` is the plain loop under glibc's malloc defaults (what a user's own
script gets), `bare+mem` the same loop after genlab's `keep_freed_memory()` (engine/memory.py), so
that the Trainer/bare+mem ratio is the loop's own overhead alone and Trainer/bare what a user sees.
--paired answers the same question without the machine's drift: in each process every Trainer step is
followed by one bare step on a second copy of the networks and data, each side timed by its own CPU
seconds, so both sides see the same machine to within 150 ms; the processes differ by their memory
layout, so the ratio is still given over several of them.

Both nets run the papers' recipe (GENLAB_RECIPE=paper): on a CPU, trainer.recipe=auto would swap
the conv nets for the CPU recipe's MLPs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NETS = {
    # net: (overrides, default steps)
    "mlp": (["experiment=grid25_wgan_gp"], 300),
    "conv": (["model=wgan_gp", "dataset=fashion_mnist"], 60),
    # 8-wide MLPs, batch 8: a step is almost all per-op and per-call overhead, so the loop's own cost shows
    "tiny": (["experiment=grid25_wgan_gp", "model.generator.hidden=8", "model.discriminator.hidden=8",
              "trainer.batch_size=8"], 400),
}


# ---- children: one measured run each, in its own pinned process ---------------------------------
def setup(net: str, log_every: int | None):
    """(cfg, data, model) for a net, built as genlab builds it."""
    import torch
    from hydra import compose, initialize_config_module

    from genlab import data as data_lib
    from genlab.config import model_class, register_configs, validate

    register_configs()
    over = [*NETS[net][0], "trainer.device=cpu", "trainer.progress=false", "trainer.sample_every=0",
            "trainer.checkpoint_every=0", "trainer.num_threads=1"]
    if log_every is not None:
        over.append(f"trainer.log_every={log_every}")
    with initialize_config_module("genlab.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=over)
    torch.manual_seed(0)
    data = data_lib.build(cfg.dataset, "cpu", seed=0)
    model = model_class(cfg)(validate(cfg), data.spec)
    return cfg, data, model


def bare_stepper(model, data, cfg):
    """One generator step of WGAN-GP (n_critic critic steps first) in the plainest PyTorch: the same
    networks, data sampler, optimizer settings and batch. Returns the step function."""
    import torch

    G, D = model.generator, model.discriminator
    lr, betas = float(cfg.optimizer.lr), tuple(cfg.optimizer.betas)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    bs, z_dim, n_critic, lam = int(cfg.trainer.batch_size), int(cfg.model.z_dim), int(cfg.model.n_critic), 10.0

    def step() -> None:
        for p in D.parameters():
            p.requires_grad_(True)
        for p in G.parameters():
            p.requires_grad_(False)
        for _ in range(n_critic):
            real = data.next(bs).x
            fake = G(torch.randn(bs, z_dim))
            alpha = torch.rand(bs, *([1] * (real.dim() - 1)))
            x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
            gp = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
            loss = D(fake).mean() - D(real).mean() + lam * gp
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        for p in G.parameters():
            p.requires_grad_(True)
        loss = -D(G(torch.randn(bs, z_dim))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    return step


def bare_loop(model, data, cfg, steps: int) -> None:
    step = bare_stepper(model, data, cfg)
    for _ in range(steps):
        step()


def trainer_loop(model, data, cfg, steps: int) -> None:
    from omegaconf import open_dict

    from genlab.engine.trainer import Trainer

    with open_dict(cfg):
        cfg.trainer.max_steps = steps
    with tempfile.TemporaryDirectory() as d:
        Trainer(cfg, Path(d)).fit(model, data)


def child(net: str, kind: str, steps: int, log_every: int | None) -> None:
    """One timed run; prints {"cpu": s, "wall": s} as JSON."""
    import torch

    import torch.utils.tensorboard  # noqa: F401 - imported before timing, as the bare loop imports nothing
    import tqdm  # noqa: F401

    torch.set_num_threads(1)
    cfg, data, model = setup(net, log_every)
    if kind == "bare+mem":
        import importlib.util  # this checkout's memory policy, also when measuring an older genlab

        spec = importlib.util.spec_from_file_location("_memory", REPO / "genlab" / "engine" / "memory.py")
        memory = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(memory)
        memory.keep_freed_memory()
    if kind == "paired":
        return paired(net, cfg, data, model, steps, log_every)
    fn = trainer_loop if kind == "trainer" else bare_loop
    c0, t0 = time.process_time(), time.perf_counter()
    fn(model, data, cfg, steps)
    print(json.dumps({"cpu": time.process_time() - c0, "wall": time.perf_counter() - t0}))


def paired(net: str, cfg, data, model, steps: int, log_every: int | None) -> None:
    """Trainer and bare steps interleaved in one process, one bare step after every Trainer step.

    A shared VM's speed drifts by several per cent within minutes, more than the 1-2 % this bench must
    resolve; steps 150 ms apart see the same machine. The Trainer's step is the CPU time from the end of
    one bare step to the start of the next (its whole loop body: steps, logging, the non-finite flag,
    the budget and schedule checks); the bare step is a second copy of the same networks and data
    (equal initialisation) driven by bare_stepper. Both run under the Trainer's keep_freed_memory(), so
    only the loops differ. Prints per-step CPU seconds of both sides as JSON."""
    from omegaconf import open_dict

    from genlab.engine.trainer import Trainer

    _, bare_data, bare_model = setup(net, log_every)
    bare_step = bare_stepper(bare_model, bare_data, cfg)
    times: dict[str, list[float]] = {"trainer": [], "bare": []}

    class Paired(Trainer):
        def _steps(self, t, bar):
            self._mark = time.process_time()
            return super()._steps(t, bar)

        def out_of_time(self, *args):  # called once per Trainer step, after its updates and logging
            c = time.process_time()
            times["trainer"].append(c - self._mark)
            bare_step()
            self._mark = time.process_time()
            times["bare"].append(self._mark - c)
            return super().out_of_time(*args)

    with open_dict(cfg):
        cfg.trainer.max_steps = steps
    with tempfile.TemporaryDirectory() as d:
        Paired(cfg, Path(d)).fit(model, data)
    print(json.dumps(times))


def profile(net: str, steps: int, log_every: int | None) -> None:
    """cProfile of the Trainer's steps: the top functions by own time, and genlab's by cumulative time."""
    import cProfile
    import io
    import pstats

    import torch

    import torch.utils.tensorboard  # noqa: F401 - imports are set-up, not a step's cost
    import tqdm  # noqa: F401

    torch.set_num_threads(1)
    cfg, data, model = setup(net, log_every)
    trainer_loop(model, data, cfg, 2)  # first calls import and allocate: not a step's cost either
    cfg, data, model = setup(net, log_every)
    prof = cProfile.Profile()
    prof.enable()
    trainer_loop(model, data, cfg, steps)
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())
    print(f"# cProfile of {steps} Trainer steps ({net}, log_every={cfg.trainer.log_every}): "
          f"{1000 * total / steps:.2f} ms per step under the profiler")
    for title, order, pattern, n in (("own time", "tottime", "", 18), ("genlab's functions, cumulative", "cumulative",
                                                                     "genlab/", 22)):
        out = io.StringIO()
        st.stream = out
        st.sort_stats(order).print_stats(pattern, n)
        rows = out.getvalue().split("filename:lineno(function)", 1)[1].strip().splitlines()
        print(f"\n## top by {title}: ms per step (own, cumulative), calls per step")
        for row in rows:
            parts = row.split(None, 5)
            if len(parts) < 6:
                continue
            calls = parts[0].split("/")[0]
            own, cum = float(parts[1]), float(parts[3])
            name = parts[5].replace(str(Path(torch.__file__).parents[1]) + "/", "")
            print(f"{1000 * own / steps:9.3f} {1000 * cum / steps:9.3f} {int(calls) / steps:8.1f}  {name}")


# ---- the parent: alternating pinned runs ----------------------------------------------------------
def commit(path: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True).stdout.strip()
        return out or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_child(args, net: str, kind: str, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(args.pythonpath).resolve()), "OMP_NUM_THREADS": "1",
           "GENLAB_RECIPE": "paper"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"{net}:{kind}", "--steps", str(steps)]
    if args.log_every is not None:
        cmd += ["--log-every", str(args.log_every)]
    if args.core is not None:
        cmd = ["taskset", "-c", str(args.core), *cmd]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode:
        sys.exit(f"bench_loop: the {kind} run of {net} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def stats(values: list[float]) -> str:
    return f"min {min(values):6.3f}  median {statistics.median(values):6.3f}  max {max(values):6.3f}"


def paired_report(args, net: str, steps: int) -> None:
    """--paired: per run, the Trainer's speed relative to the bare loop's over the same steps
    (bare CPU seconds / Trainer CPU seconds, steps after --skip), and over blocks of 10 paired steps."""
    print(f"\n## {net} paired: {' '.join(NETS[net][0])}, {steps} Trainer steps per run, each followed by one bare "
          f"step in the same process; first {args.skip} left out")
    runs = []
    for r in range(args.repeats):
        t = run_child(args, net, "paired", steps)
        tr, ba = t["trainer"][args.skip:], t["bare"][args.skip:]
        blocks = sorted(sum(ba[i:i + 10]) / sum(tr[i:i + 10]) for i in range(0, len(tr) - 9, 10))
        runs.append(sum(ba) / sum(tr))
        print(f"  run {r + 1}: Trainer {1000 * statistics.mean(tr):7.2f} ms/step, bare {1000 * statistics.mean(ba):7.2f}"
              f" ms/step; ratio {runs[-1]:.4f}; blocks of 10: median {statistics.median(blocks):.4f}, "
              f"range {blocks[0]:.3f}-{blocks[-1]:.3f}", flush=True)
    print(f"  ratio Trainer/bare+mem over runs: {stats(runs)}")
    print(f"  load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="mlp,conv", help="comma-separated: mlp, conv, tiny")
    p.add_argument("--repeats", type=int, default=5, help="runs of each side per net (alternating order)")
    p.add_argument("--steps", type=int, default=None, help="trainer steps per run (default: mlp 300, conv 60)")
    p.add_argument("--core", default="1", help="taskset core list for every run ('' = not pinned)")
    p.add_argument("--log-every", type=int, default=None, help="trainer.log_every (default: the trainer's default)")
    p.add_argument("--pythonpath", default=str(REPO), help="the genlab checkout to measure (default: this one)")
    p.add_argument("--profile", default="", metavar="NET", help="print a cProfile of the Trainer's steps instead")
    p.add_argument("--paired", action="store_true",
                   help="interleave Trainer and bare steps in one process (immune to the machine's drift)")
    p.add_argument("--skip", type=int, default=5, help="--paired: first steps of each run left out (warm-up)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.core = args.core or None
    if args.child:
        net, kind = args.child.split(":")
        return child(net, kind, args.steps or NETS[net][1], args.log_every)
    if args.profile:
        return profile(args.profile, args.steps or NETS[args.profile][1], args.log_every)
    where = Path(args.pythonpath).resolve()
    print(f"# bench_loop {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; genlab {commit(where)} "
          f"({where.name}); {cpu_model()}, {os.cpu_count()} CPUs; core {args.core or 'any'}, 1 thread; "
          f"load average {os.getloadavg()[0]:.2f}")
    for net in args.nets.split(","):
        steps = args.steps or NETS[net][1]
        if args.paired:
            paired_report(args, net, steps)
            continue
        sides = ("bare", "bare+mem", "trainer")
        sps: dict[str, list[float]] = {k: [] for k in sides}
        print(f"\n## {net}: {' '.join(NETS[net][0])}, {steps} steps per run (steps per CPU second; wall in brackets)")
        for r in range(args.repeats):
            for kind in sides if r % 2 == 0 else sides[::-1]:
                t = run_child(args, net, kind, steps)
                sps[kind].append(steps / t["cpu"])
                print(f"  run {r + 1} {kind:<9}{steps / t['cpu']:8.3f}  ({steps / t['wall']:.3f})", flush=True)
        for kind in sps:
            print(f"  {kind:<9}{stats(sps[kind])}")
        for base in ("bare", "bare+mem"):
            med = statistics.median(sps["trainer"]) / statistics.median(sps[base])
            best = max(sps["trainer"]) / max(sps[base])
            # A shared VM's clock drifts by several per cent within minutes; the runs of one round are
            # adjacent, so the median of the rounds' own ratios cancels most of the drift.
            paired = sorted(t / b for t, b in zip(sps["trainer"], sps[base]))
            print(f"  ratio Trainer/{base}: {med:.3f} (medians), {best:.3f} (best runs), "
                  f"{statistics.median(paired):.3f} (median of the {len(paired)} rounds' ratios; "
                  f"range {paired[0]:.3f}-{paired[-1]:.3f})")
        print(f"  load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
