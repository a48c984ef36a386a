"""Regularisers on the discriminator/critic: the WGAN-GP gradient penalty, DRAGAN's penalty around the
data, WGAN-div's Wasserstein-divergence term, R1, LeCam's anchored outputs and weight clipping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from genlab.types import StepContext, plus


def interpolates(real: torch.Tensor, fake: torch.Tensor, group: int = 1) -> torch.Tensor:
    """Points on straight lines between real and fake samples, one uniform alpha per sample (per pack of
    `group` samples when D judges packs: the line runs between a real and a fake pack)."""
    alpha = torch.rand(real.shape[0] // group, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    if group > 1:
        alpha = alpha.repeat_interleave(group, 0)
    return alpha * real + (1 - alpha) * fake


def input_gradients(critic, x: torch.Tensor, ctx: StepContext | None = None, group: int = 1) -> torch.Tensor:
    """grad_x critic(x) per sample, flattened (N, D), differentiable, safe under fp16 loss scaling; per
    pack (N / group, group D) when the critic scores packs of `group` samples (PacGAN).

    Follows PyTorch's AMP recipe: the output handed to autograd.grad is scaled so small fp16
    gradients do not underflow, and the resulting input gradient is unscaled before the norm.
    """
    x = x.detach().requires_grad_(True)
    out = critic(x)
    if out.dtype != torch.float32:
        out = out.float()
    scaled = ctx is not None and ctx.scaled  # fp32 and bf16: no scaling, and no identity ops in the double backward
    (grad,) = torch.autograd.grad(ctx.scale(out.sum()) if scaled else out.sum(), x, create_graph=True)
    grad = (grad if grad.dtype == torch.float32 else grad.float()).reshape(x.shape[0] // group, -1)
    return grad * ctx.inv_scale() if scaled else grad


def perturbed(real: torch.Tensor, scale: float, group: int = 1) -> torch.Tensor:
    """DRAGAN's points near the data: x + alpha * scale * std(x) * u, u ~ U[0, 1), one alpha ~ U[0, 1) per
    sample (per pack of `group` samples); as in Kodali et al.'s code, a point on the segment from x to a noisy copy."""
    noisy = real + scale * real.std() * torch.rand_like(real)
    return interpolates(noisy, real, group)


def gradient_penalty(critic, x: torch.Tensor, ctx: StepContext | None = None, center: float = 1.0,
                     group: int = 1) -> torch.Tensor:
    """E[(||grad_x critic(x)|| - center)^2] (Gulrajani et al. 2017) at the points (or packs) x."""
    return ((input_gradients(critic, x, ctx, group).norm(2, dim=1) - center) ** 2).mean()


def divergence_penalty(critic, x: torch.Tensor, ctx: StepContext | None = None, power: float = 6.0,
                       group: int = 1) -> torch.Tensor:
    """E||grad_x critic(x)||^p at the points (or packs) x (WGAN-div, Wu et al. 2018); the caller weighs it by k."""
    # ||g||^p as (||g||^2)^(p/2): no square root, so the gradient is defined at 0 too.
    return input_gradients(critic, x, ctx, group).pow(2).sum(1).pow(power / 2).mean()


def r1_penalty(critic, real: torch.Tensor, ctx: StepContext | None = None, group: int = 1) -> torch.Tensor:
    """E||grad_x critic(x)||^2 on real data (R1, Mescheder et al. 2018); the caller weighs it by gamma / 2."""
    # The squared norm as a sum of squares: no square root, so the gradient is defined at 0 too.
    return input_gradients(critic, real, ctx, group).pow(2).sum(1).mean()


@torch.no_grad()
def clip_weights(module: torch.nn.Module, bound: float) -> None:
    """Clamp every parameter to [-bound, bound] (WGAN's crude Lipschitz constraint)."""
    for p in module.parameters():
        p.clamp_(-bound, bound)


class LeCam(torch.nn.Module):
    """LeCam regulariser (Tseng et al. 2021): E[(D(x) - a_F)^2] + E[(D(G(z)) - a_R)^2], with a_R and a_F
    exponential moving averages of D's mean output on real and fake data (buffers, so checkpoints keep them)."""

    def __init__(self, decay: float = 0.99):
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("anchor_real", torch.zeros(()))
        self.register_buffer("anchor_fake", torch.zeros(()))

    def forward(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        """The regulariser on these outputs against the current anchors, then the anchors' update."""
        reg = (d_real.float() - self.anchor_fake).pow(2).mean() + (d_fake.float() - self.anchor_real).pow(2).mean()
        with torch.no_grad():
            self.anchor_real.lerp_(d_real.detach().float().mean(), 1 - self.decay)
            self.anchor_fake.lerp_(d_fake.detach().float().mean(), 1 - self.decay)
        return reg


@dataclass
class Regularisers:
    """The discriminator regularisers every adversarial model takes as config (a Config mixin)."""

    clip: Optional[float] = None  # WGAN's weight clipping bound
    gp_weight: float = 0.0  # gradient penalty on interpolates (WGAN-GP)
    gp_center: float = 1.0
    # R1 (Mescheder et al. 2018): (r1_weight / 2) E||grad D(x_real)||^2; r1_every > 1 runs it lazily as its
    # own step every that many trainer steps, scaled by the interval (StyleGAN2).
    r1_weight: float = 0.0
    r1_every: int = 1
    # DRAGAN (Kodali et al. 2017): dragan_weight * E[(||grad D(x_p)|| - 1)^2] at x_p near the real data
    dragan_weight: float = 0.0
    dragan_scale: float = 0.5  # the noise's size in units of the batch's standard deviation
    # WGAN-div (Wu et al. 2018): div_weight * E||grad D(x_hat)||^div_power on interpolates (k 2, p 6)
    div_weight: float = 0.0
    div_power: float = 6.0


@dataclass
class LeCamConfig:
    """LeCam (Tseng et al. 2021): lecam_weight * R_LC, anchors averaged at lecam_decay (a Config mixin)."""

    lecam_weight: float = 0.0
    lecam_decay: float = 0.99


def regulariser_problem(cfg) -> str | None:
    """Why the regulariser settings cannot work (None if they can)."""
    if cfg.clip is not None and cfg.clip <= 0:
        return f"model.clip must be > 0 (or null for no clipping), got {cfg.clip}"
    if cfg.gp_weight < 0 or cfg.r1_weight < 0:
        return f"model.gp_weight and model.r1_weight must be >= 0, got {cfg.gp_weight} and {cfg.r1_weight}"
    if cfg.r1_every < 1:
        return f"model.r1_every must be >= 1 (1 = R1 in every discriminator step), got {cfg.r1_every}"
    if min(cfg.dragan_weight, cfg.div_weight) < 0 or cfg.dragan_scale <= 0 or cfg.div_power <= 0:
        return "model.dragan_weight and model.div_weight must be >= 0, model.dragan_scale and model.div_power > 0"
    return None


def lecam_problem(cfg) -> str | None:
    """Why the LeCam settings cannot work (None if they can)."""
    if cfg.lecam_weight < 0 or not 0 <= cfg.lecam_decay < 1:
        return (f"model.lecam_weight must be >= 0 and model.lecam_decay in [0, 1), "
                f"got {cfg.lecam_weight} and {cfg.lecam_decay}")
    return None


def lecam(cfg) -> LeCam | None:
    """The LeCam regulariser with its anchors, or None when model.lecam_weight is 0."""
    return LeCam(cfg.lecam_decay) if cfg.lecam_weight > 0 else None


def clipper(cfg, module: torch.nn.Module) -> Callable[[dict], None] | None:
    """The after-step hook (it takes the step's logs) that clips `module`'s weights, or None without clipping."""
    return (lambda logs=None: clip_weights(module, cfg.clip)) if cfg.clip else None


def lazy_r1(cfg) -> bool:
    """Whether R1 runs as its own step every cfg.r1_every steps rather than inside every D step."""
    return cfg.r1_weight > 0 and cfg.r1_every > 1


def lazy_ratio(cfg) -> float:
    """c = every / (every + 1) for a lazily regularised D, else 1: StyleGAN2 runs D's optimizer at lr * c
    and betas ** c, so that with the extra R1 updates its per-step dynamics match the non-lazy ones."""
    return cfg.r1_every / (cfg.r1_every + 1) if lazy_r1(cfg) else 1.0


def r1_term(cfg, critic, real: torch.Tensor, ctx: StepContext | None = None, group: int = 1):
    """(r1_weight / 2) * E||grad_x D(x_real)||^2, times r1_every when it runs lazily; (loss, logs)."""
    r1 = r1_penalty(critic, real, ctx, group)
    return 0.5 * cfg.r1_weight * cfg.r1_every * r1, {"r1_penalty": r1.detach()}


def penalty_terms(cfg, critic, real: torch.Tensor, fake: torch.Tensor, ctx: StepContext | None = None,
                  group: int = 1):
    """The gradient penalty and (unless lazy) R1 of one discriminator step: (extra loss, logs); group > 1
    when the critic judges packs of that many samples (norms and interpolation lines are per pack)."""
    extra, logs = 0.0, {}
    if cfg.gp_weight > 0:
        gp = gradient_penalty(critic, interpolates(real, fake, group), ctx, cfg.gp_center, group)
        extra = plus(extra, cfg.gp_weight * gp)
        logs["gradient_penalty"] = gp.detach()
    if cfg.dragan_weight > 0:
        gp = gradient_penalty(critic, perturbed(real, cfg.dragan_scale, group), ctx, 1.0, group)
        extra = plus(extra, cfg.dragan_weight * gp)
        logs["dragan_penalty"] = gp.detach()
    if cfg.div_weight > 0:
        div = divergence_penalty(critic, interpolates(real, fake, group), ctx, cfg.div_power, group)
        extra = plus(extra, cfg.div_weight * div)
        logs["div_penalty"] = div.detach()
    if cfg.r1_weight > 0 and not lazy_r1(cfg):
        r1, more = r1_term(cfg, critic, real, ctx, group)
        extra = plus(extra, r1)
        logs.update(more)
    return extra, logs


def compilable(cfg, networks: dict) -> dict:
    """The networks torch.compile may take: not a discriminator that a penalty differentiates twice."""
    # compiled graphs have no double backward
    twice = max(cfg.gp_weight, cfg.r1_weight, cfg.dragan_weight, cfg.div_weight) > 0
    return {k: m for k, m in networks.items() if not (k == "discriminator" and twice)}
