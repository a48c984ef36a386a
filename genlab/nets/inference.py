"""A network's inference copy for long evaluations on CPU: the same function, computed faster.

Measured per decoder pass of the conv VAE (Fashion-MNIST, one thread, docs/performance.md): batch
norm folded into the convolution before it (eval-mode batch norm is a per-channel affine map),
channels-last memory (the layout oneDNN's CPU convolutions prefer), and transposed convolutions with
few output channels as a matrix product and col2im (F.fold), where PyTorch's CPU kernel for a
64 -> 2 channel layer took 1.9x as long.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

FOLD_MAX_CHANNELS = 8  # transposed convolutions with at most this many outputs go through F.fold


class FoldConvTranspose2d(nn.Module):
    """conv_transpose2d as col2im of W^T x: exact (up to float summation order) for groups=1."""

    def __init__(self, conv: nn.ConvTranspose2d):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).t().contiguous(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().view(1, -1, 1, 1),
                                                                requires_grad=False)
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.output_padding = conv.dilation, conv.output_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        size = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in zip(
            (h, w), self.stride, self.padding, self.dilation, self.kernel_size, self.output_padding))
        cols = torch.matmul(self.weight, x.flatten(2))
        out = F.fold(cols, size, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        return out if self.bias is None else out + self.bias


def _foldable(m: nn.Module) -> bool:
    return isinstance(m, nn.ConvTranspose2d) and m.groups == 1 and m.out_channels <= FOLD_MAX_CHANNELS


def _fuse(seq: nn.Sequential) -> None:
    """Fold every eval-mode BatchNorm2d into the (transposed) convolution right before it, in place."""
    names = list(seq._modules)
    for a, b in zip(names, names[1:]):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d) \
                and bn.track_running_stats and bn.running_mean is not None:
            seq._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
            seq._modules[b] = nn.Identity()


def inference_copy(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` for no-grad CPU inference: batch norm folded, channels-last, fold convs."""
    out = copy.deepcopy(net).eval()
    for m in list(out.modules()):
        if isinstance(m, nn.Sequential):
            _fuse(m)
            for name, child in m._modules.items():
                if _foldable(child):
                    m._modules[name] = FoldConvTranspose2d(child)
    for p in out.parameters():
        p.requires_grad_(False)
    return out.to(memory_format=torch.channels_last)
