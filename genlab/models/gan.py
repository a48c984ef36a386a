"""Unconditional GANs: one class, many games. The loss table (losses.py), the number of critic steps,
weight clipping and the gradient penalty are config values, so GAN, WGAN and WGAN-GP are YAML files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from genlab import nets
from genlab.engine.ema import EMA
from genlab.models.base import Batch, Model, NetConfig, Step, StepContext, conv_size_problem
from genlab.models.losses import LOSSES, build_loss
from genlab.models.penalties import clip_weights, gradient_penalty, interpolates


@dataclass
class GANConfig:
    name: str = "gan"
    loss: str = "ns"
    loss_params: dict[str, Any] = field(default_factory=dict)
    z_dim: int = 64
    n_critic: int = 1
    clip: Optional[float] = None
    gp_weight: float = 0.0
    gp_center: float = 1.0
    generator: NetConfig = field(default_factory=NetConfig)
    discriminator: NetConfig = field(default_factory=NetConfig)
    # Generator EMA: samples and evaluation use the averaged weights when set (e.g. 0.999).
    ema_decay: Optional[float] = None


class GAN(Model):
    """Generator G(z) against discriminator/critic D(x) under an adversarial loss from the table."""

    Config = GANConfig

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        """Why cfg cannot work on data of this spec (None if it can)."""
        if cfg.loss not in LOSSES:
            return f"model.loss={cfg.loss} is unknown; choose one of {', '.join(LOSSES)}"
        if cfg.n_critic < 1:
            return f"model.n_critic must be >= 1, got {cfg.n_critic}"
        if cfg.z_dim < 1:
            return f"model.z_dim must be >= 1, got {cfg.z_dim}"
        if cfg.clip is not None and cfg.clip <= 0:
            return f"model.clip must be > 0 (or null for no clipping), got {cfg.clip}"
        if cfg.gp_weight < 0:
            return f"model.gp_weight must be >= 0, got {cfg.gp_weight}"
        if cfg.ema_decay is not None and not 0 <= cfg.ema_decay < 1:
            return f"model.ema_decay must be in [0, 1) (or null for no EMA), got {cfg.ema_decay}"
        if spec.kind == "image" and "conv" in (nets.resolve_arch(cfg.generator.arch, spec.kind),
                                               nets.resolve_arch(cfg.discriminator.arch, spec.kind)):
            return conv_size_problem(spec.shape)
        return None

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.generator = nets.generator(cfg.generator, spec, cfg.z_dim)
        self.discriminator = nets.discriminator(cfg.discriminator, spec)
        self.loss = build_loss(cfg.loss, **cfg.loss_params)
        self.critic_name = "critic" if cfg.loss == "wasserstein" else "discriminator"
        self.init_ema()

    def init_ema(self) -> None:
        """The EMA copy of the generator (call after self.generator exists); None when ema_decay is unset."""
        self.generator_ema = EMA(self.generator, self.cfg.ema_decay) if self.cfg.ema_decay is not None else None

    def update_ema(self) -> None:
        """The generator Step's `after` hook."""
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator)

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator that samples: the EMA weights when model.ema_decay is set."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def networks(self):
        return {"generator": self.generator, "discriminator": self.discriminator}

    def compile_targets(self):
        # The gradient penalty differentiates through D twice; compiled graphs have no double backward.
        nets = self.networks()
        return {k: m for k, m in nets.items() if not (k == "discriminator" and self.cfg.gp_weight > 0)}

    def schedule(self):
        after = (lambda: clip_weights(self.discriminator, self.cfg.clip)) if self.cfg.clip else None
        return [
            Step(self.critic_name, "discriminator", self.discriminator_step, repeat=self.cfg.n_critic, after=after),
            Step("generator", "generator", self.generator_step, after=self.update_ema),
        ]

    def latent(self, n, generator=None):
        dev = generator.device if generator is not None else next(self.parameters()).device
        return torch.randn(n, self.cfg.z_dim, generator=generator, device=dev)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, device=next(self.generator.parameters()).device)

    def discriminator_step(self, batch: Batch, ctx: StepContext):
        real = batch.x
        fake = self.generator(self._noise(len(batch))).detach()
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        loss = self.loss.discriminator(d_real, d_fake)
        logs = _diagnostics(self.cfg.loss, d_real.detach().float(), d_fake.detach().float())
        if self.cfg.gp_weight > 0:
            gp = gradient_penalty(self.discriminator, interpolates(real, fake), ctx, self.cfg.gp_center)
            loss = loss + self.cfg.gp_weight * gp
            logs["gradient_penalty"] = gp.detach()
        return loss, logs

    def generator_step(self, batch: Batch, ctx: StepContext):
        fake = self.generator(self._noise(len(batch)))
        return self.loss.generator(self.discriminator(fake)), {}

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, **kwargs):
        z = noise if noise is not None else self.latent(n, generator)
        dev = next(self.generator.parameters()).device
        return self.sampler(z.to(dev)).float()

    def critic_values(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's scalar output per point, for the toy heat-maps (subclasses with heads pick theirs)."""
        return self.discriminator(x)

    @torch.no_grad()
    def visuals(self, fixed, data):
        """For toy data, the samples over the real data with D's output over the plane (2-D) or the line
        (1-D): where the discriminator/critic still has a slope, the generator gets a gradient."""
        out = super().visuals(fixed, data)
        if data.kind != "points" or data.shape[0] not in (1, 2):
            return out
        from genlab import viz

        x = self.sample(fixed["n"], noise=fixed.get("noise"), labels=fixed.get("labels"),
                        generator=fixed.get("generator")).cpu()
        real = data.test_x[:2000].cpu()
        dev = next(self.discriminator.parameters()).device
        size = 256
        if data.shape[0] == 2:
            grid = viz.plane(data.extent, size, device=dev)
            field = torch.cat([self.critic_values(g).float().reshape(-1) for g in grid.split(8192)])
            bg = viz.heatmap(field.view(size, size).cpu())
            return {f"{self.critic_name}_field": viz.scatter(x, real, extent=data.extent, background=bg), **out}
        xs = torch.linspace(-data.extent, data.extent, size, device=dev).view(-1, 1)
        d = self.critic_values(xs).float().reshape(-1).cpu()
        if self.cfg.loss in ("ns", "minimax"):
            # D(x) as a probability on a fixed [0, 1] axis, so saturation shows as flat 0 / 1 plateaus
            curve, rng = torch.sigmoid(d), (0.0, 1.0)
        else:
            curve, rng = d, None
        return {f"{self.critic_name}_curve": viz.plot1d(x, real, curve, extent=data.extent, curve_range=rng), **out}


def _diagnostics(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> dict:
    """What the discriminator believes: D(x), D(G(z)) for probabilistic losses, the W estimate for critics."""
    if loss == "wasserstein":
        return {"wasserstein": d_real.mean() - d_fake.mean(), "critic_real": d_real.mean(),
                "critic_fake": d_fake.mean()}
    if loss in ("ns", "minimax"):
        return {"D_x": torch.sigmoid(d_real).mean(), "D_G_z": torch.sigmoid(d_fake).mean()}
    return {"D_x": d_real.mean(), "D_G_z": d_fake.mean()}
