"""Denoiser networks for diffusion and flow matching: eps/x0/v/velocity = net(x_t, t[, y]).

The U-Net follows Ho et al. (2020)'s PixelCNN++-style backbone at CPU size: residual blocks with
group norm, SiLU and the time embedding added between the two convolutions, self-attention at the
lowest resolution, strided-conv down- and nearest-upsampling with skip connections. t is a float in
[0, 1] (diffusion passes t / T); y, when the net is class-conditional, is a class index where the
extra index num_classes is the null label that classifier-free guidance trains and samples with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features (Vaswani et al. 2017) of scale * t, (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = scale * t.float().reshape(-1, 1) * freqs.view(1, -1)
    emb = torch.cat([args.cos(), args.sin()], 1)
    return F.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """t (and a class index) -> one conditioning vector: sinusoids, a 2-layer MLP, plus a class embedding."""

    def __init__(self, dim: int, out: int, num_classes: int | None = None):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))
        # index num_classes is the null label of classifier-free guidance
        self.classes = nn.Embedding(num_classes + 1, out) if num_classes else None
        self.num_classes = num_classes

    def forward(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.mlp(timestep_embedding(t, self.dim).to(self.mlp[0].weight.dtype))
        if self.classes is not None:
            if y is None:
                y = torch.full((len(t),), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.classes(y)
        return emb


def _groups(channels: int, groups: int) -> int:
    return math.gcd(channels, groups)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + the embedding's projection, GN-SiLU-dropout-conv, plus a (1x1) skip."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2 = nn.GroupNorm(_groups(cout, groups), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (Ho et al.'s zero init)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class UNet(nn.Module):
    """(x_t, t[, y]) -> a tensor of x's shape; levels halve the resolution, attention at the lowest."""

    settings = ("base_channels", "channel_mult", "num_res_blocks", "attention", "dropout", "groups")

    def __init__(self, shape: tuple, base_channels: int = 32, channel_mult: tuple = (1, 2, 2),
                 num_res_blocks: int = 1, attention: bool = True, dropout: float = 0.0, groups: int = 8,
                 num_classes: int | None = None, **_):
        super().__init__()
        c_in, size, _ = shape
        mult = list(channel_mult)
        if size % 2 ** (len(mult) - 1):
            raise ValueError(f"image size {size} cannot be halved {len(mult) - 1} times")
        emb = 4 * base_channels
        self.embed = TimeEmbedding(base_channels, emb, num_classes)
        self.inp = nn.Conv2d(c_in, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        chans, ch = [base_channels], base_channels
        for i, m in enumerate(mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, base_channels * m, emb, groups, dropout))
                ch = base_channels * m
                chans.append(ch)
            if i < len(mult) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                chans.append(ch)
        self.mid1 = ResBlock(ch, ch, emb, groups, dropout)
        self.attn = Attention(ch, groups) if attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb, groups, dropout)
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + chans.pop(), base_channels * m, emb, groups, dropout))
                ch = base_channels * m
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out = nn.Sequential(nn.GroupNorm(_groups(ch, groups), ch), nn.SiLU(), nn.Conv2d(ch, c_in, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, t, y=None):
        emb = self.embed(t, y)
        h = self.inp(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], 1), emb)
            else:
                h = layer(h)
        return self.out(h)


class MLPDenoiser(nn.Module):
    """(x_t, t[, y]) -> a vector of x's size for the toy mixtures: SiLU layers fed the time embedding."""

    settings = ("hidden", "depth")

    def __init__(self, shape: tuple, hidden: int = 128, depth: int = 3, num_classes: int | None = None, **_):
        super().__init__()
        d = math.prod(shape)
        self.shape = tuple(shape)
        self.embed = TimeEmbedding(32, hidden, num_classes)
        self.inp = nn.Linear(d, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, d)

    def forward(self, x, t, y=None):
        emb = self.embed(t, y)
        h = self.inp(x.flatten(1))
        for layer in self.layers:
            h = h + layer(F.silu(h + emb))  # the time (and class) conditions every layer
        return self.out(F.silu(h)).view(len(x), *self.shape)
