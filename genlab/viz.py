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
            background: torch.Tensor | None = None, radius: int = 1) -> torch.Tensor:
    """Generated points (red) over real points (grey) in the square [-extent, extent]^2."""
    img = torch.ones(3, size, size) if background is None else background.clone()
    for pts, color in ((real, (0.55, 0.55, 0.55)), (fake, (0.85, 0.1, 0.1))):
        if pts is None:
            continue
        r, c = _pixels(pts, extent, size)
        for dr in range(-radius + 1, radius):
            for dc in range(-radius + 1, radius):
                rr, cc = (r + dr).clamp(0, size - 1), (c + dc).clamp(0, size - 1)
                for ch in range(3):
                    img[ch, rr, cc] = color[ch]
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
