"""genlab zoo: every model on the data it fits, one wall-clock budget, one evaluation protocol, one table.

Built on what exists, not a scheduler of its own: one `genlab train -m` sweep per dataset (Hydra
multirun, so any launcher override works), trainer.max_time as the budget, each job's status.json
for what finished, genlab eval's evaluation for the scores, and genlab report's aggregation (mean ±
std over seeds). Which data a model fits is its class's own answer (`check`, and whether it
`translates`), never a list of names. A rerun into the same zoo.out skips finished jobs, resumes
interrupted ones from their own last.pt (trainer.resume=auto) and keeps failed ones as failed rows.
`zoo.suite=NAME` runs a published experiment (configs/suite/NAME.yaml) and writes its table in the
paper's layout with the paper's numbers beside genlab's.

  DIR/runs/<dataset>/<row>/s<seed>/   run folders (status.json, eval.json, checkpoints/, ...)
  DIR/zoo.md, DIR/zoo.csv             one row per model (or suite variant) and dataset
  DIR/gallery.png                     one labelled tile per row: samples of seed 0, scatter plots for points
  DIR/zoo_<metric>.png                the metric against training time, one line per model
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from genlab.errors import GenlabError

# Metric columns of the zoo table, by base name, in this order (those that apply to a row are filled).
COLUMNS = ("fid", "kid", "precision", "recall", "coverage", "classes_covered", "modes", "high_quality",
           "reverse_kl", "stacked_modes", "stacked_kl", "test_bits_per_dim", "test_elbo_bits_per_dim")
TIMES = ("steps", "steps_per_s", "train_s", "s_per_1k_samples")
TILE = 196  # pixels of one gallery picture


@dataclass
class Cell:
    """One row of the table: a model (or a suite's variant) on one dataset, trained once per seed."""

    label: str
    dataset: str
    overrides: list[str]
    seeds: list[int]
    folder: Path
    model: str = ""
    error: str | None = None  # why the row did not run at all
    jobs: list[dict] = field(default_factory=list)
    # a two-stage row (e.g. vqvae_prior): the row whose run of the same seed it trains on, and the key naming it
    first_stage: "Cell | None" = None
    stage_key: str = ""
    translates: bool = False  # CycleGAN: no samples, so no evaluation during training

    def job_dir(self, seed: int) -> Path:
        return self.folder / f"s{seed}"


# ---- settings ----------------------------------------------------------------------------------
def defaults() -> OmegaConf:
    return OmegaConf.load(str(resources.files("genlab.configs") / "zoo.yaml"))


def key_help() -> list[tuple[str, str, str]]:
    """(key, default, comment) of every zoo.* key, read from configs/zoo.yaml."""
    rows = []
    for line in (resources.files("genlab.configs") / "zoo.yaml").read_text().splitlines():
        m = re.match(r"^([a-z_]+):\s*(.*?)\s*(?:#\s*(.*))?$", line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3) or ""))
    return rows


def suites() -> dict[str, str]:
    """Suite name -> its title line."""
    folder = resources.files("genlab.configs") / "suite"
    out = {}
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.endswith(".yaml"):
            out[p.name[:-5]] = str(OmegaConf.load(str(p)).get("title", ""))
    return out


def load_suite(name: str):
    return OmegaConf.load(str(resources.files("genlab.configs") / "suite" / f"{name}.yaml"))


def parse_args(args: list[str]) -> tuple[OmegaConf, list[str], set[str]]:
    """(zoo settings, overrides for every training job, the zoo keys given) from the command line."""
    opts = defaults()
    given = set()
    zoo_args = [a for a in args if a.startswith("zoo.")]
    passthrough = [a for a in args if not a.startswith("zoo.")]
    for a in zoo_args:
        key, eq, value = a[4:].partition("=")
        if not eq:
            raise GenlabError(f"{a}: give zoo.KEY=VALUE")
        if key not in opts:
            raise GenlabError(f"unknown key zoo.{key}; keys: {', '.join('zoo.' + k for k in opts)} (genlab zoo --help)")
        given.add(key)
        try:
            opts[key] = OmegaConf.from_dotlist([f"v={value}"]).v
        except Exception as e:  # noqa: BLE001 - OmegaConf's grammar errors
            raise GenlabError(f"{a}: cannot parse the value ({e})") from None
    for key in ("models", "datasets"):
        v = opts[key]
        if isinstance(v, str):
            opts[key] = [v]
    from genlab.engine.budget import parse_duration

    for key in ("nll_images", "nll_k"):
        if not isinstance(opts[key], int) or opts[key] < 1:
            raise GenlabError(f"zoo.{key} must be a whole number >= 1, got {opts[key]}")
    for key in ("budget", "eval_every", "checkpoint_every"):
        parse_duration(opts[key], f"zoo.{key}")
    if not isinstance(opts.seeds, int) or isinstance(opts.seeds, bool) or opts.seeds < 1:
        raise GenlabError(f"zoo.seeds must be a whole number >= 1, got {opts.seeds}")
    if opts.samples is not None and (not isinstance(opts.samples, int) or opts.samples < 2):
        raise GenlabError(f"zoo.samples must be a whole number >= 2 (or null), got {opts.samples}")
    for a in passthrough:
        if "=" not in a or a.startswith("-"):
            raise GenlabError(f"{a}: genlab zoo takes key=value overrides only (genlab zoo --help)")
    return opts, passthrough, given


def usage() -> str:
    from genlab.cli import group_options

    lines = ["usage: genlab zoo [zoo.KEY=VALUE ...] [training overrides, e.g. trainer.num_threads=1 hydra/launcher=joblib]",
             "", "Every model on the data it fits under one budget and one protocol: zoo.md, zoo.csv, gallery.png,",
             "zoo_<metric>.png in zoo.out (docs/experiments-zoo.md). A rerun skips finished jobs and resumes the rest.",
             "", "keys:"]
    lines += [f"  zoo.{k:<17}{d:<14} {c}" for k, d, c in key_help()]
    lines += ["", "suites (zoo.suite=NAME):"] + [f"  {n:<18}{t}" for n, t in suites().items()]
    lines += ["", "models (zoo.models=[...]):", "  " + " ".join(group_options("model")),
              "", "datasets (zoo.datasets=[...]):", "  " + " ".join(group_options("dataset"))]
    return "\n".join(lines)


# ---- what runs where ---------------------------------------------------------------------------
def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from genlab.cli import describe
    from genlab.config import register_configs

    register_configs()
    with initialize_config_module("genlab.configs", version_base="1.3"):
        try:
            return hydra_compose(config_name="train", overrides=overrides)
        except Exception as e:  # noqa: BLE001 - Hydra's and OmegaConf's composition errors
            # e.g. a model key given to every job of the zoo that some model has not
            raise GenlabError(f"invalid config for {' '.join(o for o in overrides if o.startswith(('model=', 'dataset=')))}: "
                              f"{describe(e)} (a training override given to genlab zoo goes to every job)") from None


def fits(cfg, planned_first_stage=None) -> str | None:
    """Why the composed train config cannot run (None if it can): the model class decides from the data's spec.
    A two-stage model is checked with `planned_first_stage`, its first stage's model config (that run is trained later)."""
    from genlab.commands import preflight
    from genlab.config import model_class, validate
    from genlab.data import expected_spec

    try:
        validate(cfg, planned_first_stage)
        spec = expected_spec(cfg.dataset)
        if model_class(cfg).translates != (spec.domains == 2):
            what = "translates images between two domains" if model_class(cfg).translates else "samples images"
            return f"model {cfg.model.name} {what}; dataset {cfg.dataset.name} has {spec.domains} domain(s)"
        preflight.Preflight().train(cfg)
    except GenlabError as e:
        return str(e)
    return None


def zoo_cells(opts, passthrough: list[str], out: Path, given: set[str]) -> list[Cell]:
    """The zoo's rows: every (named) model on every (named) dataset it fits."""
    from genlab.cli import group_options

    models, datasets = group_options("model"), group_options("dataset")
    wanted = list(opts.models) if opts.models else models
    for m in wanted:
        if m not in models:
            raise GenlabError(f"unknown model '{m}' in zoo.models; available: {', '.join(models)}")
    for d in opts.datasets:
        if d not in datasets:
            raise GenlabError(f"unknown dataset '{d}' in zoo.datasets; available: {', '.join(datasets)}")
    from genlab.config import model_class

    named = opts.models is not None
    both = named and "datasets" in given  # then every named model must fit every named dataset
    cells, fitted = [], {m: 0 for m in wanted}
    for d in opts.datasets:
        composed = {m: compose([f"model={m}", f"dataset={d}", *passthrough]) for m in wanted}
        here: dict[str, Cell] = {}
        # one-stage models first: a two-stage row (vqvae_prior) trains on its first stage's run of this zoo
        for m in sorted(wanted, key=lambda m: model_class(composed[m]).first_stage_key is not None):
            cfg, cls = composed[m], model_class(composed[m])
            first = cls.first_stage_model.Config.name if cls.first_stage_key else None
            if first is None:
                problem = fits(cfg)
            elif first not in wanted:
                raise GenlabError(f"model {m} trains on a run of model {first} in the same zoo: "
                                  f"add {first} to zoo.models (zoo.models=[{first},{m}])")
            elif first not in here:
                problem = f"its first stage, model {first}, does not run on {d}"
            else:
                plan = OmegaConf.create(OmegaConf.to_container(composed[first].model, resolve=True))
                problem = fits(cfg, plan)
            if problem is None:
                here[m] = Cell(m, d, [f"model={m}"], list(range(opts.seeds)), out / "runs" / d / m, model=m,
                               first_stage=here.get(first), stage_key=cls.first_stage_key or "",
                               translates=cls.translates)
                fitted[m] += 1
            elif both:
                raise GenlabError(f"model {m} cannot run on dataset {d}: {problem}")
        cells += [here[m] for m in wanted if m in here]
    for m, n in fitted.items():
        if named and n == 0:
            raise GenlabError(f"model {m} fits none of zoo.datasets={list(opts.datasets)}; see genlab zoo --help")
    if not cells:
        raise GenlabError(f"no model fits zoo.datasets={list(opts.datasets)}")
    return cells


def suite_cells(suite, opts, passthrough: list[str], out: Path, given: set[str]) -> list[Cell]:
    """A suite's rows: each variant (those of zoo.models if given) on each of its datasets (those of
    zoo.datasets if given), suite.trials seeds (zoo.seeds if given: a rerun with more adds trials)."""
    trials = opts.seeds if "seeds" in given else int(suite.trials)
    variants = dict(suite.variants)
    for v in (opts.models or []) if "models" in given else []:
        if v not in variants:
            raise GenlabError(f"suite {suite.name} has no variant '{v}'; its variants: {', '.join(variants)}")
    if "models" in given and opts.models:
        variants = {k: v for k, v in variants.items() if k in opts.models}
    datasets = list(suite.datasets)
    if "datasets" in given:
        bad = [d for d in opts.datasets if d not in datasets]
        if bad:
            raise GenlabError(f"suite {suite.name} runs on {', '.join(datasets)}, not {bad[0]}")
        datasets = list(opts.datasets)
    suite.datasets, suite.variants = datasets, variants
    cells = []
    for d in datasets:
        for label, extra in variants.items():
            over = [*suite.overrides, *extra, f"dataset={d}"]
            cfg = compose([*over, *passthrough])
            problem = fits(cfg)
            if problem is not None:
                raise GenlabError(f"suite {suite.name}, {label} on {d}: {problem}")
            cells.append(Cell(str(label), d, list(over), list(range(trials)), out / "runs" / d / str(label),
                              model=str(cfg.model.name)))
    return cells


# ---- training ----------------------------------------------------------------------------------
def job_state(path: Path) -> dict:
    from genlab.commands.sweep import read_status

    return read_status(path) or {"state": "pending"}


def train_cells(cells: list[Cell], common: list[str], passthrough: list[str], retry_failed: bool,
                suite: bool) -> None:
    """One `genlab train -m` per dataset and set of pending seeds (suites: per variant); finished jobs are skipped."""
    groups: dict[tuple, list[Cell]] = {}
    staged: list[tuple[Cell, int]] = []  # two-stage rows, one job per seed after their first stages
    for c in cells:
        pending = [s for s in c.seeds if job_state(c.job_dir(s))["state"] not in
                   (("done",) if retry_failed else ("done", "failed"))]
        if pending and c.first_stage is not None:
            staged += [(c, s) for s in pending]
        elif pending:
            key = (c.dataset, tuple(pending)) + ((c.label,) if suite else ())
            groups.setdefault(key, []).append(c)
    from genlab import progress

    with progress.bar(len(groups) + len(staged), "zoo: training sweeps", "sweep") as bar:
        for (dataset, seeds, *_), members in groups.items():
            _train_group(dataset, seeds, members, common, passthrough, suite)
            bar.update()
        for c, s in staged:
            first = c.first_stage.job_dir(s)
            if job_state(first)["state"] == "done":
                _train_group(c.dataset, (s,), [c], [*common, f"model.{c.stage_key}={quote(first)}"], passthrough, suite)
            else:
                c.error = f"its first stage ({c.first_stage.label}, seed {s}) did not finish"
            bar.update()


def _train_group(dataset: str, seeds: tuple, members: list[Cell], common: list[str], passthrough: list[str],
                 suite: bool) -> None:
    """One `genlab train -m` of the zoo: these cells on one dataset and their pending seeds."""
    sweep = members[0].folder.parent
    if all(c.translates for c in members):  # a translator has no samples for the evaluation curves to score
        common = [o for o in common if not o.startswith("trainer.eval_every_time=")] + ["trainer.eval_every_time=null"]
    if suite:
        varying = members[0].overrides
        subdir = f"{members[0].label}/s${{seed}}"
    else:
        varying = [f"model={','.join(c.model for c in members)}", f"dataset={dataset}"]
        subdir = "${model.name}/s${seed}"
    argv = [sys.executable, "-m", "genlab", "train", "-m", *common, *varying, f"seed={','.join(map(str, seeds))}",
            f"hydra.sweep.dir={quote(sweep)}", f"hydra.sweep.subdir={subdir}", "~hydra.callbacks.genlab_sweep",
            *passthrough]
    names = ", ".join(c.label for c in members)
    print(f"genlab zoo: training {names} on {dataset}, seeds {','.join(map(str, seeds))}", flush=True)
    proc = subprocess.run(argv)
    if proc.returncode not in (0, 1):  # 1: a job failed and is recorded in its status.json
        for c in members:
            for s in seeds:
                st = job_state(c.job_dir(s))
                if st["state"] == "pending":
                    c.error = f"the sweep ended with exit status {proc.returncode} before this job started"


def quote(path: Path) -> str:
    text = str(path)
    return text if re.fullmatch(r"[A-Za-z0-9_./:+-]+", text) else "'" + text.replace("'", "\\'") + "'"


# ---- evaluation --------------------------------------------------------------------------------
def sample_steps(run) -> int | None:
    """The denoising steps a run's samples are scored and timed with: its trainer.sample_steps (what its
    periodic evaluations used) for a model that samples in steps (diffusion), else None."""
    n = OmegaConf.select(run.cfg, "trainer.sample_steps")
    return int(n) if n and "steps" in run.model.sample_options else None


def run_recipe(run) -> str:
    """The recipe a run trained (its record's trainer.recipe; runs from before recipes had the paper's)."""
    return str(OmegaConf.select(run.cfg, "trainer.recipe", default="paper"))


def evaluate_job(job: Path, samples: int | None, slow: bool, nll: list[str]) -> dict:
    """genlab eval of one finished job (skipped when its eval.json is of the same step and sample count);
    `nll` holds any further eval overrides (the NLL bounds, a diffusion model's steps=)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from genlab.commands.eval import evaluate_run

    st = job_state(job)
    try:
        ev = json.loads((job / "eval.json").read_text())
        if ev["step"] == st.get("step") and (samples is None or ev["num_samples"] == samples):
            return ev
    except (OSError, ValueError, KeyError):
        pass
    over = [f"run={quote(job)}"] + ([f"num_samples={samples}"] if samples else []) + (["metrics=[nll]"] if slow else []) + nll
    with initialize_config_module("genlab.configs", version_base="1.3"):
        cfg = hydra_compose(config_name="eval", overrides=over)
    return evaluate_run(cfg)


def gallery_tile(job: Path, seconds_samples: int = 1000) -> tuple[object, float | None]:
    """(tile image, seconds per 1,000 samples) of a run, cached in the run folder as zoo_tile.png/zoo_sampling.json."""
    import torch
    from PIL import Image

    from genlab import viz
    from genlab.commands.common import load_run
    from genlab.commands.eval import run_data

    png, meta = job / "samples" / "zoo_tile.png", job / "samples" / "zoo_sampling.json"
    step = job_state(job).get("step")
    try:
        info = json.loads(meta.read_text())
        if info["step"] == step and "recipe" in info:
            return Image.open(png).convert("RGB"), info["seconds_per_1000"]
    except (OSError, ValueError, KeyError):
        pass
    run = load_run(str(job), "last", "auto")
    data, _ = run_data(run)
    model = run.model
    model.steps_bound = sample_steps(run)  # diffusion: the steps its evaluation used, not the chain's T
    dev = next(model.parameters()).device
    n = 2000 if data.kind == "points" else 36
    g = torch.Generator(dev).manual_seed(0)
    labels = (torch.arange(n) % int(data.num_classes)).to(dev) if model.conditional and data.num_classes else None
    fixed = {"n": n, "noise": model.latent(n, generator=g), "labels": labels, "nrow": 6,
             "generator": torch.Generator(dev).manual_seed(0)}
    if fixed["noise"] is not None:
        fixed["noise"] = fixed["noise"].to(dev)
    img = next(iter(model.visuals(fixed, data).values()))
    per_1k = None
    if not model.translates:
        m = 64 if model.slow_sampling else seconds_samples
        t0 = time.perf_counter()
        model.sample(m, generator=torch.Generator(dev).manual_seed(1))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        per_1k = (time.perf_counter() - t0) * 1000 / m
    png.parent.mkdir(parents=True, exist_ok=True)
    viz.save_png(img, png)
    meta.write_text(json.dumps({"step": step, "seconds_per_1000": per_1k, "translates": bool(model.translates),
                                "recipe": run_recipe(run)}) + "\n")
    return Image.open(png).convert("RGB"), per_1k


def scored(job: Path, st: dict, samples: int | None):
    """(eval.json or None for a translator, tile, seconds per 1,000 samples) when a finished job's score and
    tile are already in its folder for its last step; else None. The table is then rebuilt from a folder's
    small files alone (status.json, eval.json, samples/zoo_tile.png, samples/zoo_sampling.json): a zoo
    copied without its checkpoints (e.g. committed, docs/experiments-zoo.md) still tabulates and grows."""
    from PIL import Image

    try:
        info = json.loads((job / "samples" / "zoo_sampling.json").read_text())
        if info["step"] != st.get("step") or "translates" not in info or "recipe" not in info:
            return None
        ev = None
        if not info["translates"]:
            ev = json.loads((job / "eval.json").read_text())
            if ev["step"] != st.get("step") or (samples is not None and ev["num_samples"] != samples):
                return None
        return ev, Image.open(job / "samples" / "zoo_tile.png").convert("RGB"), info["seconds_per_1000"], info["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def collect(cells: list[Cell], samples: int | None, nll: list[str]) -> tuple[dict, dict]:
    """Evaluate every finished job; fill cell.jobs; return ({dataset: eval.json of its first job}, {cell label: tile})."""
    from genlab import progress

    protocol, tiles = {}, {}
    with progress.bar(sum(len(c.seeds) for c in cells), "zoo: evaluating jobs", "job") as bar:
        for c in cells:
            _collect_cell(c, samples, nll, protocol, tiles)
            bar.update(len(c.seeds))
    return protocol, tiles


def note_protocol(protocol: dict, dataset: str, ev: dict) -> None:
    """The dataset's protocol is its first job's eval.json; it also counts the jobs scored by each training
    of the feature network (one recipe trained on two machines gives two networks, and FIDs of both): a
    training is its id (the recipe), test accuracy and weights' digest (absent from older eval.json files,
    which then count with the training of the same accuracy)."""
    first = protocol.setdefault(dataset, {**ev, "net_trainings": {}})
    if ev.get("feature_networks") and not first.get("feature_networks"):
        # A slow sampler's job is scored by bits/dim alone: no feature network, no real-data floor. The first
        # job that samples gives the header its network and the table its floor rows.
        first = protocol[dataset] = {**ev, "net_trainings": first["net_trainings"]}
    seen = first["net_trainings"]
    for n in ev.get("feature_networks", []):
        acc = n.get("test_accuracy")  # points' feature networks have no classes, so no test accuracy
        base = n["id"] + (f" (test accuracy {float(acc):.4f})" if acc is not None else "")
        weights = n.get("weights")
        key = f"{base}, weights {weights}" if weights else next((k for k in seen if k.startswith(base)), base)
        if weights and base in seen:  # an older record of this training: named by its weights from now on
            seen[key] = seen.pop(base)
        seen[key] = seen.get(key, 0) + 1


def _collect_cell(c: Cell, samples: int | None, nll: list[str], protocol: dict, tiles: dict) -> None:
    """Evaluate one cell's finished jobs into c.jobs (and the dataset's protocol, the cell's tile)."""
    from genlab.commands.common import load_run
    from genlab.commands.sweep import first_line

    c.jobs = []
    for s in c.seeds:
        job = c.job_dir(s)
        st = job_state(job)
        rec = {"seed": s, "dir": job, "state": st["state"], "error": st.get("error") or c.error,
               "steps": st.get("step"), "train_s": st.get("train_time"), "values": {}}
        cached = scored(job, st, samples)
        if st["state"] == "done" and cached is not None:  # nothing to recompute: no checkpoint needed
            ev, tile, per_1k, rec["recipe"] = cached
            if ev is not None:
                rec["values"] = dict(ev["values"])
                note_protocol(protocol, c.dataset, ev)
            rec["s_per_1k_samples"] = per_1k
            tiles.setdefault((c.label, c.dataset), tile)
        elif st["state"] == "done":
            try:
                run = load_run(str(job), "last", "cpu")
                model = run.model  # capabilities as the built model declares them
                if not model.translates:  # genlab eval scores sampled images; a translator has none
                    steps = sample_steps(run)
                    ev = evaluate_job(job, samples, bool(model.slow_sampling), nll + ([f"steps={steps}"] if steps else []))
                    rec["values"] = dict(ev["values"])
                    note_protocol(protocol, c.dataset, ev)
                tile, per_1k = gallery_tile(job)
                rec["s_per_1k_samples"] = per_1k
                rec["recipe"] = run_recipe(run)
                tiles.setdefault((c.label, c.dataset), tile)
            except (GenlabError, OSError, RuntimeError, ValueError) as e:
                rec["state"], rec["error"] = "failed", f"evaluation: {first_line(e)}"
        c.jobs.append(rec)


# ---- the table ---------------------------------------------------------------------------------
def metric_columns(cells: list[Cell]) -> list[str]:
    """The COLUMNS some finished run has a value of."""
    found = {key.split("[", 1)[0] for c in cells for j in c.jobs for key in j["values"]}
    return [b for b in COLUMNS if b in found]


def value(values: dict, base: str):
    """The value of metric `base` in a {key: value} dict, keys qualified or not (fid[lenet-mnist] is fid)."""
    for k, v in values.items():
        if k.split("[", 1)[0] == base:
            return v
    return None


def rows(cells: list[Cell], columns: list[str]) -> list[dict]:
    """One aggregated row per cell: mean, std and n of every time and metric column over its finished seeds."""
    from genlab.commands.report import aggregate

    out = []
    for c in cells:
        done = [j for j in c.jobs if j["state"] == "done"]
        states: dict[str, int] = {}
        for j in c.jobs:
            states[j["state"]] = states.get(j["state"], 0) + 1
        # paths inside the zoo folder are said relative to it, so a committed table names no machine's folders
        errors = [str(j["error"]).replace(str(c.folder.parents[2]) + os.sep, "")
                  for j in c.jobs if j["state"] != "done" and j["error"]]
        recipes = sorted({j["recipe"] for j in done if j.get("recipe")})
        row = {"label": c.label, "model": c.model, "dataset": c.dataset, "seeds": len(c.seeds),
               "recipe": ",".join(recipes) or "-",
               "status": "done" if len(done) == len(c.jobs) else ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
               "error": errors[0] if errors else ""}
        for j in done:
            j["steps_per_s"] = j["steps"] / j["train_s"] if j.get("train_s") else None
        for col in TIMES:
            row[col] = aggregate([j.get(col) for j in done])
        for col in columns:
            row[col] = aggregate([value(j["values"], col) for j in done])
        out.append(row)
    return out


def fmt(a, digits: int = 4) -> str:
    if a is None:
        return "-"
    mean, std, n = a
    text = f"{mean:.{digits}g}"
    return text + (f" ± {std:.2g}" if n > 1 else "")


def write_csv(path: Path, table: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        cols = [*TIMES, *columns]
        w.writerow(["model", "dataset", "seeds", "recipe", "status", "error", "target",
                    *[f"{c}_{s}" for c in cols for s in ("mean", "std", "n")]])
        for r in table:
            vals = []
            for c in cols:
                vals += list(r[c]) if r[c] is not None else ["", "", 0]
            w.writerow([r["label"], r["dataset"], r["seeds"], r["recipe"], r["status"], r["error"], r.get("target", ""),
                        *vals])


def machine() -> str:
    """CPU model, cores and threads (and the GPU if one is there)."""
    from genlab import machine_name

    try:
        import torch  # noqa: F401 - so that machine_name can name a GPU
    except ImportError:
        pass
    return machine_name()


def commit() -> str:
    from genlab import source_commit

    return source_commit()


def run_commits(cells: list[Cell]) -> list[str]:
    """The genlab commits the zoo's runs trained at (each run's status.json `commits`), in first-seen order."""
    seen: dict[str, None] = {}
    for c in cells:
        for s in c.seeds:
            for k in job_state(c.job_dir(s)).get("commits") or []:
                seen.setdefault(str(k))
    return list(seen)


def run_machines(cells: list[Cell]) -> str:
    """Which machines trained the zoo's finished jobs, with their counts ('not recorded' for runs from
    before status.json kept it)."""
    counts: dict[str, int] = {}
    for c in cells:
        for s in c.seeds:
            st = job_state(c.job_dir(s))
            if st["state"] == "pending":
                continue
            for m in st.get("machines") or ["not recorded"]:
                counts[m] = counts.get(m, 0) + 1
    return "; ".join(f"{m}: {n} job(s)" for m, n in counts.items()) or "none yet"


def floor_rows(protocol: dict, columns: list[str]) -> list[dict]:
    """The real-data floor of each dataset (held-out real data scored as samples are), and its blurred variant."""
    out = []
    for d, ev in protocol.items():
        for key, name in (("floor", f"real data ({ev.get('heldout_split', 'test')} split)"),
                          ("floor_blurred", "real data blurred (Gaussian, sigma 1 px)")):
            vals = ev.get(key) or {}
            if vals:
                row = {"label": name, "dataset": d, "kind": key}
                for col in columns:
                    v = value(vals, col)
                    row[col] = (v, 0.0, 1) if v is not None else None
                out.append(row)
    return out


TARGET = ("target: FID below the blurred floor's and every class of the real-data floor hit ('met'; otherwise "
          "what is missing)")


def targets(table: list[dict], floors: list[dict]) -> bool:
    """The image target (issue 17: at 10 CPU-minutes every GAN and flow hits every class and beats the
    blurred floor's FID) per row, as r["target"]: "met", what is missing, or "" where the row has no FID or
    its dataset no blurred floor. Returns whether any row has one."""
    floor = {(f["dataset"], f.get("kind")): f for f in floors}
    found = False
    for r in table:
        r["target"] = ""
        blurred = floor.get((r["dataset"], "floor_blurred"), {})
        if r.get("fid") is None or blurred.get("fid") is None:
            continue
        missing = []
        if r["fid"][0] >= blurred["fid"][0]:
            missing.append(f"FID not below the blurred floor's {fmt(blurred['fid'])}")
        classes = floor.get((r["dataset"], "floor"), {}).get("classes_covered")
        if classes is not None and r.get("classes_covered") is not None and r["classes_covered"][0] < classes[0]:
            missing.append(f"{fmt(r['classes_covered'])} of {fmt(classes)} classes")
        r["target"] = "; ".join(missing) or "met"
        found = True
    return found


def markdown(table: list[dict], floors: list[dict], columns: list[str], header: list[str], target: bool = False) -> str:
    extra = ["target"] if target else []
    head = ["model", "dataset", "seeds", "recipe", "steps", "steps/s", "train s", *columns, *extra, "s / 1k samples",
            "status"]
    lines = header + ["", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in floors:
        lines.append("| " + " | ".join([f"*{r['label']}*", r["dataset"], "", "", "", "", "",
                                        *(fmt(r[c]) for c in columns), *("" for _ in extra), "", ""]) + " |")
    for r in table:
        status = r["status"] + (f": {r['error']}" if r["error"] else "")
        lines.append("| " + " | ".join([r["label"], r["dataset"], str(r["seeds"]), r["recipe"], fmt(r["steps"], 6),
                                        fmt(r["steps_per_s"], 3), fmt(r["train_s"], 4),
                                        *(fmt(r[c]) for c in columns), *(r.get(c, "") for c in extra),
                                        fmt(r["s_per_1k_samples"], 3), status.replace("|", "/")]) + " |")
    return "\n".join(lines) + "\n"


def protocol_header(title: str, opts, protocol: dict, passthrough: list[str], started: str,
                    commits: list[str] = (), two_stage: list[str] = (), machines: str = "") -> list[str]:
    from genlab import __version__

    lines = [f"# {title}", "", "Protocol:"]
    lines.append(f"- budget: {opts.budget} of training time per job (trainer.max_time; evaluation not counted), "
                 f"seeds per row: as listed")
    for d, ev in protocol.items():
        nets = ", ".join(f"{n['id']} (test accuracy {n['test_accuracy']:.4f})" if n.get("test_accuracy") is not None
                         else n["id"] for n in ev.get("feature_networks", [])) or "none (the points themselves)"
        lines.append(f"- {d}: {ev['num_samples']} samples per run scored against the {ev['split']} split; "
                     f"feature network {nets}; floor rows: held-out {ev.get('heldout_split')} split scored the same way")
        trainings = ev.get("net_trainings") or {}
        if len(trainings) > 1:
            lines.append(f"- {d}: **rows scored by {len(trainings)} trainings of the feature network** (one recipe, "
                         "different weights: its cache was rebuilt between jobs, e.g. on another machine), "
                         "so their scores are not exactly comparable: "
                         + "; ".join(f"{k}: {v} job(s)" for k, v in trainings.items()))
    lines.append(f"- likelihood models: test bits/dim on {opts.nll_images} test images, latent-variable bounds with "
                 f"k={opts.nll_k} importance samples; slow samplers (PixelCNN) are scored by bits/dim only")
    if two_stage:
        lines.append("- two-stage rows (" + ", ".join(two_stage) + "): the budget again for the second stage, trained "
                     "on the frozen first stage's run of the same seed (its own row); steps and train s are the second stage's")
    trained = ", ".join(commits) if commits else "not recorded (runs before status.json kept commits)"
    lines.append(f"- genlab {__version__}, tabulated at commit {commit()}, runs trained at {trained}; "
                 f"machine: {machine()}; overrides of every job: `{' '.join(passthrough) or '(none)'}`")
    if machines:
        lines.append(f"- runs trained on: {machines}")
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    lines.append(f"- started {started} UTC, written {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, "
                 f"load average at the end {load}")
    return lines


def gallery(tiles: dict, table: list[dict], path: Path) -> int:
    """gallery.png: one labelled tile per row with a finished run; returns the number of tiles."""
    from PIL import Image, ImageDraw, ImageFont

    items = [(f"{r['label']} / {r['dataset']}", tiles[(r["label"], r["dataset"])]) for r in table
             if (r["label"], r["dataset"]) in tiles]
    if not items:
        return 0
    cols = min(6, len(items))
    rows_n = math.ceil(len(items) / cols)
    cell_w, cell_h = TILE + 8, TILE + 22
    img = Image.new("RGB", (cols * cell_w, rows_n * cell_h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, (name, tile) in enumerate(items):
        r, c = divmod(i, cols)
        x, y = c * cell_w + 4, r * cell_h + 18
        img.paste(tile.resize((TILE, TILE), Image.NEAREST), (x, y))
        d.text((x, y - 15), name[:34], fill=(0, 0, 0), font=font)
    img.save(path)
    return len(items)


def curves(cells: list[Cell], columns: list[str], out: Path) -> list[Path]:
    """zoo_<metric>.png: each run's eval history against training time, one colour per model, a panel per dataset."""
    from genlab import plot
    from genlab.metrics.evaluator import better

    written = []
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    for col in columns:
        panels, labels = [], []
        for d in datasets:
            series = {}
            for c in (c for c in cells if c.dataset == d):
                lines = []
                for j in c.jobs:
                    pts = []
                    try:
                        for line in (j["dir"] / "eval_history.jsonl").read_text().splitlines():
                            h = json.loads(line)
                            v = value(h, col)
                            if isinstance(v, (int, float)) and h.get("train_time") is not None:
                                pts.append((float(h["train_time"]), float(v)))
                    except (OSError, ValueError):
                        pass
                    if pts:
                        lines.append(pts)
                if lines:
                    series[c.label] = lines
            if series:
                panels.append(plot.panel(series, f"training time (s), {d}", col))
                labels += [k for k in series if k not in labels]
        if not panels:
            continue
        direction = {"lower": " (lower is better)", "higher": " (higher is better)"}.get(better(col), "")
        # one legend colour per label needs a stable order across panels
        img = plot.figure(panels, labels, f"{col}{direction} against training time; one line per run")
        path = out / f"zoo_{col}.png"
        img.save(path)
        written.append(path)
    return written


# ---- suites: the paper's layout ----------------------------------------------------------------
def suite_table(suite, cells: list[Cell]) -> str:
    """Rows = variants, for each dataset and metric: genlab's mean ± standard error and the paper's value."""
    import statistics

    metrics = dict(suite.metrics)
    scale = dict(suite.get("scale") or {})
    head = ["variant"]
    for d in suite.datasets:
        for m, name in metrics.items():
            head += [f"{d} {name}", "paper"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for label in suite.variants:
        row = [str(label)]
        for d in suite.datasets:
            c = next(c for c in cells if c.label == label and c.dataset == d)
            done = [j for j in c.jobs if j["state"] == "done"]
            for m in metrics:
                vals = [value(j["values"], m) for j in done]
                vals = [float(v) * float(scale.get(m, 1)) for v in vals if v is not None and math.isfinite(v)]
                if vals:
                    se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
                    row.append(f"{statistics.fmean(vals):.3g} ± {se:.2g} (n={len(vals)})")
                else:
                    row.append("-")
                paper = OmegaConf.select(suite, f"paper_values.{d}.{label}.{m}")
                row.append("-" if paper is None else (f"{paper[0]} ± {paper[1]}" if not isinstance(paper, (int, float))
                                                       and len(paper) > 1 and paper[1] is not None else
                                                       str(paper[0] if not isinstance(paper, (int, float)) else paper)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# ---- the command -------------------------------------------------------------------------------
def run(args: list[str]) -> int:
    """`genlab zoo`: check everything, train what is missing, evaluate, write the table; returns the exit status."""
    from genlab.commands.common import check_writable
    from genlab.config import register_configs

    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    opts, passthrough, given = parse_args(args)
    from genlab.cli import check_groups, check_plugins

    check_plugins(passthrough)
    check_groups(passthrough)
    register_configs()
    suite = None
    if opts.suite:
        names = suites()
        if opts.suite not in names:
            raise GenlabError(f"unknown suite '{opts.suite}'; available: {', '.join(names)}")
        suite = load_suite(opts.suite)
        suite.name = opts.suite
    out = Path(os.path.expanduser(str(opts.out)))
    check_writable(out, "zoo.out", folder=True)
    cells = suite_cells(suite, opts, passthrough, out, given) if suite else zoo_cells(opts, passthrough, out, given)
    common = ["trainer.resume=auto", "trainer.progress=false", f"trainer.checkpoint_every_time={opts.checkpoint_every}"]
    if suite is None or suite.get("budget"):
        budget = opts.budget if suite is None or "budget" in given else suite.budget
        common += [f"trainer.max_time={budget}", "trainer.max_steps=1000000000",
                   f"trainer.eval_every_time={opts.eval_every}", "trainer.eval_every=0"]
    out.mkdir(parents=True, exist_ok=True)
    print(f"genlab zoo: {len(cells)} rows x seeds into {out}", flush=True)
    if opts.train:
        train_cells(cells, common, passthrough, bool(opts.retry_failed), suite is not None)
    samples = opts.samples if opts.samples is not None else (suite.get("samples") if suite else None)
    nll = [f"eval.nll_images={opts.nll_images}", f"eval.nll_k={opts.nll_k}"]
    protocol, tiles = collect(cells, samples, nll)
    columns = metric_columns(cells)
    table = rows(cells, columns)
    title = suite.title if suite else f"genlab zoo: every model at zoo.budget={opts.budget}"
    two_stage = sorted({f"{c.label} on {c.first_stage.label}" for c in cells if c.first_stage is not None})
    header = protocol_header(title, opts, protocol, passthrough, started, run_commits(cells), two_stage,
                             run_machines(cells))
    if suite is not None:
        header[3] = f"- {suite.protocol}"
    floors = floor_rows(protocol, columns)
    target = targets(table, floors)
    if target:
        header.append(f"- {TARGET}")
    write_csv(out / "zoo.csv", table, columns)
    md = markdown(table, floors, columns, header, target)
    if suite is not None:
        md += f"\n## {suite.title} (genlab: mean ± standard error over trials; paper beside)\n\n" + suite_table(suite, cells)
        md += f"\nPaper: {suite.paper}\n"
    (out / "zoo.md").write_text(md)
    n_tiles = gallery(tiles, table, out / "gallery.png")
    pngs = curves(cells, columns, out)
    failed = [r for r in table if r["status"] != "done"]
    print(md)
    print(f"genlab zoo: {len(table)} rows, {len(failed)} not done; wrote {out / 'zoo.md'}, {out / 'zoo.csv'}, "
          f"{out / 'gallery.png'} ({n_tiles} tiles) and {len(pngs)} plot(s) {out}/zoo_*.png")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage())
        return
    try:
        code = run(args)
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
