"""Normalizing flows: layers (couplings, ActNorm, 1x1 conv, squeeze, diagonal scaling), whole flows
(chain, multi-scale), MADE and masked autoregressive layers, and the registry of named builders
(realnvp, glow, nice, maf, made)."""

from genlab.nets.flows.base import (
    ChainFlow,
    FlowLayer,
    MultiScaleFlow,
    inverse_logit_transform,
    logit_transform,
    standard_normal_log_prob,
)
from genlab.nets.flows.autoregressive import MADE, MaskedAutoregressive, made_masks
from genlab.nets.flows.builders import (FLOWS, NORMS, VectorFlow, build_flow, register, rule_problem, shape_problem,
                                       supports)
from genlab.nets.flows.couplings import RULES, Coupling, checkerboard_mask, rational_quadratic_spline
from genlab.nets.flows.layers import ActNorm, BatchNormFlow, DiagonalScaling, InvConv1x1, Reverse, Squeeze

__all__ = [
    "FLOWS", "MADE", "NORMS", "RULES", "ActNorm", "BatchNormFlow", "ChainFlow", "Coupling", "DiagonalScaling",
    "FlowLayer", "InvConv1x1", "MaskedAutoregressive", "MultiScaleFlow", "Reverse", "Squeeze", "VectorFlow",
    "build_flow", "checkerboard_mask", "inverse_logit_transform", "logit_transform", "made_masks",
    "rational_quadratic_spline", "register", "rule_problem", "shape_problem", "standard_normal_log_prob", "supports",
]
