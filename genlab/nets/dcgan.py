"""DCGAN generator and discriminator (Radford, Metz & Chintala 2016) for 28, 32 and 64 px images."""

from __future__ import annotations

import torch
from torch import nn

from genlab.nets.spectral import apply_spectral_norm


def start_size(size: int) -> tuple[int, int]:
    """(s0, n) with size = s0 * 2**n: halve while the size is even and at least 8 (28 -> 7, 32/64 -> 4)."""
    s0, n = size, 0
    while s0 % 2 == 0 and s0 >= 8:
        s0, n = s0 // 2, n + 1
    if n == 0:
        raise ValueError(f"DCGAN needs an image size of the form s0 * 2**n with n >= 1 and s0 >= 4, got {size}")
    return s0, n


def _square_size(shape) -> int:
    _, h, w = shape
    if h != w:
        raise ValueError(f"DCGAN nets need square images, got {h}x{w}")
    return h


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: conv/linear weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            # Scales around 1 rather than 0, or every normalised layer would start switched off.
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # Layer norm over (C, H, W): WGAN-GP's replacement for batch norm in a critic, since the
        # penalty is per sample and batch norm couples the samples.
        return nn.GroupNorm(1, channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer', 'instance' or 'none', got {kind!r}")


class DCGANGenerator(nn.Module):
    """DCGAN generator: project z to s0 x s0, then fractionally-strided convs with BN + ReLU, tanh out."""

    settings = ("base_channels", "norm", "spectral_norm")  # the network options (model.generator.*) it takes

    def __init__(self, z_dim: int, shape: tuple[int, int, int], base_channels: int = 64, in_dim: int | None = None,
                 norm: str = "batch", spectral_norm: bool = False, out_activation: str = "tanh"):
        super().__init__()
        if out_activation not in ("tanh", "none"):
            raise ValueError(f"out_activation must be 'tanh' or 'none', got {out_activation!r}")
        channels = shape[0]
        s0, n_up = start_size(_square_size(shape))
        self.z_dim = z_dim
        # in_dim lets a caller feed z concatenated with a code (cGAN one-hot, InfoGAN c).
        self.in_dim = in_dim or z_dim
        bias = norm == "none"
        ch = base_channels * 2 ** (n_up - 1)
        layers = [
            # A full s0 x s0 kernel on a 1x1 input is the paper's "project and reshape".
            nn.ConvTranspose2d(self.in_dim, ch, s0, 1, 0, bias=bias),
            _norm2d(norm, ch),
            nn.ReLU(True),
        ]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=bias), _norm2d(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        # No batch norm on the output layer: it would pin the sample statistics (the paper's rule).
        layers.append(nn.ConvTranspose2d(ch, channels, 4, 2, 1))
        # tanh for images in [-1, 1]; 'none' for a VAE decoder, whose outputs are means or logits.
        if out_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W), in [-1, 1] with tanh, from z of shape (N, in_dim) or (N, in_dim, 1, 1)."""
        return self.net(z.reshape(z.shape[0], self.in_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: strided convs with LeakyReLU(0.2), no pooling, a linear head on the features."""

    settings = ("base_channels", "norm", "spectral_norm")

    def __init__(self, shape: tuple[int, int, int], base_channels: int = 64, norm: str = "batch",
                 spectral_norm: bool = False, out_dim: int = 1, return_features: bool = False):
        super().__init__()
        channels = shape[0]
        s0, n_down = start_size(_square_size(shape))
        # No normalisation on the input layer (the paper's rule), so D sees the raw pixel statistics.
        layers = [nn.Conv2d(channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = base_channels
        for _ in range(n_down - 1):
            # A bias before a normalisation layer is cancelled by it.
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm == "none"), _norm2d(norm, ch * 2),
                       nn.LeakyReLU(0.2, True)]
            ch *= 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = ch * s0 * s0
        self.out_dim = out_dim
        self.return_features = return_features
        self.head = nn.Linear(self.feature_dim, out_dim)
        init_dcgan_weights(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features (N, feature_dim), for auxiliary heads (AC-GAN, InfoGAN Q, projection)."""
        return self.body(x)

    def forward(self, x: torch.Tensor):
        """Logits (N,) when out_dim == 1, else (N, out_dim); with return_features, (logits, features)."""
        h = self.features(x)
        out = self.head(h)
        # (N,) rather than (N, 1): a projection term (N,) added to (N, 1) would broadcast to (N, N).
        if self.out_dim == 1:
            out = out.squeeze(1)
        return (out, h) if self.return_features else out
