"""EBGAN (Zhao, Mathieu & LeCun 2017): the discriminator is an auto-encoder and its reconstruction
error is the energy, D(x) = ||Dec(Enc(x)) - x||^2 (mean over coordinates). D pushes real energies down
and fake energies up to the margin m (a hinge); G lowers the energies of its samples, optionally with
the pulling-away term on the encoder's codes of a batch of fakes, which penalises codes pointing the
same way and so discourages mode collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlab import nets
from genlab.models.gan import GAN, GANConfig, Side
from genlab.models.losses import LOSSES, pulling_away_term


@dataclass
class EBGANConfig(GANConfig):
    name: str = "ebgan"
    loss: str = "ebgan"
    # m: fake energies above it stop pushing D; in units of the per-coordinate squared error (see ebgan.yaml)
    margin: float = 0.1
    code_dim: int = 64  # the auto-encoder's bottleneck
    pt_weight: float = 0.0  # the pulling-away term's weight (the paper's EBGAN-PT uses 0.1)


class AutoEncoder(nn.Module):
    """Enc: the discriminator family's body with a code head; Dec: the generator family from the code.

    The energy is the mean |Dec(Enc(x)) - x|^power over coordinates: 2 for EBGAN, 1 for BEGAN.
    """

    def __init__(self, net_cfg, spec, code_dim: int, power: int = 2):
        super().__init__()
        self.power = int(power)
        self.encoder = nets.discriminator(net_cfg, spec, out_dim=code_dim)
        self.decoder = nets.generator(net_cfg, spec, code_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's codes (N, code_dim): the auto-encoder's innermost features."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor):
        """(energies (N,), codes (N, code_dim))."""
        code = self.encoder(x)
        rec = self.decoder(code)
        return (rec.float() - x.float()).abs().pow(self.power).flatten(1).mean(1), code

    @torch.no_grad()
    def reconstruction_grid(self, data) -> torch.Tensor:
        """Real test images (top row) over their reconstructions (bottom row)."""
        from genlab import viz

        x = data.test_x[:10].to(next(self.parameters()).device)
        return viz.grid(torch.cat([x, self.decoder(self.encoder(x))]), nrow=len(x))


class AutoEncoderGAN(GAN):
    """The GAN template with an auto-encoder D whose reconstruction error is the energy (EBGAN, BEGAN)."""

    #: the power of the per-coordinate reconstruction error (2: squared, 1: L1)
    energy_power = 2

    @classmethod
    def check(cls, cfg, spec):
        if cfg.loss in LOSSES and not LOSSES[cfg.loss].reads_energies:
            return (f"{cls.__name__}'s D outputs energies: model.loss must be {cfg.name} (a loss that reads them), "
                    f"got {cfg.loss}")
        if cfg.code_dim < 1:
            return f"model.code_dim must be >= 1, got {cfg.code_dim}"
        return super().check(cfg, spec)

    def build_networks(self, cfg, spec):
        ae = AutoEncoder(cfg.discriminator, spec, cfg.code_dim, power=self.energy_power)
        return nets.generator(cfg.generator, spec, cfg.z_dim), ae

    def heads(self, x, cond):
        """(energies (N,) (low = judged real), codes)."""
        return self.discriminator(x)

    @torch.no_grad()
    def visuals(self, fixed, data):
        """Samples, and for images real test images (top) over the discriminator's reconstructions."""
        out = super().visuals(fixed, data)
        if data.kind == "image":
            out["reconstructions"] = self.discriminator.reconstruction_grid(data)
        return out


class EBGAN(AutoEncoderGAN):
    """G(z) against an auto-encoder discriminator whose reconstruction error is the energy."""

    packs = False  # per-sample conditions or heads (labels, codes, reconstructions)

    Config = EBGANConfig

    @classmethod
    def check(cls, cfg, spec):
        if cfg.loss_params:
            return "EBGAN's loss takes model.margin, not model.loss_params; leave loss_params empty"
        if cfg.margin <= 0 or cfg.pt_weight < 0:
            return "model.margin must be > 0 and model.pt_weight >= 0"
        return super().check(cfg, spec)

    @classmethod
    def loss_params(cls, cfg) -> dict:
        return {"margin": cfg.margin}

    def generator_terms(self, fake: Side, adversarial):
        logs = {"energy": adversarial.detach()}
        if self.cfg.pt_weight <= 0:
            return 0.0, logs
        pt = pulling_away_term(fake.aux.float())
        return self.cfg.pt_weight * pt, {**logs, "pulling_away": pt.detach()}
