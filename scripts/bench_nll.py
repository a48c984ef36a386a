"""CPU time of the VAE's full likelihood evaluation (test NLL, k importance samples, the whole test split).

    python scripts/bench_nll.py                                  # 20 test images, k=1000, extrapolated
    python scripts/bench_nll.py --chunks 128,256,512,1024,4096   # decoder passes per forward pass
    python scripts/bench_nll.py --before ../old-checkout --chunks 64       # before/after, alternating

The full protocol (10,000 Fashion-MNIST test images, k=1000: ten million decoder passes) is over an
hour of CPU, so each run evaluates the first --images test images and the time is extrapolated
linearly to the whole split (the cost is the same for every image). The model is the default conv
VAE (model=vae dataset=fashion_mnist, logistic decoder) as built, untrained: the cost does not
depend on the weights. Every run is its own process, pinned with taskset to one core, one thread;
configurations alternate over --repeats rounds; printed: CPU seconds per image (min/median/max) and
the full split's extrapolated CPU minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from bench_loop import commit, cpu_model  # noqa: E402 - the scripts folder is not a package


def child(images: int, k: int, chunk: int | None) -> None:
    """One timed evaluation; prints {"cpu": s, "wall": s, "nll": nats} as JSON."""
    import torch
    from hydra import compose, initialize_config_module

    from genlab import data as data_lib
    from genlab.config import model_class, register_configs, validate

    torch.set_num_threads(1)
    register_configs()
    over = ["model=vae", "dataset=fashion_mnist", "trainer.device=cpu"]
    if chunk:
        over.append(f"model.eval_chunk={chunk}")
    with initialize_config_module("genlab.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=over)
    torch.manual_seed(0)
    data = data_lib.build(cfg.dataset, "cpu", seed=0)
    model = model_class(cfg)(validate(cfg), data.spec).eval()
    c0, t0 = time.process_time(), time.perf_counter()
    out = model.evaluate(data, limit=images, k=k)
    print(json.dumps({"cpu": time.process_time() - c0, "wall": time.perf_counter() - t0,
                      "nll": out["test_nll_nats"]}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20, help="test images per run (extrapolated to --full)")
    p.add_argument("--full", type=int, default=10000, help="the test split's size")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--chunks", default="", help="comma-separated model.eval_chunk values (default: the model's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--core", default="1", help="taskset core list ('' = not pinned)")
    p.add_argument("--pythonpath", default=str(REPO), help="the genlab checkout to measure (default: this one)")
    p.add_argument("--before", default="", help="another checkout, timed with its default chunk in the same rounds")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.images, args.k, int(args.child) or None)
    where = Path(args.pythonpath).resolve()
    chunks = args.chunks.split(",") if args.chunks else ["0"]
    sides = [("after" if args.before else "", where, int(c)) for c in chunks]
    if args.before:
        sides.insert(0, ("before", Path(args.before).resolve(), 0))
    print(f"# bench_nll {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; " + "; ".join(
        sorted({f"{label or 'genlab'}: {commit(path)} ({path.name})" for label, path, _ in sides})) +
        f"; {cpu_model()}, {os.cpu_count()} CPUs; core {args.core or 'any'}, 1 thread; load average "
        f"{os.getloadavg()[0]:.2f}\n# conv VAE on Fashion-MNIST, k={args.k}, {args.images} test images per run, "
        f"extrapolated to {args.full}")
    per: dict[tuple, list[float]] = {s: [] for s in sides}
    for r in range(args.repeats):
        for side in sides if r % 2 == 0 else sides[::-1]:
            label, path, c = side
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(c), "--images", str(args.images),
                   "--k", str(args.k)]
            if args.core:
                cmd = ["taskset", "-c", args.core, *cmd]
            env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}
            pr = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=7200)
            if pr.returncode:
                sys.exit(f"bench_nll: the run {label} chunk {c or 'default'} failed:\n{pr.stderr[-2000:]}")
            t = json.loads(pr.stdout.strip().splitlines()[-1])
            per[side].append(t["cpu"] / args.images)
            print(f"  round {r + 1} {label:<7}chunk {c or 'default':>7}: {t['cpu'] / args.images:.4f} CPU-s per image "
                  f"(wall {t['wall'] / args.images:.4f}), NLL {t['nll']:.3f} nats", flush=True)
    print("\nside    chunk     CPU-s per image (min / median / max)     full split, CPU-min (median)")
    for (label, _, c), v in per.items():
        print(f"{label:<8}{c or 'default':>5}   {min(v):.4f} / {statistics.median(v):.4f} / {max(v):.4f}"
              f"{statistics.median(v) * args.full / 60:>26.1f}")
    if args.before:
        base = statistics.median(per[sides[0]])
        for side in sides[1:]:
            print(f"before / after (chunk {side[2] or 'default'}): {base / statistics.median(per[side]):.2f}x less CPU")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
