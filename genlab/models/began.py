"""BEGAN (Berthelot, Schumm & Metz 2017, "Boundary Equilibrium GANs"): the discriminator is an
auto-encoder and L(v) = |v - D(v)| (mean L1 reconstruction error) its energy, as in EBGAN but with L1
and without a margin. D minimises L(x) - k_t L(G(z)), G minimises L(G(z)), and the weight k_t is a
proportional controller that keeps the equilibrium E[L(G(z))] = gamma E[L(x)]:

    k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1),    k_0 = 0

gamma (the diversity ratio, 0.5) trades sample diversity for quality. The convergence measure
M_global = L(x) + |gamma L(x) - L(G(z))| is logged: it falls as training converges. k_t is a buffer,
updated by the discriminator step's `after` hook from that step's logged energies (L(G(z)) of the
fakes D just saw, a draw from the same G the generator step uses), so checkpoints carry it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.models.ebgan import AutoEncoderGAN
from genlab.models.gan import GANConfig, Side


@dataclass
class BEGANConfig(GANConfig):
    name: str = "began"
    loss: str = "began"
    gamma: float = 0.5  # the diversity ratio E[L(G(z))] / E[L(x)] the controller holds
    lambda_k: float = 0.001  # the controller's gain (the proportional gain of k_t)
    k_init: float = 0.0
    code_dim: int = 64  # the auto-encoder's bottleneck


@torch.no_grad()
def control(k: torch.Tensor, real_energy: torch.Tensor, fake_energy: torch.Tensor, gamma: float,
            lambda_k: float) -> torch.Tensor:
    """k_t's proportional update, clipped to [0, 1]."""
    return (k + lambda_k * (gamma * real_energy - fake_energy)).clamp(0.0, 1.0)


def convergence(real_energy: torch.Tensor, fake_energy: torch.Tensor, gamma: float) -> torch.Tensor:
    """M_global = L(x) + |gamma L(x) - L(G(z))|."""
    return real_energy + (gamma * real_energy - fake_energy).abs()


class BEGAN(AutoEncoderGAN):
    """G(z) against an auto-encoder D with L1 energies, the fake term weighted by the controlled k_t."""

    Config = BEGANConfig
    energy_power = 1

    @classmethod
    def check(cls, cfg, spec):
        if not 0 < cfg.gamma <= 1 or cfg.lambda_k <= 0 or not 0 <= cfg.k_init <= 1:
            return "model.gamma must be in (0, 1], model.lambda_k > 0 and model.k_init in [0, 1]"
        return super().check(cfg, spec)

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.register_buffer("k", torch.tensor(float(cfg.k_init)))

    def discriminator_loss(self, real: Side, fake: Side):
        return self.loss.discriminator(real.d, fake.d, self.k)

    def discriminator_terms(self, real: Side, fake: Side, batch):
        """No extra loss; the energies k_t's controller reads (at every update), k_t and M_global, as logs."""
        r, f = real.d.detach().float().mean(), fake.d.detach().float().mean()
        return 0.0, {"energy_real": r, "energy_fake": f, "k": self.k.clone(), "M_global": convergence(r, f, self.cfg.gamma)}

    def after_discriminator(self, logs: dict) -> None:
        """After each D update: the template's hooks, then k_t's controller step on that update's energies."""
        super().after_discriminator(logs)
        self.k.copy_(control(self.k, logs["energy_real"], logs["energy_fake"], self.cfg.gamma, self.cfg.lambda_k))
