"""Start-up of the CLI: `genlab <command> --help`, `--cfg job` and pre-check errors, wall and CPU seconds.

    python scripts/bench_cli.py                                   # this checkout, 5 repeats
    python scripts/bench_cli.py --before ../old-checkout          # old and new alternating: before/after

Every command runs in its own process (`python -m genlab ...` in an empty folder, the checkout on
PYTHONPATH), pinned with taskset to one core; with --before the two checkouts alternate (A B, B A,
...) so a busy machine slows both alike. Printed per command: min / median / max wall seconds and the
median CPU seconds (user + system, what other jobs on the machine change least), and with --before
the ratio of the medians. Every Hydra plugin installed in the environment is discovered as usual.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from bench_loop import commit, cpu_model  # noqa: E402 - the scripts folder is not a package

COMMANDS = (["train", "--help"], ["eval", "--help"], ["train", "--cfg", "job"],
            ["train", "--cfg", "job", "model=vae", "dataset=fashion_mnist"],
            ["train", "trainer.max_steps=-1"], ["train", "trainer.max_time=abc"], ["train", "model=nope"],
            ["train", "model=cyclegan", "dataset=grid25"], ["eval", "run=/nonexistent"])


def timed(cmd: list[str], checkout: Path, core: str | None) -> tuple[float, float, int]:
    """(wall s, CPU s, exit status) of `python -m genlab CMD` with `checkout` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "genlab", *cmd]
    if core:
        argv = ["taskset", "-c", core, *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        p = subprocess.run(argv, cwd=d, env=env, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--core", default="1", help="taskset core list ('' = not pinned)")
    p.add_argument("--before", default="", help="another genlab checkout, timed alternately with this one")
    p.add_argument("--pythonpath", default=str(REPO), help="the genlab checkout to measure (default: this one)")
    args = p.parse_args()
    sides = {"after": Path(args.pythonpath).resolve()}
    if args.before:
        sides = {"before": Path(args.before).resolve(), **sides}
    print(f"# bench_cli {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; " + "; ".join(
        f"{k}: genlab {commit(v)} ({v.name})" for k, v in sides.items()) +
        f"; {cpu_model()}, {os.cpu_count()} CPUs; core {args.core or 'any'}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<52}{'side':<8}{'wall min / median / max':>26}{'cpu median':>12}{'exit':>6}")
    for cmd in COMMANDS:
        res: dict[str, list[tuple[float, float, int]]] = {k: [] for k in sides}
        for r in range(args.repeats):
            for side in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                res[side].append(timed(cmd, sides[side], args.core or None))
        med = {}
        for side, runs in res.items():
            walls, cpus = [w for w, _, _ in runs], [c for _, c, _ in runs]
            med[side] = statistics.median(walls)
            print(f"{' '.join(cmd):<52}{side:<8}{min(walls):>8.3f} / {med[side]:.3f} / {max(walls):.3f}"
                  f"{statistics.median(cpus):>12.3f}{runs[-1][2]:>6}")
        if len(sides) == 2:
            print(f"{'':<52}{'ratio':<8}{med['after'] / med['before']:>26.2f}")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
