"""The flow registry: a name -> a builder that assembles layer objects for images (C, H, W) or
vectors (D,), and says which shapes it cannot handle. A new flow is one builder here (and its YAML).

    realnvp  Dinh et al. 2017: affine couplings (checkerboard, channel), squeeze, multi-scale
    glow     Kingma & Dhariwal 2018: squeeze, [ActNorm, 1x1 conv, affine coupling] x K, multi-scale
    nice     Dinh et al. 2015: additive couplings on the flattened input, then a diagonal scaling
    maf      Papamakarios et al. 2017: [MADE-based autoregressive layer, batch norm, reverse] x n_layers
    made     Germain et al. 2015: one Gaussian MADE on the flattened input (a one-layer MAF)

The coupling builders take `rule` (None = the paper's: tanh, sigmoid, additive) and its options, so
rule='spline' with bins and tail_bound makes RealNVP, Glow or NICE a neural spline flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from genlab.nets.flows.base import ChainFlow, MultiScaleFlow
from genlab.nets.flows.autoregressive import MaskedAutoregressive
from genlab.nets.flows.couplings import RULES, Coupling
from genlab.nets.flows.layers import ActNorm, BatchNormFlow, DiagonalScaling, InvConv1x1, Reverse, Squeeze


@dataclass(frozen=True)
class FlowBuilder:
    """How to build one named flow: build(shape, **options) -> flow; squeezes(n_scales) for images."""

    build: Callable[..., nn.Module]
    squeezes: Callable[[int], int] | None = None  # None: the flow flattens images, any size works
    min_last_pixels: int = 1  # the last scale's H*W must be at least this
    sequential_inverse: bool = False  # the inverse (sampling) takes one pass per dimension: slow on images


FLOWS: dict[str, FlowBuilder] = {}
#: what follows each RealNVP coupling (model.norm)
NORMS: dict[str, Callable[[int], list[nn.Module]]] = {"none": lambda c: [], "actnorm": lambda c: [ActNorm(c)],
                                                     "batch": lambda c: [BatchNormFlow(c)]}


def register(name: str, squeezes=None, min_last_pixels: int = 1, sequential_inverse: bool = False):
    """Decorator: add a builder to FLOWS under `name`."""

    def add(fn):
        FLOWS[name] = FlowBuilder(fn, squeezes, min_last_pixels, sequential_inverse)
        return fn

    return add


def _fits(builder: FlowBuilder, shape, n_scales: int) -> bool:
    _, h, w = shape
    factor = 2 ** builder.squeezes(n_scales)
    return h % factor == 0 and w % factor == 0 and (h // factor) * (w // factor) >= builder.min_last_pixels


def shape_problem(kind: str, shape, n_scales: int = 1) -> str | None:
    """Why flow `kind` cannot take examples of this shape with n_scales scales (None if it can)."""
    if kind not in FLOWS:
        return f"flow kind must be one of {', '.join(FLOWS)}, got {kind!r}"
    builder, shape = FLOWS[kind], tuple(shape)
    if builder.squeezes is None or len(shape) == 1:
        return None
    if len(shape) != 3:
        return f"flow {kind!r} needs an image shape (C, H, W) or a vector shape (D,), got {shape}"
    if n_scales < 1:
        return f"flow {kind!r} needs n_scales >= 1, got {n_scales}"
    if not _fits(builder, shape, n_scales):
        n_squeeze = builder.squeezes(n_scales)
        best = max((n for n in range(1, 16) if _fits(builder, shape, n)), default=0)
        hint = f"use n_scales <= {best}" if best else "pad or resize the images"
        return (f"flow {kind!r} with n_scales={n_scales} squeezes {n_squeeze} times and needs "
                f"H and W divisible by {2**n_squeeze}, got {shape[1]}x{shape[2]}: {hint}")
    return None


def supports(shape, n_scales: int, kind: str = "realnvp") -> bool:
    """Whether examples of this shape can go through n_scales scales of flow `kind`."""
    return shape_problem(kind, shape, n_scales) is None


def build_flow(kind: str, shape, **options) -> nn.Module:
    """The flow registered as `kind`, for examples of `shape`; unknown kinds and shapes raise ValueError."""
    problem = shape_problem(kind, shape, options.get("n_scales", 1))
    if problem:
        raise ValueError(problem)
    return FLOWS[kind].build(tuple(shape), **options)


def rule_problem(rule: str | None, bins: int = 8, tail_bound: float = 3.0) -> str | None:
    """Why a coupling rule and its options cannot work (None if they can)."""
    if rule is not None and rule not in RULES:
        return f"the coupling rule must be one of {', '.join(RULES)}, got {rule!r}"
    if rule == "spline" and bins < 2:
        return f"the spline coupling needs at least 2 bins, got {bins}"
    if rule == "spline" and tail_bound <= 0:
        return f"the spline coupling needs tail_bound > 0, got {tail_bound}"
    return None


def _rule_options(rule: str, bins: int, tail_bound: float) -> dict:
    return {"bins": bins, "tail_bound": tail_bound} if rule == "spline" else {}


class VectorFlow(ChainFlow):
    """RealNVP for vectors (N, D): couplings with alternating masks (affine, or another rule), standard normal prior."""

    def __init__(self, dim: int, n_layers: int = 8, hidden: int = 64, n_blocks: int = 2, rule: str = "tanh",
                 bins: int = 8, tail_bound: float = 3.0):
        options = _rule_options(rule, bins, tail_bound)
        super().__init__((dim,), [Coupling(dim, "alternate", i % 2, hidden, n_blocks, rule, **options)
                                  for i in range(n_layers)])
        self.dim = dim


@register("realnvp", squeezes=lambda n_scales: n_scales - 1, min_last_pixels=2)
def realnvp(shape, n_scales=2, steps_per_scale=3, hidden=64, n_blocks=2, norm="none", n_layers=8, rule=None,
            bins=8, tail_bound=3.0, **_):
    """Per scale: steps_per_scale checkerboard couplings (alternating parity), squeeze, steps_per_scale
    channel couplings, factor out half; the last scale has steps_per_scale + 1 checkerboard couplings
    (4 for the paper's 3) and no squeeze (so its H*W must be >= 2 to condition on anything).
    norm='actnorm' puts an ActNorm after every coupling (the paper's batch norm, as a fixed function
    at test time, so the NLL is exact; norm='batch' is the paper's batch norm). Vectors: n_layers
    alternating-mask couplings."""
    rule = rule or "tanh"
    if len(shape) == 1:
        return VectorFlow(shape[0], n_layers, hidden, n_blocks, rule, bins, tail_bound)
    if norm not in NORMS:
        raise ValueError(f"realnvp norm must be one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    options = _rule_options(rule, bins, tail_bound)

    def coupling(channels, mask, parity):
        return [Coupling(channels, mask, parity, hidden, n_blocks, rule, **options), *NORMS[norm](channels)]

    c = shape[0]
    scales = []
    for k in range(n_scales):
        last = k == n_scales - 1
        layers: list[nn.Module] = []
        for i in range(steps_per_scale + 1 if last else steps_per_scale):
            layers += coupling(c, "checkerboard", i % 2)
        if not last:
            layers.append(Squeeze())
            c *= 4
            for i in range(steps_per_scale):
                layers += coupling(c, "channel", i % 2)
            c //= 2
        scales.append(layers)
    return MultiScaleFlow(shape, scales)


@register("glow", squeezes=lambda n_scales: n_scales)
def glow(shape, n_scales=2, steps_per_scale=8, hidden=64, n_blocks=1, n_layers=8, rule=None, bins=8,
         tail_bound=3.0, **_):
    """Per scale: squeeze, steps_per_scale x [ActNorm, InvConv1x1, Coupling(channel, sigmoid)],
    factor out half the channels (not on the last scale). Vectors: the RealNVP vector flow."""
    if len(shape) == 1:
        return VectorFlow(shape[0], n_layers, hidden, n_blocks, rule or "tanh", bins, tail_bound)
    rule = rule or "sigmoid"
    options = _rule_options(rule, bins, tail_bound)
    c = shape[0]
    scales = []
    for k in range(n_scales):
        c *= 4
        layers: list[nn.Module] = [Squeeze()]
        for _ in range(steps_per_scale):
            layers += [ActNorm(c), InvConv1x1(c), Coupling(c, "channel", 0, hidden, n_blocks, rule, **options)]
        scales.append(layers)
        c //= 2
    return MultiScaleFlow(shape, scales)


@register("nice")
def nice(shape, n_layers=4, hidden=1000, n_blocks=4, rule=None, bins=8, tail_bound=3.0, **_):
    """n_layers additive couplings with alternating masks on the flattened input (the paper: 4 couplings,
    each a ReLU MLP of 5 layers of 1000 units), then one diagonal scaling. Images and vectors alike."""
    dim = math.prod(shape)
    rule = rule or "additive"
    options = _rule_options(rule, bins, tail_bound)
    layers: list[nn.Module] = [Coupling(dim, "alternate", i % 2, hidden, n_blocks, rule, **options)
                               for i in range(n_layers)]
    return ChainFlow(shape, [*layers, DiagonalScaling(dim)])


@register("maf", sequential_inverse=True)
def maf(shape, n_layers=5, hidden=512, n_blocks=1, norm="batch", **_):
    """n_layers MAF layers (each a Gaussian MADE with n_blocks hidden layers of `hidden` units) on the
    flattened input, a normalisation (norm: batch as in the paper, actnorm or none) and a reversal of
    the order after each but the last. Exact log-likelihood in one pass; sampling inverts each layer
    one dimension at a time (D passes per layer), which the builder declares."""
    if norm not in NORMS:
        raise ValueError(f"maf norm must be one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    dim = math.prod(shape)
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [MaskedAutoregressive(dim, hidden, n_blocks), *NORMS[norm](dim)]
        if i < n_layers - 1:
            layers.append(Reverse())
    return ChainFlow(shape, layers)


@register("made", sequential_inverse=True)
def made(shape, hidden=512, n_blocks=1, **_):
    """One Gaussian MADE on the flattened input: p(x) = prod_i N(x_i; mu_i(x_<i), exp(alpha_i(x_<i))^2)."""
    dim = math.prod(shape)
    return ChainFlow(shape, [MaskedAutoregressive(dim, hidden, n_blocks)])
