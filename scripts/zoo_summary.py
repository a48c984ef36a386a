"""A compact Markdown table of a zoo's zoo.csv (the README's Results): one row per model, its main columns.

    python scripts/zoo_summary.py docs/results/zoo-5m/zoo.csv [--sort fid]

Rows that did not finish are listed after the others with their status; the numbers are the CSV's own
(means over seeds), printed to 3-4 significant digits.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys

COLUMNS = [("steps", "steps", 6), ("train_s", "train s", 4), ("fid", "FID ↓", 4), ("precision", "precision ↑", 3),
           ("recall", "recall ↑", 3), ("coverage", "coverage ↑", 3), ("classes_covered", "classes ↑", 3),
           ("test_bits_per_dim", "bits/dim ↓", 4), ("test_elbo_bits_per_dim", "ELBO bits/dim ↓", 4),
           ("s_per_1k_samples", "s / 1k samples", 3)]


def fmt(text: str, digits: int) -> str:
    if text in ("", None):
        return ""
    v = float(text)
    return "" if math.isnan(v) else f"{v:.{digits}g}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv")
    p.add_argument("--sort", default="fid", help="a column to order finished rows by (ascending)")
    a = p.parse_args(argv)
    rows = list(csv.DictReader(open(a.csv)))
    cols = [c for c in COLUMNS if any(r.get(f"{c[0]}_mean") for r in rows)]
    done = [r for r in rows if r["status"] == "done"]
    key = f"{a.sort}_mean"
    done.sort(key=lambda r: (r.get(key) in ("", None), float(r[key]) if r.get(key) not in ("", None) else 0.0))
    target = any(r.get("target") for r in rows)  # zoo.md's target: FID below the blurred floor's, every class
    head = ["model", "dataset", "recipe", *[c[1] for c in cols], *(["target"] if target else [])]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in done:
        print("| " + " | ".join([f"`{r['model']}`", r["dataset"], r.get("recipe", ""),
                                 *[fmt(r.get(f"{c[0]}_mean"), c[2]) for c in cols],
                                 *([r.get("target", "")] if target else [])]) + " |")
    rest = [r for r in rows if r["status"] != "done"]
    if rest:
        print()
        print("Not finished: " + ", ".join(f"`{r['model']}` ({r['status']})" for r in rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
