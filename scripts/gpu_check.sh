#!/usr/bin/env bash
# GPU check: one script, about 8 minutes on one GPU, one table at the end.
#   1. every model's debug run on CUDA in precision 32, bf16 and 16 (one Hydra multirun per precision)
#   2. the default recipes' steps/s on the GPU against one CPU thread (trainer.max_time each), peak GPU memory
#   3. trainer.compile=true (debug runs of a conv GAN and a VAE)
#   4. torchrun --nproc_per_node=1 on NCCL
# Usage: scripts/gpu_check.sh [OUT]      (OUT default outputs/gpu_check; PYTHON=... to pick the interpreter)
#        GPU_CHECK_DRY=1 scripts/gpu_check.sh   runs the same plumbing on the CPU with two models, 32-bit only
# Each part has its own time limit, so a hang in one is a row marked "timeout", not a stuck script.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-outputs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE HYDRA_FULL_ERROR=0
exec "$PY" - "$OUT" <<'PYEOF'
import json, os, shutil, subprocess, sys, time
from pathlib import Path

out = Path(sys.argv[1]).resolve()
dry = os.environ.get("GPU_CHECK_DRY") == "1"
py = sys.executable
import torch

if not dry and not torch.cuda.is_available():
    print("gpu_check: no CUDA device (torch.cuda.is_available() is False); GPU_CHECK_DRY=1 checks the plumbing on the CPU")
    sys.exit(1)
device = "cpu" if dry else "cuda"
gpu = "none (dry run on the CPU)" if dry else torch.cuda.get_device_name(0)
print(f"gpu_check: torch {torch.__version__}, device {gpu}, output {out}", flush=True)
t_start = time.perf_counter()
rows = []  # (part, model, setting, result)


def genlab(args, timeout, env=None, torchrun=False):
    """Run genlab (or torchrun -m genlab); (exit status or 'timeout', seconds, last stderr line)."""
    cmd = ([py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "genlab"] if torchrun
           else [py, "-m", "genlab"]) + args
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, f"over {timeout} s"
    tail = [line for line in p.stderr.strip().splitlines() if line.strip()]
    return p.returncode, time.perf_counter() - t0, (tail[-1] if tail else "")


def status(job):
    try:
        return json.loads((job / "status.json").read_text())
    except (OSError, ValueError):
        return {"state": "missing"}


# Which models run where: the zoo's rule (the model class's own check), on Fashion-MNIST and sneaker<->sandal.
from genlab.commands import zoo

opts, over, given = zoo.parse_args(["zoo.datasets=[fashion_mnist,unpaired_sneaker_sandal]"])
cells = [c for c in zoo.zoo_cells(opts, over, out, given) if not dry or c.model in ("dcgan", "vae")]
by_data = {}
for c in cells:
    by_data.setdefault(c.dataset, []).append(c.model)

# 1. every model, debug run, each precision
for precision in (["32"] if dry else ["32", "bf16", "16"]):
    for dataset, models in by_data.items():
        sweep = out / f"debug-{precision}" / dataset
        shutil.rmtree(sweep, ignore_errors=True)
        code, secs, last = genlab(["train", "-m", f"model={','.join(models)}", f"dataset={dataset}", "trainer=debug",
                                   f"trainer.device={device}", f"trainer.precision={precision}",
                                   "trainer.progress=false", f"hydra.sweep.dir={sweep}",
                                   "hydra.sweep.subdir=${model.name}"], timeout=150)
        for m in models:
            st = status(sweep / m)
            res = "ok" if st["state"] == "done" else f"{st['state']}: {st.get('error') or last}"[:90]
            if code == "timeout" and st["state"] != "done":
                res = "timeout (the sweep ran over 150 s)"
            rows.append(("debug run", m, f"precision {precision}", res))
        print(f"  debug runs, precision {precision}, {dataset}: {len(models)} models in {secs:.0f} s", flush=True)

# 2. default recipes: steps/s on the device against one CPU thread, peak GPU memory
recipes = ["dcgan", "vae"] if dry else ["dcgan", "wgan_gp", "sngan", "vae", "realnvp", "glow", "pixelcnn"]
budget = "5s" if dry else "20s"
for m in recipes:
    rates = {}
    for dev, extra in ((device, []), ("cpu", ["trainer.num_threads=1"])):
        if dry and dev == "cpu" and rates:
            continue
        run = out / "speed" / f"{m}-{dev}"
        shutil.rmtree(run, ignore_errors=True)
        code, secs, last = genlab(["train", f"model={m}", "dataset=fashion_mnist", f"trainer.device={dev}",
                                   f"trainer.max_time={budget}", "trainer.max_steps=1000000", "trainer.progress=false",
                                   "trainer.sample_every=0", "trainer.checkpoint_every=0", *extra,
                                   f"hydra.run.dir={run}"], timeout=120)
        st = status(run)
        rates[dev] = (st["step"] / st["train_time"]) if st.get("train_time") else None
        if dev != "cpu" or dry:
            mem = st.get("peak_gpu_mb")
            rows.append(("peak memory", m, "default recipe", f"{mem:.0f} MiB" if mem else "-"))
        if st["state"] not in ("done",):
            rows.append(("steps/s", m, dev, f"{st['state']}: {st.get('error') or last}"[:90]))
    g, c = rates.get(device), rates.get("cpu")
    text = f"{g:.2f} steps/s on {device}" if g else "-"
    if c and not dry:
        text += f" vs {c:.2f} on one CPU thread ({g / c:.1f}x)" if g else f" vs {c:.2f} on one CPU thread"
    rows.append(("steps/s", m, f"default recipe, {budget}", text))
    print(f"  speed {m}: {text}", flush=True)

# 3. torch.compile
for m in (["dcgan"] if dry else ["dcgan", "vae"]):
    run = out / "compile" / m
    shutil.rmtree(run, ignore_errors=True)
    code, secs, last = genlab(["train", f"model={m}", "dataset=fashion_mnist", "trainer=debug", f"trainer.device={device}",
                               "trainer.max_steps=20", "trainer.compile=true", "trainer.progress=false",
                               f"hydra.run.dir={run}"], timeout=240)
    st = status(run)
    rows.append(("compile", m, "trainer.compile=true", "ok" if st["state"] == "done" else
                 f"{'timeout' if code == 'timeout' else st['state']}: {st.get('error') or last}"[:90]))

# 4. torchrun on NCCL (gloo in a dry run)
run = out / "torchrun"
shutil.rmtree(run, ignore_errors=True)
code, secs, last = genlab(["train", "model=dcgan", "dataset=fashion_mnist", "trainer=debug", f"trainer.device={device}",
                           "trainer.progress=false", f"hydra.run.dir={run}"], timeout=180, torchrun=True)
st = status(run)
rows.append(("torchrun", "dcgan", f"--nproc_per_node=1, {'gloo' if dry else 'nccl'}",
             "ok" if code == 0 and st["state"] == "done" else f"exit {code}: {last}"[:90]))

widths = [max(len(str(r[i])) for r in rows + [("part", "model", "setting", "result")]) for i in range(4)]
print()
print("  ".join(h.ljust(w) for h, w in zip(("part", "model", "setting", "result"), widths)))
print("  ".join("-" * w for w in widths))
for r in rows:
    print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
bad = [r for r in rows if r[0] in ("debug run", "compile", "torchrun") and r[3] != "ok"]
print(f"\ngpu_check: {len(rows)} rows, {len(bad)} failed, {time.perf_counter() - t_start:.0f} s in all; device {gpu}")
sys.exit(1 if bad else 0)
PYEOF
