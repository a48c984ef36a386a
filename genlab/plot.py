"""Line charts drawn with PIL (a core dependency), so `genlab report` needs no plotting library."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

# Tableau-10: distinguishable lines for up to ten configurations (then the colours repeat).
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.2g}"


def panel(series: dict[str, list[list[tuple[float, float]]]], xlabel: str, ylabel: str,
          size: tuple[int, int] = (480, 320)) -> Image.Image:
    """One chart: for each label a list of lines (e.g. one per seed), all in that label's colour."""
    w, h = size
    left, right, top, bottom = 62, 12, 14, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pts = [p for lines in series.values() for line in lines for p in line if math.isfinite(p[1])]
    d.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    d.text((left + (w - left - right) // 2 - 3 * len(xlabel), h - 16), xlabel, fill=(0, 0, 0), font=font)
    d.text((4, 2), ylabel, fill=(0, 0, 0), font=font)
    if not pts:
        d.text((left + 10, top + 10), "no data", fill=(0, 0, 0), font=font)
        return img
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def xy(x, y):
        return (left + (x - x0) / (x1 - x0) * (w - left - right), top + (y1 - y) / (y1 - y0) * (h - top - bottom))

    for t in _ticks(x0, x1):
        px = xy(t, y0)[0]
        d.line([px, h - bottom, px, h - bottom + 4], fill=(0, 0, 0))
        d.text((px - 3 * len(_label(t)), h - bottom + 6), _label(t), fill=(0, 0, 0), font=font)
    for t in _ticks(y0, y1):
        py = xy(x0, t)[1]
        d.line([left - 4, py, left, py], fill=(0, 0, 0))
        d.line([left + 1, py, w - right - 1, py], fill=(235, 235, 235))
        d.text((4, py - 5), _label(t), fill=(0, 0, 0), font=font)
    for i, (name, lines) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        for line in lines:
            line = [xy(x, y) for x, y in line if math.isfinite(y)]
            if len(line) > 1:
                d.line(line, fill=colour, width=2)
            for px, py in line:
                d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
    return img


def figure(panels: list[Image.Image], labels: list[str], title: str) -> Image.Image:
    """Panels side by side under a title, with a legend (label colours) below."""
    font = ImageFont.load_default()
    w = sum(p.width for p in panels)
    legend_h = 16 * len(labels) + 8
    img = Image.new("RGB", (w, 22 + max(p.height for p in panels) + legend_h), "white")
    d = ImageDraw.Draw(img)
    d.text((8, 4), title, fill=(0, 0, 0), font=font)
    x = 0
    for p in panels:
        img.paste(p, (x, 22))
        x += p.width
    y = 22 + max(p.height for p in panels) + 4
    for i, label in enumerate(labels):
        colour = COLOURS[i % len(COLOURS)]
        d.rectangle([10, y + 16 * i + 3, 24, y + 16 * i + 11], fill=colour)
        d.text((30, y + 16 * i + 1), label, fill=(0, 0, 0), font=font)
    return img
