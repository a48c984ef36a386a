"""Regularisers on the discriminator/critic: the WGAN-GP gradient penalty, R1 and weight clipping."""

from __future__ import annotations

import torch

from genlab.types import StepContext


def interpolates(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Points on straight lines between real and fake samples, one uniform alpha per sample."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    return alpha * real + (1 - alpha) * fake


def input_gradients(critic, x: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
    """grad_x critic(x) per sample, flattened (N, D), differentiable, safe under fp16 loss scaling.

    Follows PyTorch's AMP recipe: the output handed to autograd.grad is scaled so small fp16
    gradients do not underflow, and the resulting input gradient is unscaled before the norm.
    """
    ctx = ctx or StepContext(0)
    x = x.detach().requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(ctx.scale(out.float().sum()), x, create_graph=True)
    return grad.float().flatten(1) * ctx.inv_scale()


def gradient_penalty(critic, x: torch.Tensor, ctx: StepContext | None = None, center: float = 1.0) -> torch.Tensor:
    """E[(||grad_x critic(x)|| - center)^2] (Gulrajani et al. 2017) at the points x."""
    return ((input_gradients(critic, x, ctx).norm(2, dim=1) - center) ** 2).mean()


def r1_penalty(critic, real: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
    """E||grad_x critic(x)||^2 on real data (R1, Mescheder et al. 2018); the caller weighs it by gamma / 2."""
    # The squared norm as a sum of squares: no square root, so the gradient is defined at 0 too.
    return input_gradients(critic, real, ctx).pow(2).sum(1).mean()


@torch.no_grad()
def clip_weights(module: torch.nn.Module, bound: float) -> None:
    """Clamp every parameter to [-bound, bound] (WGAN's crude Lipschitz constraint)."""
    for p in module.parameters():
        p.clamp_(-bound, bound)
