"""Multi-layer perceptrons for vector data (the toy mixtures) and small latent spaces."""

from __future__ import annotations

import math

from torch import nn


class Maxout(nn.Module):
    """The maximum over `pieces` groups of features (Goodfellow et al. 2013): (N, pieces * k) -> (N, k)."""

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, x):
        return x.view(x.shape[0], -1, self.pieces).amax(-1)


def mlp(in_dim: int, out_dim: int, hidden: int, depth: int, act: str = "relu", norm: str = "none",
        spectral_norm: bool = False, pieces: int = 1, widths=None) -> nn.Sequential:
    """`depth` hidden layers of width `hidden` (or one layer per entry of `widths`, e.g. the one-file
    GAN scripts' 128-256-512-1024 generator) with activation `act` (maxout of `pieces` linear maps when
    pieces > 1, as LinearMaxout in the PacGAN/ALI code), then a linear output."""
    layers: list[nn.Module] = []
    d = in_dim
    for hidden in (list(widths) if widths else [hidden] * depth):
        lin = nn.Linear(d, hidden * pieces)
        layers.append(nn.utils.parametrizations.spectral_norm(lin) if spectral_norm else lin)
        if norm == "batch":
            layers.append(nn.BatchNorm1d(hidden * pieces))
        elif norm == "layer":
            layers.append(nn.LayerNorm(hidden * pieces))
        layers.append(Maxout(pieces) if pieces > 1 else nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2))
        d = hidden
    out = nn.Linear(d, out_dim)
    layers.append(nn.utils.parametrizations.spectral_norm(out) if spectral_norm else out)
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z -> point: an MLP with ReLU hidden layers and a linear output."""

    settings = ("hidden", "depth", "widths", "norm")  # the network options (model.generator.*) it takes

    def __init__(self, z_dim: int, shape: tuple, hidden: int = 256, depth: int = 3, norm: str = "none",
                 out_activation: str = "none", widths=None):
        super().__init__()
        self.shape = tuple(shape)
        self.net = mlp(z_dim, math.prod(shape), hidden, depth, "relu", norm, widths=widths)
        self.out_activation = out_activation

    def forward(self, z):
        x = self.net(z)
        if self.out_activation == "tanh":
            x = x.tanh()
        return x.view(len(z), *self.shape)


class MLPDiscriminator(nn.Module):
    """point -> score: an MLP with LeakyReLU(0.2) (or maxout) hidden layers; `features` is the last hidden layer."""

    settings = ("hidden", "depth", "widths", "norm", "spectral_norm", "pieces")

    def __init__(self, shape: tuple, hidden: int = 256, depth: int = 3, norm: str = "none",
                 spectral_norm: bool = False, out_dim: int = 1, pieces: int = 1, widths=None):
        super().__init__()
        net = mlp(math.prod(shape), out_dim, hidden, depth, "lrelu", norm, spectral_norm, pieces, widths)
        self.body, self.head = net[:-1], net[-1]
        self.feature_dim = list(widths)[-1] if widths else hidden
        self.out_dim = out_dim

    def features(self, x):
        return self.body(x.flatten(1))

    def forward(self, x):
        out = self.head(self.features(x))
        return out.squeeze(1) if self.out_dim == 1 else out
