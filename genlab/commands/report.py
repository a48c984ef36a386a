"""genlab report DIR...: the runs of sweep folder(s) or run folders side by side.

One row per configuration (the overrides that differ between the runs, seed left out), the metrics
of eval.json (or the last eval_history.jsonl entry), steps, training time and status; the seeds of one
configuration aggregated as mean ± std and n; the best value of each metric marked with *. Printed,
and written as report.csv, report.md, runs.csv (one row per run), report_<metric>.png (the metric
against steps and against training time, one colour per configuration, one line per seed) and
report.html (all of it on one self-contained page, with each configuration's samples side by side).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path

from genlab.commands import report_html
from genlab.commands.sweep import read_status
from genlab.metrics.table import better

IGNORED = ("trainer.resume", "trainer.progress", "trainer.num_threads", "dataset.root", "dataset.path")
BOOKKEEPING = ("step", "train_time", "wall_time")
TIMES = ("steps", "train_time", "wall_time")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every genlab error
        print(f"genlab: error: report: {message} (see genlab report --help)", file=sys.stderr)
        sys.exit(2)


def fail(message: str) -> None:
    print(f"genlab: error: {message}", file=sys.stderr)
    sys.exit(2)


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders (those with a .hydra/ folder) at or under the given paths."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            fail(f"report: {p} is not a folder; give sweep folders (outputs/multirun/DATE/TIME) or run folders")
        found = [p] if (p / ".hydra").is_dir() else sorted(h.parent for h in p.rglob(".hydra") if h.is_dir())
        if not found:
            fail(f"report: no run folders under {p} (a run folder has .hydra/ in it); give a sweep or run folder")
        runs += [r for r in found if r not in runs]
    return runs


def _overrides(run: Path) -> dict[str, str]:
    from omegaconf import OmegaConf

    try:
        items = list(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
    except Exception:  # noqa: BLE001 - an unreadable file: the run is reported without its overrides
        items = []
    out = {}
    for o in items:
        key, _, value = str(o).lstrip("+~").partition("=")
        if not key.startswith("hydra") and key not in IGNORED:
            out[key] = value
    return out


def _metrics(run: Path) -> tuple[dict, int | None, dict]:
    """(final metrics, their step, {metric: [(step, train_time, value)]}) of a run."""
    history: list[dict] = []
    try:
        history = [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        pass
    history = [h for h in history if isinstance(h, dict) and isinstance(h.get("step"), int)]  # a foreign line: skipped
    curves: dict[str, list] = {}
    for h in history:
        for k, v in h.items():
            if k not in BOOKKEEPING and _number(v):
                curves.setdefault(k, []).append((h["step"], h.get("train_time"), float(v)))
    try:
        ev = json.loads((run / "eval.json").read_text())
        return {k: float(v) for k, v in ev["values"].items() if _number(v)}, ev.get("step"), curves
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing or not genlab's eval.json
        pass
    if history:
        last = history[-1]
        return {k: float(v) for k, v in last.items() if k not in BOOKKEEPING and _number(v)}, last["step"], curves
    return {}, None, curves


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load(run: Path) -> dict:
    """What the report needs of one run folder."""
    status = read_status(run) or {}
    over = _overrides(run)
    metrics, eval_step, curves = _metrics(run)
    if status.get("state") in ("failed", "interrupted", "running"):
        metrics = {}  # an unfinished run's last evaluation is not its result
    return {"run": run, "overrides": over, "seed": over.pop("seed", None), "metrics": metrics, "curves": curves,
            "steps": status.get("step", eval_step), "train_time": status.get("train_time"),
            "wall_time": status.get("wall_time"),
            "status": status.get("state", "?")}


def configurations(runs: list[dict]) -> tuple[list[str], dict[str, list[dict]], dict[str, str]]:
    """(keys that differ, {configuration label: runs}, overrides common to all runs)."""
    keys = sorted({k for r in runs for k in r["overrides"]})
    differ = [k for k in keys if len({r["overrides"].get(k, "-") for r in runs}) > 1]
    common = {k: runs[0]["overrides"][k] for k in keys if k not in differ and k in runs[0]["overrides"]}
    groups: dict[str, list[dict]] = {}
    for r in runs:
        label = " ".join(f"{k}={r['overrides'].get(k, '-')}" for k in differ) or "(all runs)"
        groups.setdefault(label, []).append(r)
    return differ, groups, common


def aggregate(values: list[float]) -> tuple[float, float, int] | None:
    """mean, sample std (0 for one value) and n of the finite values."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def build(runs: list[dict], metrics: list[str] | None = None) -> tuple[list[str], list[dict], dict]:
    """(metric columns, one aggregated row per configuration, common overrides)."""
    differ, groups, common = configurations(runs)
    names = metrics or sorted({k for r in runs for k in r["metrics"] if better(k) in ("lower", "higher")})
    rows = []
    for label, members in groups.items():
        states: dict[str, int] = {}
        for m in members:
            states[m["status"]] = states.get(m["status"], 0) + 1
        row = {"configuration": label, "n": len(members),
               "status": ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
               "seeds": ",".join(str(m["seed"]) for m in members if m["seed"] is not None)}
        for col in (*names, *TIMES):
            vals = [m["metrics"].get(col) if col in names else m[col] for m in members]
            row[col] = aggregate([float(v) if v is not None else None for v in vals])
        rows.append(row)
    for col in names:  # the best configuration mean of each metric, by the metric's direction
        scored = [r for r in rows if r[col] is not None]
        if scored and better(col) in ("lower", "higher"):
            pick = min if better(col) == "lower" else max
            best = pick(r[col][0] for r in scored)
            for r in scored:
                r.setdefault("best", set())
                if r[col][0] == best:
                    r["best"].add(col)
    return names, rows, common


def cell(row: dict, col: str) -> str:
    a = row[col]
    if a is None:
        return "-"
    mean, std, n = a
    text = _fmt(mean) + (f" ± {std:.2g}" if std < 100 else f" ± {std:.0f}") * (row["n"] > 1)
    if n < row["n"]:
        text += f" (n={n})"
    return text + (" *" if col in row.get("best", ()) else "")


def text_table(names: list[str], rows: list[dict], markdown: bool = False) -> str:
    """The report as an aligned text table, or as a Markdown table."""
    head = ["configuration", "n", *names, "steps", "train s", "status"]
    body = [[r["configuration"], str(r["n"]), *(cell(r, c) for c in names), cell(r, "steps"),
             cell(r, "train_time"), r["status"]] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(path: Path, names: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["configuration", "n", "status",
                    *[f"{c}_{s}" for c in (*names, *TIMES) for s in ("mean", "std", "n")]])
        for r in rows:
            vals = []
            for c in (*names, *TIMES):
                vals += list(r[c]) if r[c] is not None else ["", "", 0]
            w.writerow([r["configuration"], r["n"], r["status"], *vals])


def write_runs_csv(path: Path, runs: list[dict], names: list[str]) -> None:
    keys = sorted({k for r in runs for k in r["overrides"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", *keys, "seed", *names, *TIMES, "status"])
        for r in runs:
            w.writerow([str(r["run"]), *(r["overrides"].get(k, "") for k in keys), r["seed"],
                        *(r["metrics"].get(c, "") for c in names), *(r[c] for c in TIMES), r["status"]])


def plots(out: Path, names: list[str], runs: list[dict]) -> list[Path]:
    """report_<metric>.png: the metric against steps and against training time for each configuration."""
    from genlab import plot

    _, groups, _ = configurations(runs)
    written = []
    for name in names:
        by_step = {label: [[(s, v) for s, _, v in m["curves"].get(name, [])] for m in members]
                   for label, members in groups.items()}
        by_time = {label: [[(t, v) for _, t, v in m["curves"].get(name, []) if t is not None] for m in members]
                   for label, members in groups.items()}
        if not any(line for lines in by_step.values() for line in lines):
            continue
        direction = {"lower": " (lower is better)", "higher": " (higher is better)"}.get(better(name), "")
        img = plot.figure([plot.panel(by_step, "step", name), plot.panel(by_time, "training time (s)", name)],
                          list(groups), f"{name}{direction}; one line per run")
        path = out / f"report_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_')}.png"
        img.save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    p = Parser(prog="genlab report", description="Compare the runs of sweep folders or run folders: one row "
               "per configuration, seeds aggregated as mean ± std, the best value of each metric marked *.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep folders (outputs/multirun/DATE/TIME) or run folders")
    p.add_argument("--out", help="folder for report.csv, report.md, runs.csv and the PNG plots (default: the first DIR)")
    p.add_argument("--metrics", help="comma-separated metric columns (default: every metric with a direction)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    runs = [load(r) for r in find_runs(a.dirs)]
    wanted = [m.strip() for m in a.metrics.split(",") if m.strip()] if a.metrics else None
    known = sorted({k for r in runs for k in r["metrics"]})
    for m in wanted or []:
        if m not in known:
            fail(f"report: no run has metric {m}; available: {', '.join(known) or 'none (no evaluations yet)'}")
    names, rows, common = build(runs, wanted)
    out = Path(a.out or a.dirs[0])
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "report.csv", names, rows)
        write_runs_csv(out / "runs.csv", runs, names)
        shared = " ".join(f"{k}={v}" for k, v in common.items())
        md = (f"Runs: {len(runs)}" + (f"; common: `{shared}`" if shared else "") + "\n\n"
              + text_table(names, rows, markdown=True) + "\n")
        (out / "report.md").write_text(md)
        pngs = [] if a.no_plots else plots(out, names, runs)
        (out / "report.html").write_text(report_html.render(names, rows, configurations(runs)[1], common, pngs, cell))
    except OSError as e:
        fail(f"report: cannot write to {out} ({e.strerror}); choose another folder with --out")
    print(f"{len(runs)} runs" + (f"; common: {shared}" if shared else ""))
    print(text_table(names, rows))
    print("* best of the column (by the metric's direction); mean ± std over seeds")
    print(f"wrote {out / 'report.csv'}, {out / 'report.md'}, {out / 'runs.csv'}"
          + (f", {len(pngs)} plot(s) {out}/report_*.png" if pngs else "") + f" and {out / 'report.html'}")
