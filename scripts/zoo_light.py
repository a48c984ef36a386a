"""Copy a zoo folder without its checkpoints: what `genlab zoo` needs to tabulate finished jobs again.

    python scripts/zoo_light.py outputs/zoo docs/results/zoo-5m

Copies zoo.md, zoo.csv and the PNGs of SRC, and of every job under SRC/runs/ its status.json,
eval.json, eval_history.jsonl, .hydra/overrides.yaml and samples/zoo_tile.png + zoo_sampling.json
(a few tens of KB a job instead of its checkpoints' megabytes), with the paths in those records made
relative to the zoo folder (and the home folder written ~), so the copy names no machine's folders. Copied back into a zoo.out, the jobs
count as finished: `genlab zoo zoo.out=DST` trains only what is missing and rebuilds the table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

TOP = ("zoo.md", "zoo.csv", "*.png")
PER_JOB = ("status.json", "eval.json", "eval_history.jsonl", ".hydra/overrides.yaml", "samples/zoo_tile.png",
           "samples/zoo_sampling.json")


TEXT = (".json", ".jsonl", ".yaml")


def _copy_file(f: Path, target: Path, src: Path) -> None:
    """Copy one file; in text records, paths inside the zoo folder become relative to it and the home
    folder becomes ~, so the copy names no machine's folders."""
    if f.suffix not in TEXT:
        shutil.copy2(f, target)
        return
    text = f.read_text()
    for folder in {str(src.resolve()), str(src.absolute())}:
        text = text.replace(folder + "/", "").replace(folder, ".")
    target.write_text(text.replace(str(Path.home()) + "/", "~/"))


def copy(src: Path, dst: Path) -> int:
    n = 0
    for pattern in TOP:
        for f in src.glob(pattern):
            dst.mkdir(parents=True, exist_ok=True)
            _copy_file(f, dst / f.name, src)
            n += 1
    for status in sorted(src.glob("runs/**/status.json")):
        job = status.parent
        for rel in PER_JOB:
            f = job / rel
            if f.is_file():
                target = dst / job.relative_to(src) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(f, target, src)
                n += 1
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    a = p.parse_args(argv)
    if not (a.src / "runs").is_dir():
        print(f"zoo_light: {a.src} is not a zoo folder (it has no runs/)", file=sys.stderr)
        return 2
    print(f"zoo_light: copied {copy(a.src, a.dst)} files from {a.src} to {a.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
