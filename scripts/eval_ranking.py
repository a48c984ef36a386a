"""Does the evaluation rank models sensibly? Trained vs untrained vs mode-collapsed, next to the floor.

    python scripts/eval_ranking.py RUN_DIR [--num-samples 5000] [--modes 3] [--device cpu]

RUN_DIR is a finished GAN run (e.g. `genlab train model=wgan_gp dataset=fashion_mnist`). The script
scores three generators with the same Evaluator `genlab eval` uses:
  trained    the run's last checkpoint
  untrained  the same architecture and seed, freshly initialised
  collapsed  the trained generator restricted to --modes latent points (a hand-made mode collapse)
and prints each metric with the real-data floor (held-out real images scored the same way).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn


class Collapsed(nn.Module):
    """A generator that only ever uses k latent vectors: the textbook picture of mode collapse."""

    def __init__(self, model, k: int, seed: int = 0):
        super().__init__()
        self.model = model
        self.family, self.conditional = model.family, model.conditional
        self.z = model.latent(k, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def sample(self, n, **kwargs):
        z = self.z[torch.arange(n) % len(self.z)]
        return self.model.sample(n, noise=z)


def main() -> None:
    from hydra import compose, initialize_config_module

    from genlab.commands.common import load_run
    from genlab.commands.eval import build_evaluator, run_data
    from genlab.config import build_model, register_configs
    from genlab.device import resolve_device

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--modes", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--metrics", default="fid,kid,prdc,is,classes")
    args = p.parse_args()

    register_configs()
    with initialize_config_module("genlab.configs", version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"run={args.run}"])
    device = resolve_device(args.device)
    run = load_run(args.run, "last", str(device))
    torch.manual_seed(int(run.cfg.seed))
    untrained = build_model(run.cfg, run.spec).to(device).eval()
    contenders = {"trained": run.model, "untrained": untrained, "collapsed": Collapsed(run.model, args.modes)}
    data, dcfg = run_data(run)
    ev = build_evaluator(cfg, data, dcfg, device, args.metrics.split(","), args.num_samples)
    groups = ev.groups(run.model)
    scores = {name: ev.score(ev.samples(m)[0], groups) for name, m in contenders.items()}
    floor = ev.floor(groups)
    print(f"{args.run}: {run.cfg.model.name} (step {run.info['step']}) on {data.name}, "
          f"{ev.num_samples} samples each; collapsed = {args.modes} latent points")
    head = ["metric", *contenders, "floor"]
    rows = [head]
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    for key in scores["trained"]:
        rows.append([key, *(fmt(scores[c][key].value) for c in contenders),
                     fmt(floor[key].value) if key in floor else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
