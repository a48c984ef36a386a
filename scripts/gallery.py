"""The README's gallery: each run's final sample grid side by side, labelled, as one PNG.

    python scripts/gallery.py outputs/gallery-sweep --out docs/images/gallery.png

Takes sweep folders or run folders (as genlab report does); a run's label is its model name and step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genlab.commands.report import find_runs  # noqa: E402
from genlab.commands.report_html import final_grid  # noqa: E402


def label(run: Path, grid: Path) -> str:
    """'<model> · step N' from the run's composed config."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    return f"{cfg.model.name} · step {int(grid.stem.split('_')[-1])}"


def gallery(runs: list[Path], scale: int = 2, pad: int = 12, caption: int = 22) -> Image.Image:
    """The runs' final grids in one row, each scaled by `scale` (nearest neighbour) over its label."""
    tiles = []
    for run in runs:
        grid = final_grid(run)
        if grid is None:
            continue
        img = Image.open(grid).convert("RGB")
        tiles.append((img.resize((img.width * scale, img.height * scale), Image.NEAREST), label(run, grid)))
    if not tiles:
        raise SystemExit("no run has a sample grid (samples/step_*.png)")
    w = sum(t.width for t, _ in tiles) + pad * (len(tiles) + 1)
    h = max(t.height for t, _ in tiles) + caption + 2 * pad
    out = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    x = pad
    for tile, text in tiles:
        out.paste(tile, (x, pad))
        draw.text((x, pad + tile.height + 6), text, fill=(0, 0, 0), font=font)
        x += tile.width + pad
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="sweep folders or run folders")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--scale", type=int, default=2)
    a = p.parse_args()
    img = gallery(find_runs(a.dirs), scale=a.scale)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    img.save(a.out)
    print(f"wrote {a.out} ({img.width}x{img.height})")


if __name__ == "__main__":
    main()
