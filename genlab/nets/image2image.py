"""CycleGAN's ResNet generator (Zhu et al. 2017, after Johnson et al. 2016) and the PatchGAN discriminator
(Isola et al. 2017), sized for 28-64 px images as well as the papers' 256 px."""

from __future__ import annotations

import torch
from torch import nn

from genlab.nets.dcgan import init_dcgan_weights


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # As in the CycleGAN code: no affine parameters, no running statistics.
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'instance', 'batch' or 'none', got {kind!r}")


def halvings(size: int) -> int:
    """How many times `size` can be halved exactly (28 -> 2, 32 -> 5)."""
    n = 0
    while size % 2 == 0 and size > 1:
        size, n = size // 2, n + 1
    return n


class ResidualBlock(nn.Module):
    """R_k: two 3x3 convs with reflection padding and the same number of filters, plus the identity."""

    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        bias = norm == "none"
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), _norm2d(norm, channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), _norm2d(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN generator: c7s1-b, d2b, d4b, R4b x n_blocks, u2b, ub, c7s1-out with tanh (b = base)."""

    def __init__(self, in_ch: int, out_ch: int, base: int = 64, n_blocks: int = 6, norm: str = "instance",
                 image_size: int | None = None, n_down: int | None = None):
        super().__init__()
        # The paper downsamples twice; a smaller image gets as many halvings as its size allows
        # (28, 32 and 64 px all allow two), so the upsampling path restores the exact size.
        if n_down is None:
            n_down = 2 if image_size is None else min(2, halvings(image_size))
        self.n_down = n_down
        bias = norm == "none"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, base, 7, bias=bias), _norm2d(norm, base), nn.ReLU(True)]
        ch = base
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1, bias=bias), _norm2d(norm, ch * 2), nn.ReLU(True)]
            ch *= 2
        # 6 blocks at 128 px and below, 9 at 256 px in the paper.
        layers += [ResidualBlock(ch, norm) for _ in range(n_blocks)]
        for _ in range(n_down):
            # output_padding=1 makes a stride-2 3x3 transposed conv exactly double the size.
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1, bias=bias),
                       _norm2d(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)  # the CycleGAN paper also initialises from N(0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translated images in [-1, 1], same height and width as x."""
        step = 2 ** self.n_down
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ValueError(f"ResnetGenerator with n_down={self.n_down} needs sizes divisible by {step}, "
                             f"got {tuple(x.shape[-2:])}; pass image_size= to pick n_down")
        return self.net(x)


def patch_output_size(size: int, n_layers: int) -> int:
    """Side of a PatchDiscriminator's logit map: n_layers stride-2 convs halve, two stride-1 convs take 1 each."""
    for _ in range(n_layers):
        size //= 2  # k=4, s=2, p=1 gives floor(size / 2)
    return size - 2


def max_patch_layers(size: int, n_layers: int = 3) -> int:
    """The rule for small images: the largest n <= n_layers whose logit map is still at least 1x1."""
    while n_layers > 1 and patch_output_size(size, n_layers) < 1:
        n_layers -= 1
    if patch_output_size(size, n_layers) < 1:
        raise ValueError(f"images of {size} px are too small for a PatchDiscriminator (need at least 6)")
    return n_layers


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): a map of logits, each judging one patch (70x70 with n_layers=3)."""

    def __init__(self, in_ch: int, base: int = 64, n_layers: int = 3, norm: str = "instance",
                 image_size: int | None = None):
        super().__init__()
        if image_size is not None:
            n_layers = max_patch_layers(image_size, n_layers)
        self.n_layers = n_layers
        bias = norm == "none"
        # C64 without normalisation, then C128, C256 (stride 2), C512 (stride 1), a 1-channel conv.
        layers = [nn.Conv2d(in_ch, base, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(base * prev, base * mult, 4, 2, 1, bias=bias), _norm2d(norm, base * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(base * prev, base * mult, 4, 1, 1, bias=bias), _norm2d(norm, base * mult),
                   nn.LeakyReLU(0.2, True),
                   nn.Conv2d(base * mult, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, h, w), h = patch_output_size(H, n_layers)."""
        return self.net(x)
