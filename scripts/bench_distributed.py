"""Steps/s of one run on 1 process and on N processes under torchrun (same per-rank batch).

    python scripts/bench_distributed.py --nproc 2 --steps 200 [--extra "model=dcgan dataset=mnist"]

Each configuration trains --steps trainer steps through the real CLI in a temporary folder; the
number is the trainer's own perf/steps_per_sec of its last logging window (start-up, compilation
and the first window excluded). With N processes each step processes N x batch_size examples.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def steps_per_sec(run_root: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = next(run_root.glob("*/*/tb"))
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    return acc.Scalars("perf/steps_per_sec")[-1].value


def run(nproc: int, overrides: list[str], root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GENLAB_OUTPUTS": str(root)}
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    subprocess.run([*launcher, "-m", "genlab", "train", *overrides], env=env, check=True, capture_output=True)
    return steps_per_sec(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--extra", default="model=wgan_gp dataset=grid25", help="overrides, space-separated")
    args = p.parse_args()
    overrides = [*args.extra.split(), "trainer.device=cpu", "trainer.progress=false", "trainer.num_threads=1",
                 f"trainer.max_steps={args.steps}", f"trainer.log_every={max(args.steps // 4, 1)}",
                 f"trainer.batch_size={args.batch_size}", "trainer.sample_every=0", "trainer.checkpoint_every=0",
                 "trainer.eval_every=0"]
    print(f"overrides: {' '.join(overrides)}")
    print(f"{'processes':>10}{'steps/s':>10}{'examples/s':>12}")
    for n in (1, args.nproc):
        with tempfile.TemporaryDirectory() as d:
            sps = run(n, overrides, Path(d))
        print(f"{n:>10}{sps:>10.2f}{sps * n * args.batch_size:>12.0f}")


if __name__ == "__main__":
    main()
