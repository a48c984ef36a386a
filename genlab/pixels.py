"""The 8-bit <-> [-1, 1] convention every layer shares: level k of 0..255 is the image value k / 127.5 - 1."""

from __future__ import annotations

import torch

#: the width of one of the 256 levels of an 8-bit image in [-1, 1]
PIXEL_BIN = 1.0 / 127.5


def to_levels(x: torch.Tensor, n_bits: int = 8) -> torch.Tensor:
    """Map images in [-1, 1] (8-bit grid) to integer levels 0 .. 2^n_bits - 1 (as floats)."""
    x8 = torch.round((x.clamp(-1, 1) + 1) * 127.5)
    # Fewer bits (Glow's 5-bit CelebA) drop the low bits of the 8-bit value.
    return torch.floor(x8 / 2 ** (8 - n_bits))


def from_levels(k: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """8-bit levels (integers, or levels plus dequantisation noise) to images in [-1, 1]."""
    return k.to(dtype) / 127.5 - 1  # as the data pipeline does, so round trips are exact


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to their 8-bit levels as uint8 (PNG, NPZ, Inception's input)."""
    return to_levels(x).to(torch.uint8)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Images (N, C, H, W) convolved per channel with a Gaussian of `sigma` pixels (kernel to 3 sigma, reflected edges)."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    pad = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(pad, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
