"""Normalizing flows trained by exact maximum likelihood: RealNVP, Glow, NICE, MAF, MADE and neural
spline flows, on images and points; on a toy mixture with a known density also by reverse KL.

The architecture is a named builder from genlab/nets/flows (model.kind: realnvp | glow | nice | maf |
made); model.coupling swaps the couplings' rule (spline: Durkan et al. 2019). Images
go through: 8-bit levels -> uniform dequantisation to y in [0, 1)^D -> (optional) logit transform with
its Jacobian -> the flow -> standard normal prior. log_prob is the density of y; the likelihood
template adds the dequantisation bound D * n_bits * log 2, so the loss is bits/dim of the discrete
data and test NLL is logged in nats per image and in bits/dim.

model.objective=reverse_kl (points only) minimises KL(q || p) = E_q[log q(x) - log p(x)] against the
dataset's known mixture density, with x = f^-1(z), z ~ N(0, I) reparameterised: the mode-seeking
direction, beside maximum likelihood's KL(p || q).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from genlab.data.toy import MIXTURES, mixture_log_density
from genlab.metrics.likelihood import dequantization_nats, dequantize, to_levels
from genlab.models.base import Batch, Step, StepContext
from genlab.models.likelihood import LikelihoodModel
from genlab.nets import flows as F

OBJECTIVES = ("mle", "reverse_kl")


@dataclass
class FlowConfig:
    name: str = "realnvp"
    kind: str = "realnvp"  # a flow of genlab.nets.flows.FLOWS: realnvp | glow | nice | maf | made
    n_scales: int = 2
    steps_per_scale: int = 3
    hidden: int = 64
    n_blocks: int = 2
    norm: str = "actnorm"  # realnvp: actnorm | none between couplings (glow always has ActNorm)
    n_layers: int = 8  # couplings of a flow on flattened inputs (nice; realnvp and glow on points)
    n_bits: int = 8
    logit: bool = True
    logit_alpha: float = 0.05
    temperature: float = 1.0
    eval_limit: int = 2000  # test images used by the trainer's periodic evaluation
    coupling: str = "auto"  # the couplings' rule: auto (the builder's own) | tanh | sigmoid | additive | spline
    spline_bins: int = 8  # coupling=spline: bins of each rational-quadratic spline
    tail_bound: float = 3.0  # coupling=spline: the spline acts on [-B, B], the identity outside
    objective: str = "mle"  # mle | reverse_kl (points from a known mixture: grid25, ring8)
    target: Optional[str] = None  # objective=reverse_kl: the known density (the dataset's name)


class Flow(LikelihoodModel):
    """A flow x <-> z with log p(x) = log N(z; 0, I) + log|det dz/dx|."""

    Config = FlowConfig
    key = "flow"
    accepts_temperature = True

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if cfg.kind not in F.FLOWS:
            return f"model.kind must be one of {', '.join(F.FLOWS)}, got {cfg.kind}"
        if not 1 <= cfg.n_bits <= 8:
            return f"model.n_bits must be in 1..8, got {cfg.n_bits}"
        if cfg.norm not in F.NORMS:
            return f"model.norm must be one of {', '.join(F.NORMS)}, got {cfg.norm}"
        if cfg.temperature < 0:
            return f"model.temperature must be >= 0, got {cfg.temperature}"
        if cfg.eval_limit < 1:
            return f"model.eval_limit must be >= 1, got {cfg.eval_limit}"
        if min(cfg.n_layers, cfg.hidden, cfg.steps_per_scale) < 1 or cfg.n_blocks < 0:
            return "model.n_layers, model.hidden and model.steps_per_scale must be >= 1, model.n_blocks >= 0"
        if not 0 < cfg.logit_alpha < 0.5:
            return f"model.logit_alpha must be in (0, 0.5), got {cfg.logit_alpha}"
        rule = None if cfg.coupling == "auto" else cfg.coupling
        p = F.rule_problem(rule, cfg.spline_bins, cfg.tail_bound)
        if p:
            return f"model.coupling={cfg.coupling}: {p} (model.spline_bins, model.tail_bound)"
        if cfg.objective not in OBJECTIVES:
            return f"model.objective must be one of {', '.join(OBJECTIVES)}, got {cfg.objective}"
        if cfg.objective == "reverse_kl" and (spec.kind != "points" or cfg.target not in MIXTURES):
            return (f"model.objective=reverse_kl needs a dataset with a known density ({', '.join(MIXTURES)}), "
                    f"got {cfg.target}")
        if cfg.objective == "reverse_kl" and cfg.kind == "maf" and cfg.norm == "batch":
            return ("model.objective=reverse_kl samples through the inverse, where batch norm uses running averages "
                    "and the forward pass batch statistics; use model.norm=actnorm or none")
        p = F.shape_problem(cfg.kind, tuple(spec.shape), cfg.n_scales)
        return f"model.n_scales: {p}" if p else None

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.flow = F.build_flow(cfg.kind, tuple(spec.shape), n_scales=cfg.n_scales,
                                 steps_per_scale=cfg.steps_per_scale, hidden=cfg.hidden, n_blocks=cfg.n_blocks,
                                 norm=cfg.norm, n_layers=cfg.n_layers,
                                 rule=None if cfg.coupling == "auto" else cfg.coupling, bins=cfg.spline_bins,
                                 tail_bound=cfg.tail_bound)
        # Sampling inverts one dimension at a time where the builder declares it (MAF, MADE): slow on images.
        self.slow_sampling = F.FLOWS[cfg.kind].sequential_inverse and spec.kind == "image"

    def networks(self):
        return {"flow": self.flow}

    # ---- likelihood ---------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log-density per example in nats: of the dequantised y in [0,1)^D for images, of x for points."""
        if self.spec.kind != "image":
            return self.flow.log_prob(x.float())
        y = dequantize(to_levels(x.float(), self.cfg.n_bits), self.cfg.n_bits)
        if self.cfg.logit:
            z0, ld = F.logit_transform(y, self.cfg.logit_alpha)
        else:
            z0, ld = y - 0.5, torch.zeros(len(y), device=y.device)
        return self.flow.log_prob(z0) + ld

    def schedule(self):
        if self.cfg.objective == "reverse_kl":
            return [Step(self.key, self.key, self.reverse_kl_step, needs_data=False)]
        return super().schedule()

    def reverse_kl_step(self, batch: Batch, ctx: StepContext):
        """KL(q || p) by reparameterised samples x = f^-1(z): E[log q(x) - log p(x)] (no data drawn)."""
        ref = next(self.parameters())
        x = self.flow.inverse(torch.randn(len(batch), self.num_dims, device=ref.device, dtype=ref.dtype))
        log_q = self.flow.log_prob(x).float()
        log_p = mixture_log_density(self.cfg.target, x.float())
        kl = (log_q - log_p).mean()
        return kl, {"reverse_kl": kl.detach(), "log_q": log_q.mean().detach()}

    def nll_offset(self) -> float:
        return dequantization_nats(self.num_dims, self.cfg.n_bits) if self.spec.kind == "image" else 0.0

    def protocol(self, data, n):
        if self.spec.kind != "image":
            return {"eval_images": n}
        return {**super().protocol(data, n), "n_bits": self.cfg.n_bits, "dequantization": "uniform"}

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, temperature=None, **kwargs):
        t = self.cfg.temperature if temperature is None else temperature
        if noise is not None:
            z0 = self.flow.inverse(noise.to(next(self.parameters()).device) * t)
        else:
            z0 = self.flow.sample(n, temperature=t, generator=generator)
        if self.spec.kind != "image":
            return z0.float()
        y = F.inverse_logit_transform(z0, self.cfg.logit_alpha) if self.cfg.logit else z0 + 0.5
        return (y * 2 - 1).clamp(-1, 1).float()

    @torch.no_grad()
    def visuals(self, fixed, data):
        from genlab import viz

        out = super().visuals(fixed, data)
        if data.kind == "image" and self.cfg.temperature != 0.7:
            # Lower temperatures trade diversity for cleaner samples (Glow, section 5).
            x = self.sample(fixed["n"], noise=fixed.get("noise"), generator=fixed.get("generator"), temperature=0.7)
            out["samples_t0.7"] = viz.grid(x, nrow=fixed.get("nrow"))
        return out

    def latent_shape(self):
        return (self.num_dims,)
