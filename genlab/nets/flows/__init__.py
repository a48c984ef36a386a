"""Normalizing flows: layers (couplings, ActNorm, 1x1 conv, squeeze, diagonal scaling), whole flows
(chain, multi-scale) and the registry of named builders (realnvp, glow, nice)."""

from genlab.nets.flows.base import (
    ChainFlow,
    FlowLayer,
    MultiScaleFlow,
    inverse_logit_transform,
    logit_transform,
    standard_normal_log_prob,
)
from genlab.nets.flows.builders import FLOWS, NORMS, VectorFlow, build_flow, register, shape_problem, supports
from genlab.nets.flows.couplings import AffineCoupling, checkerboard_mask
from genlab.nets.flows.layers import ActNorm, DiagonalScaling, InvConv1x1, Squeeze

__all__ = [
    "FLOWS", "NORMS", "ActNorm", "AffineCoupling", "ChainFlow", "DiagonalScaling", "FlowLayer", "InvConv1x1", "MultiScaleFlow",
    "Squeeze", "VectorFlow", "build_flow", "checkerboard_mask", "inverse_logit_transform", "logit_transform",
    "register", "shape_problem", "standard_normal_log_prob", "supports",
]
