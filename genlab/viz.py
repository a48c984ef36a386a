"""Pictures for TensorBoard and PNG files, drawn with torch alone: image grids, scatter plots, heat-maps.

All functions return float images in [0, 1] with shape (3, H, W).
"""

from __future__ import annotations

import math

import torch


def grid(x: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """A grid of images given in [-1, 1] (N, C, H, W)."""
    x = x.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    nrow = min(nrow or max(1, int(math.ceil(math.sqrt(n)))), max(n, 1))
    rows = int(math.ceil(n / nrow))
    out = torch.ones(3, rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):  # torchvision's make_grid layout, without importing torchvision (seconds)
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        out[:, top:top + h, left:left + w] = x[i]
    return out


def _pixels(points: torch.Tensor, extent: float, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    p = points.detach().float().cpu()
    col = ((p[:, 0] + extent) / (2 * extent) * (size - 1)).round().long()
    row = ((extent - p[:, 1]) / (2 * extent) * (size - 1)).round().long()
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    return row[ok], col[ok]


def scatter(fake: torch.Tensor, real: torch.Tensor | None = None, extent: float = 1.0, size: int = 256,
            background: torch.Tensor | None = None, radius: int = 2) -> torch.Tensor:
    """Generated points (red, (2*radius-1)^2 pixels) over real points (grey) in [-extent, extent]^2.

    1-D points are drawn as histograms over [-extent, extent] instead (see `plot1d`)."""
    if fake.dim() == 2 and fake.shape[1] == 1:
        return plot1d(fake, real, extent=extent, size=size)
    img = torch.ones(3, size, size) if background is None else background.clone()
    for pts, color, rad in ((real, (0.6, 0.6, 0.6), 1), (fake, (0.85, 0.1, 0.1), radius)):
        if pts is None:
            continue
        r, c = _pixels(pts, extent, size)
        for dr in range(-rad + 1, rad):
            for dc in range(-rad + 1, rad):
                rr, cc = (r + dr).clamp(0, size - 1), (c + dc).clamp(0, size - 1)
                for ch in range(3):
                    img[ch, rr, cc] = color[ch]
    return img


def _histogram(x: torch.Tensor, extent: float, bins: int) -> torch.Tensor:
    h = torch.histc(x.detach().float().cpu().reshape(-1), bins=bins, min=-extent, max=extent)
    return h / h.max().clamp_min(1)


def plot1d(fake: torch.Tensor, real: torch.Tensor | None = None, curve: torch.Tensor | None = None,
           extent: float = 1.0, size: int = 256, curve_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Histograms of 1-D real (grey) and generated (red) points over [-extent, extent], with an optional
    curve (black, `size` values over the same x grid, e.g. D(x)) drawn in `curve_range` (default: its own)."""
    h = w = size
    img = torch.ones(3, h, w)
    grey, red = torch.tensor([0.7, 0.7, 0.7]), torch.tensor([0.9, 0.3, 0.3])
    for pts, color, alpha in ((real, grey, 1.0), (fake, red, 0.6)):
        if pts is None:
            continue
        heights = (_histogram(pts, extent, w) * (h * 0.8)).round().long()
        rows = torch.arange(h).view(h, 1)
        mask = rows >= (h - heights).view(1, w)  # bars grow from the bottom
        for ch in range(3):
            img[ch][mask] = img[ch][mask] * (1 - alpha) + color[ch] * alpha
    if curve is not None:
        c = curve.detach().float().cpu().reshape(-1)
        lo, hi = curve_range if curve_range is not None else (float(c.min()), float(c.max()))
        t = ((c - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
        r = ((1 - t) * (h - 1) * 0.9 + h * 0.05).round().long()
        cols = torch.linspace(0, w - 1, len(c)).round().long()
        for i in range(len(c)):  # vertical segments join consecutive values into a line
            a, b = (int(r[i]), int(r[i + 1])) if i + 1 < len(c) else (int(r[i]), int(r[i]))
            lo_r, hi_r = min(a, b), max(a, b)
            for dc in (0, 1):
                img[:, max(lo_r - 1, 0):hi_r + 2, min(int(cols[i]) + dc, w - 1)] = 0.0
    # the x axis at 0
    zero = int(round((0 + extent) / (2 * extent) * (w - 1)))
    if 0 <= zero < w:
        img[:, h - 6:h, zero] = 0.3
    return img


def heatmap(values: torch.Tensor) -> torch.Tensor:
    """A (H, W) field as a blue (low) -> white -> orange (high) image, normalised to its own range."""
    v = values.detach().float().cpu()
    v = (v - v.min()) / (v.max() - v.min()).clamp_min(1e-12)
    low = torch.tensor([0.23, 0.40, 0.75]).view(3, 1, 1)
    mid = torch.tensor([0.97, 0.97, 0.97]).view(3, 1, 1)
    high = torch.tensor([0.90, 0.45, 0.10]).view(3, 1, 1)
    t = v.unsqueeze(0)
    return torch.where(t < 0.5, low + (mid - low) * (t * 2), mid + (high - mid) * (t * 2 - 1))


def plane(extent: float, size: int, device=None) -> torch.Tensor:
    """The (size*size, 2) grid of points covering [-extent, extent]^2, row-major from the top-left."""
    xs = torch.linspace(-extent, extent, size, device=device)
    ys = torch.linspace(extent, -extent, size, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def to_uint8_hwc(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return img.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def save_png(img: torch.Tensor, path) -> None:
    """Write a (3, H, W) image in [0, 1] to a PNG file."""
    from PIL import Image

    Image.fromarray(to_uint8_hwc(img).numpy()).save(path)
