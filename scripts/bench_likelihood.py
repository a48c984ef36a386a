"""Train each likelihood model for a fixed CPU time budget and print test NLL (nats) and bits/dim.

    python scripts/bench_likelihood.py --minutes 3                # Fashion-MNIST, offline
    python scripts/bench_likelihood.py --minutes 10 --dataset mnist --models vae_bin iwae_bin

Each model first runs a few steps to measure its speed on this machine, then trains for
minutes * 60 * steps/sec steps through genlab's python API (genlab.commands.train.train), with one
evaluation at the end on the first --test-images test images (importance sampling with --k samples
for the VAEs). The sizes below are scaled down from the papers to fit a CPU budget; the numbers are
what such a budget buys, next to the published ones for context, not a reproduction.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MLP_VAE = ["model.encoder.arch=mlp", "model.decoder.arch=mlp", "model.encoder.hidden=256", "model.decoder.hidden=256",
           "model.encoder.depth=2", "model.decoder.depth=2", "model.encoder.norm=none", "model.decoder.norm=none",
           "model.z_dim=32"]
# name -> (overrides, published figure for context)
MODELS = {
    "vae_bin": (["model=vae", "dataset.binarize=dynamic", *MLP_VAE],
                "VAE ~86-90 nats on dynamically binarised MNIST (Burda et al. 2016: 86.76, k=5000)"),
    "iwae_bin": (["model=iwae", "dataset.binarize=dynamic", *MLP_VAE, "model.iwae_k=5"],
                 "IWAE k=5: 85.54 nats on binarised MNIST (Burda et al. 2016)"),
    "vae_8bit": (["model=vae", *MLP_VAE], "(8-bit; comparable with the rows below)"),
    "realnvp": (["model=realnvp", "model.hidden=32", "model.n_blocks=1", "model.steps_per_scale=3"],
                "RealNVP ~1.05-1.06 bits/dim on MNIST (as reported by Glow/FFJORD); 3.49 on CIFAR-10"),
    "glow": (["model=glow", "model.hidden=32", "model.n_blocks=1", "model.steps_per_scale=4"],
             "Glow 1.05 bits/dim on MNIST (FFJORD's table); 3.35 on CIFAR-10"),
    "pixelcnn": (["model=pixelcnn", "model.hidden=32", "model.n_layers=5", "model.progress=false"],
                 "Gated PixelCNN 3.03 bits/dim on CIFAR-10; PixelCNN 81.3 nats on binarised MNIST"),
}


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=3.0, help="training time per model (default 3)")
    p.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "mnist"])
    p.add_argument("--root", default=None, help="dataset.root (default: the config's, then the system's datasets)")
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--test-images", type=int, default=1000, help="test images evaluated (default 1000)")
    p.add_argument("--k", type=int, default=1000, help="importance samples for the VAE test NLL (default 1000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these small nets)")
    p.add_argument("--out", default="outputs/bench_likelihood")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", default=None, help="only print the table of a results.json")
    return p.parse_args()


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from genlab.config import register_configs

    register_configs()
    with initialize_config_module("genlab.configs", version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def run_one(name, args, out: Path) -> dict:
    import torch

    from genlab import viz
    from genlab.commands.common import load_run
    from genlab.commands.train import train

    overrides, published = MODELS[name]
    base = [f"dataset={args.dataset}", "trainer.device=cpu", "trainer.progress=false", f"seed={args.seed}",
            f"trainer.batch_size={args.batch_size}", f"trainer.num_threads={args.threads}", "trainer.sample_every=0", "trainer.checkpoint_every=0",
            f"model.eval_limit={args.test_images}", *overrides]
    if args.root:
        base.append(f"dataset.root={args.root}")
    if "vae" in name:
        base.append(f"model.eval_k={args.k}")
    # 1) speed on this machine, measured over the last 20 of 30 steps
    calib = train(compose([*base, "trainer.max_steps=30", "trainer.log_every=20", "trainer.eval_every=0"]),
                  out / f"{name}_calibrate")
    rate = calib["perf/steps_per_sec"]
    steps = max(30, int(args.minutes * 60 * rate))
    # 2) the run, evaluated once at the end
    t0 = time.perf_counter()
    train(compose([*base, f"trainer.max_steps={steps}", f"trainer.log_every={max(1, steps // 20)}",
                   f"trainer.eval_every={steps}"]), out / name)
    wall = time.perf_counter() - t0
    ev = [json.loads(line) for line in (out / name / "eval_history.jsonl").read_text().splitlines()][-1]
    run = load_run(str(out / name), device="cpu")
    torch.manual_seed(args.seed)
    n = 16 if name == "pixelcnn" else 64
    viz.save_png(viz.grid(run.model.sample(n)), out / f"{name}_samples.png")
    return {"model": name, "steps": steps, "train_minutes": wall / 60, "published": published, **ev}


def table(rows, args) -> str:
    lines = [f"dataset {args.dataset} (test split, first {args.test_images} images); budget {args.minutes} CPU "
             f"minutes per model, {args.threads} threads, batch {args.batch_size}",
             "",
             "| model | data | decoder / protocol | steps | test NLL (nats) | bits/dim | -ELBO (nats) | published, for context |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "eval_k" in r:  # the VAE family
            proto = f"{r['decoder']} decoder, importance-sampled k={r['eval_k']}"
            elbo = f"{r['test_neg_elbo_nats']:.1f}"
        elif "n_bits" in r:  # flows
            proto = f"uniform-dequantisation bound, {r['n_bits']}-bit"
            elbo = ""
        else:
            proto = "exact"
            elbo = ""
        data = "binarised (dynamic; test binarised once)" if r["binarize"] != "none" else "8-bit"
        lines.append(f"| {r['model']} | {data} | {proto} | {r['steps']} | {r['test_nll_nats']:.1f} | "
                     f"{r['test_bits_per_dim']:.3f} | {elbo} | {r['published']} |")
    return "\n".join(lines)


def main():
    args = parse()
    if args.table:  # re-print a finished benchmark's table
        print(table(json.loads(Path(args.table).read_text()), args))
        return
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        print(f"== {name}", flush=True)
        rows.append(run_one(name, args, out))
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
