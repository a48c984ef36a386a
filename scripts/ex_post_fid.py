"""FID of an auto-encoder's samples with its own prior against an ex-post Gaussian mixture (prior=gmm).

    python scripts/ex_post_fid.py RUN_DIR [--samples 10000] [--components 10] [--seed 0]

Both sets are scored the way `genlab eval metrics=[fid]` scores a run (its feature network, the
training split as reference); prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's genlab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from hydra import compose, initialize_config_module

    from genlab.commands.common import load_run
    from genlab.commands.eval import build_evaluator, run_data
    from genlab.commands.ex_post import gmm_samples
    from genlab.commands.sample import generate

    with initialize_config_module("genlab.configs", version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"run={a.run}", "metrics=[fid]", f"num_samples={a.samples}"])
    run = load_run(a.run, device="cpu")
    data, dcfg = run_data(run)
    ev = build_evaluator(cfg, data, dcfg, torch.device("cpu"), ["fid"], a.samples)
    t0 = time.perf_counter()
    sets = {"standard": generate(run.model, a.samples, a.seed),
            "gmm": gmm_samples(run, a.samples, a.components, a.seed)}
    out = {"run": a.run, "step": run.info["step"], "samples": a.samples, "components": a.components}
    for name, x in sets.items():
        for key, e in ev.score(x, ["fid"]).items():
            out[f"{key}[prior={name}]"] = round(float(e.value), 3)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
