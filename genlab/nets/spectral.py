"""Spectral normalisation (Miyato et al. 2018) for every weight layer of a network."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

# ConvTranspose layers are subclasses of _ConvNd, so this covers them too.
_WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Wrap every Conv/ConvTranspose/Linear weight of `module` in spectral_norm (SNGAN); returns it."""
    for layer in list(module.modules()):
        if isinstance(layer, _WEIGHT_LAYERS) and not parametrize.is_parametrized(layer, "weight"):
            # torch picks dim=1 (the output channels) for ConvTranspose, as SNGAN's W_SN needs.
            spectral_norm(layer, n_power_iterations=n_power_iterations)
    return module


def _weight_matrix(layer: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    # The matrix whose norm spectral_norm controls: output channels first, everything else flattened.
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        weight = weight.transpose(0, 1)
    return weight.reshape(weight.shape[0], -1)


@torch.no_grad()
def largest_singular_value(layer: nn.Module) -> float:
    """sigma(W) of the layer's effective (possibly spectrally normalised) weight, by an exact SVD."""
    # Reading a parametrised weight in train mode runs a power iteration and updates u; reading it
    # for logging must not change training, so the parametrizations are put in eval mode meanwhile.
    modes = []
    if parametrize.is_parametrized(layer, "weight"):
        modes = [(p, p.training) for p in layer.parametrizations.weight]
        for p, _ in modes:
            p.eval()
    try:
        weight = layer.weight.detach()
    finally:
        for p, mode in modes:
            p.train(mode)
    return torch.linalg.matrix_norm(_weight_matrix(layer, weight).double(), ord=2).item()
