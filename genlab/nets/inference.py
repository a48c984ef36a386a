"""A network's inference copy for long evaluations on CPU: the same function, computed faster.

Measured per decoder pass of the conv VAE (Fashion-MNIST, one thread, docs/performance.md): batch
norm folded into the convolution before it (eval-mode batch norm is a per-channel affine map),
channels-last memory (the layout oneDNN's CPU convolutions prefer), and transposed convolutions with
few output channels as a matrix product and col2im (F.fold), where PyTorch's CPU kernel for a
64 -> 2 channel layer took 1.9x as long, and the DCGAN upsampling (kernel 4, stride 2, padding 1)
with more output channels as one ordinary 2x2 convolution to the four output phases followed by
their interleaving (the sub-pixel form: the same multiply-adds, on oneDNN's direct convolution
instead of its transposed-convolution kernel).
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
        n, _, h, w = x.shape
        size = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in zip(
            (h, w), self.stride, self.padding, self.dilation, self.kernel_size, self.output_padding))
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # (N, HW, in) is channels-last memory as it lies: x W^T without the copy flatten(2) would make
            cols = torch.matmul(x.permute(0, 2, 3, 1).reshape(n, h * w, -1), self.weight.t()).transpose(1, 2)
        else:
            cols = torch.matmul(self.weight, x.flatten(2))
        out = F.fold(cols, size, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        return out if self.bias is None else out + self.bias


class SubpixelConvTranspose2d(nn.Module):
    """ConvTranspose2d(kernel 4, stride 2, padding 1) as a 2x2 convolution to 4 phases, then interleaved.

    With output row n = 2q + a, the transposed convolution reads input rows q-1 and q with kernel rows
    3 and 1 for a = 0, and rows q and q+1 with kernel rows 2 and 0 for a = 1 (columns alike). One
    Conv2d(kernel 2, padding 1) over the input gives every phase's window at once, (H+1) x (W+1) of
    them; phase (a, b) keeps the windows starting at (a, b). Exact up to float summation order.
    """

    TAPS = ((3, 1), (2, 0))  # kernel indices read by output phase 0 and 1, for the two window taps

    def __init__(self, conv: nn.ConvTranspose2d):
        super().__init__()
        w = conv.weight.detach()  # (in, out, 4, 4)
        cin, cout = w.shape[:2]
        phases = []
        for a in (0, 1):
            for b in (0, 1):
                rows = w[:, :, list(self.TAPS[a])][:, :, :, list(self.TAPS[b])]  # (in, out, 2, 2)
                phases.append(rows.transpose(0, 1))  # (out, in, 2, 2): a convolution's layout
        self.weight = nn.Parameter(torch.cat(phases, 0).contiguous(), requires_grad=False)  # (4*out, in, 2, 2)
        # the bias of every phase, added by the convolution itself rather than by a pass over the output
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().repeat(4), requires_grad=False)
        self.out_channels = cout

    @staticmethod
    def applies(m: nn.Module) -> bool:
        return (isinstance(m, nn.ConvTranspose2d) and m.groups == 1 and m.kernel_size == (4, 4)
                and m.stride == (2, 2) and m.padding == (1, 1) and m.dilation == (1, 1)
                and m.output_padding == (0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        c = self.out_channels
        # (n, h+1, w+1, 4c): the convolution's output as channels-last memory lies (a view then), and the
        # phases are interleaved in that layout too, so neither side of the copy is strided across it
        y = F.conv2d(x, self.weight, self.bias, padding=1).permute(0, 2, 3, 1)
        out = y.new_empty(n, h, 2, w, 2, c)
        for i, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            out[:, :, a, :, b] = y[:, a:a + h, b:b + w, i * c:(i + 1) * c]
        return out.view(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)  # (n, c, 2h, 2w), channels-last


class ProjectConvTranspose2d(nn.Module):
    """DCGAN's "project and reshape" layer, a ConvTranspose2d(kernel k, stride 1, padding 0) read on a 1x1
    input: there it is one matrix product z W, (N, in) x (in, out*k*k). PyTorch's CPU transposed-convolution
    kernel took 2.8 ms for the conv VAE's 16 -> 128x7x7 layer at batch 64, for 6.4M multiply-adds."""

    def __init__(self, conv: nn.ConvTranspose2d):
        super().__init__()
        self.conv = conv
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).contiguous(), requires_grad=False)  # (in, out*k*k)
        self.shape = (conv.out_channels, *conv.kernel_size)

    @staticmethod
    def applies(m: nn.Module) -> bool:
        return (isinstance(m, nn.ConvTranspose2d) and m.groups == 1 and m.stride == (1, 1)
                and m.padding == (0, 0) and m.dilation == (1, 1) and m.output_padding == (0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            return self.conv(x)
        out = torch.matmul(x.flatten(1), self.weight).view(x.shape[0], *self.shape)
        return out if self.conv.bias is None else out + self.conv.bias.view(1, -1, 1, 1)


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
                elif SubpixelConvTranspose2d.applies(child):
                    m._modules[name] = SubpixelConvTranspose2d(child)
                elif ProjectConvTranspose2d.applies(child):
                    m._modules[name] = ProjectConvTranspose2d(child)
    for p in out.parameters():
        p.requires_grad_(False)
    return out.to(memory_format=torch.channels_last)
