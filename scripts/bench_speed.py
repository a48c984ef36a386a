"""Training speed of every model config: steps/s (trainer steps = generator updates for GANs).

    python scripts/bench_speed.py --dataset fashion_mnist --steps 30 [--models gan,wgan_gp] [--device cpu]

Runs each model with its default (paper) settings for --steps trainer steps after a warm-up, in a
temporary folder, and prints one row per model. The numbers depend on the machine: report them with it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    from genlab.cli import group_options
    from genlab.commands.train import train
    from genlab.config import register_configs

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--models", default=",".join(group_options("model")))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="32")
    p.add_argument("--extra", default="", help="more overrides, space-separated")
    args = p.parse_args()

    from hydra import compose, initialize_config_module

    register_configs()
    print(f"device={args.device} precision={args.precision} dataset={args.dataset} batch={args.batch_size} "
          f"threads={torch.get_num_threads()}")
    print(f"{'model':<12}{'steps/s':>10}{'s/step':>10}  updates per step")
    for model in args.models.split(","):
        overrides = [f"model={model}", f"dataset={args.dataset}", f"trainer.max_steps={args.steps}",
                     f"trainer.batch_size={args.batch_size}", f"trainer.device={args.device}",
                     f"trainer.precision={args.precision}", "trainer.progress=false", "trainer.sample_every=0",
                     "trainer.checkpoint_every=0", f"trainer.log_every={args.steps}", *args.extra.split()]
        try:
            with initialize_config_module("genlab.configs", version_base="1.3"):
                cfg = compose(config_name="train", overrides=overrides)
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                last = train(cfg, Path(d))
                wall = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - report and go on to the next model
            print(f"{model:<12}  failed: {str(e).splitlines()[0][:100]}")
            continue
        sps = last.get("perf/steps_per_sec", args.steps / wall)
        updates = {k.split("/")[0] for k in last if k.endswith("/loss")}
        print(f"{model:<12}{sps:>10.2f}{1 / sps:>10.3f}  {', '.join(sorted(updates))}")


if __name__ == "__main__":
    main()
