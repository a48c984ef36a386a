"""Normalizing flows trained by exact maximum likelihood: RealNVP and Glow on images, RealNVP on points.

Images go through the pipeline in genlab/nets/flows.py: 8-bit levels -> uniform dequantisation ->
(optional) logit transform with its Jacobian -> the multi-scale flow -> standard normal prior. The loss
is bits per dimension of the discrete data (the dequantisation bound), so its scale does not depend
on the image size; test NLL is logged in nats per image and in bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genlab.models.base import Batch, Model, Step, StepContext
from genlab.nets import flows as F


@dataclass
class FlowConfig:
    name: str = "realnvp"
    kind: str = "realnvp"  # realnvp | glow (images); points always use a RealNVP vector flow
    n_scales: int = 2
    steps_per_scale: int = 3
    hidden: int = 64
    n_blocks: int = 2
    norm: str = "actnorm"  # realnvp: actnorm | none between couplings (glow always has ActNorm)
    n_layers: int = 8  # couplings of the vector flow (points)
    n_bits: int = 8
    logit: bool = True
    logit_alpha: float = 0.05
    temperature: float = 1.0
    eval_limit: int = 2000  # test images used by the trainer's periodic evaluation


class Flow(Model):
    """A flow x <-> z with log p(x) = log N(z; 0, I) + log|det dz/dx|."""

    Config = FlowConfig
    family = "likelihood"
    accepts_temperature = True

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if cfg.kind not in ("realnvp", "glow"):
            return f"model.kind must be realnvp or glow, got {cfg.kind}"
        if not 1 <= cfg.n_bits <= 8:
            return f"model.n_bits must be in 1..8, got {cfg.n_bits}"
        if cfg.norm not in ("actnorm", "none"):
            return f"model.norm must be actnorm or none, got {cfg.norm}"
        if cfg.temperature < 0:
            return f"model.temperature must be >= 0, got {cfg.temperature}"
        if cfg.eval_limit < 1:
            return f"model.eval_limit must be >= 1, got {cfg.eval_limit}"
        if not 0 < cfg.logit_alpha < 0.5:
            return f"model.logit_alpha must be in (0, 0.5), got {cfg.logit_alpha}"
        if spec.kind == "image":
            p = F.MultiScaleFlow._shape_problem(tuple(spec.shape), cfg.n_scales, cfg.kind)
            return f"model.n_scales: {p}" if p else None
        return None

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.num_dims = math.prod(spec.shape)
        if spec.kind == "image":
            self.flow = F.MultiScaleFlow(tuple(spec.shape), cfg.n_scales, cfg.steps_per_scale, cfg.kind,
                                         cfg.hidden, cfg.n_blocks, norm=cfg.norm if cfg.kind == "realnvp" else "none")
        else:
            self.flow = F.VectorFlow(self.num_dims, cfg.n_layers, cfg.hidden, cfg.n_blocks)

    def networks(self):
        return {"flow": self.flow}

    def schedule(self):
        return [Step("flow", "flow", self.nll_step)]

    # ---- likelihood ---------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log-density per example in nats: of the dequantised y in [0,1)^D for images, of x for points."""
        if self.spec.kind != "image":
            return self.flow.log_prob(x.float())
        y = F.dequantize(F.to_levels(x.float(), self.cfg.n_bits), self.cfg.n_bits)
        if self.cfg.logit:
            z0, ld = F.logit_transform(y, self.cfg.logit_alpha)
        else:
            z0, ld = y - 0.5, torch.zeros(len(y), device=y.device)
        return self.flow.log_prob(z0) + ld

    def bits_per_dim(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Bits/dim of the discrete data from the dequantised log-density (images only)."""
        return F.bits_per_dim(log_prob, self.num_dims, self.cfg.n_bits)

    def nll_step(self, batch: Batch, ctx: StepContext):
        lp = self.log_prob(batch.x)
        nll = -lp.mean()
        if self.spec.kind != "image":
            return nll, {"nll_nats": nll.detach()}
        bpd = self.bits_per_dim(lp).mean()
        return bpd, {"nll_nats": (bpd * self.num_dims * math.log(2)).detach(), "bits_per_dim": bpd.detach()}

    @torch.no_grad()
    def evaluate(self, data):
        total, n = 0.0, 0
        for b in data.batches("test", 500, limit=self.cfg.eval_limit):
            total += float(self.log_prob(b.x).sum())
            n += len(b)
        nll = -total / n
        out = {"test_nll_nats": nll}
        if self.spec.kind == "image":
            # Nats of the n_bits-level data: the dequantised density's bound plus D * n_bits * log 2.
            out["test_nll_nats"] = nll + self.num_dims * self.cfg.n_bits * math.log(2)
            out["test_bits_per_dim"] = out["test_nll_nats"] / (self.num_dims * math.log(2))
            out.update({"binarize": getattr(data, "binarize", None) or "none", "n_bits": self.cfg.n_bits,
                        "dequantization": "uniform", "eval_images": n})
        return out

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

    def latent(self, n, generator=None):
        dev = generator.device if generator is not None else next(self.parameters()).device
        return torch.randn(n, self.num_dims, generator=generator, device=dev)
