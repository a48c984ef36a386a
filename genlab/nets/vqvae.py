"""The VQ-VAE's convolutional encoder and decoder (van den Oord et al. 2017): two stride-2 convolutions
down to an (H/4, W/4) map of code vectors, residual blocks, and the mirror image up. No batch norm, so
the frozen encoder that feeds a second-stage prior behaves the same in training and evaluation."""

from __future__ import annotations

from torch import nn


class _Residual(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the paper's residual block."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, channels, 1))

    def forward(self, x):
        return x + self.conv(x)


class VQEncoder(nn.Module):
    """Images (N, C, H, W) -> code vectors (N, code_dim, H/4, W/4)."""

    def __init__(self, in_channels: int, hidden: int = 64, code_dim: int = 32, n_res_blocks: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            *[_Residual(hidden, hidden // 2) for _ in range(n_res_blocks)], nn.ReLU(),
            nn.Conv2d(hidden, code_dim, 1),
        )

    def forward(self, x):
        return self.net(x)


class VQDecoder(nn.Module):
    """Code vectors (N, code_dim, h, w) -> per-pixel outputs (N, out_channels, 4h, 4w)."""

    def __init__(self, out_channels: int, hidden: int = 64, code_dim: int = 32, n_res_blocks: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(code_dim, hidden, 3, padding=1),
            *[_Residual(hidden, hidden // 2) for _ in range(n_res_blocks)], nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(hidden // 2, out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z):
        return self.net(z)


def code_map_size(h: int, w: int) -> tuple[int, int]:
    """The (h, w) of the code map of an H x W image."""
    return h // 4, w // 4


__all__ = ["VQDecoder", "VQEncoder", "code_map_size"]
