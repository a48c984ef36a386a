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
    """Enc: the discriminator family's body with a code head; Dec: the generator family from the code."""

    def __init__(self, net_cfg, spec, code_dim: int):
        super().__init__()
        self.encoder = nets.discriminator(net_cfg, spec, out_dim=code_dim)
        self.decoder = nets.generator(net_cfg, spec, code_dim)

    def forward(self, x: torch.Tensor):
        """(energies (N,), codes (N, code_dim))."""
        code = self.encoder(x)
        rec = self.decoder(code)
        return (rec.float() - x.float()).pow(2).flatten(1).mean(1), code


class EBGAN(GAN):
    """G(z) against an auto-encoder discriminator whose reconstruction error is the energy."""

    packs = False  # per-sample conditions or heads (labels, codes, reconstructions)

    Config = EBGANConfig

    @classmethod
    def check(cls, cfg, spec):
        if cfg.loss in LOSSES and not LOSSES[cfg.loss].reads_energies:
            return f"EBGAN's D outputs energies: model.loss must be ebgan (a loss that reads them), got {cfg.loss}"
        if cfg.loss_params:
            return "EBGAN's loss takes model.margin, not model.loss_params; leave loss_params empty"
        if cfg.margin <= 0 or cfg.code_dim < 1 or cfg.pt_weight < 0:
            return "model.margin must be > 0, model.code_dim >= 1 and model.pt_weight >= 0"
        return super().check(cfg, spec)

    @classmethod
    def loss_params(cls, cfg) -> dict:
        return {"margin": cfg.margin}

    def build_networks(self, cfg, spec):
        return nets.generator(cfg.generator, spec, cfg.z_dim), AutoEncoder(cfg.discriminator, spec, cfg.code_dim)

    def heads(self, x, cond):
        """(energies (N,) (low = judged real), codes)."""
        return self.discriminator(x)

    def generator_terms(self, fake: Side, adversarial):
        logs = {"energy": adversarial.detach()}
        if self.cfg.pt_weight <= 0:
            return 0.0, logs
        pt = pulling_away_term(fake.aux.float())
        return self.cfg.pt_weight * pt, {**logs, "pulling_away": pt.detach()}

    @torch.no_grad()
    def visuals(self, fixed, data):
        """Samples, and for images real test images (top) over the discriminator's reconstructions."""
        from genlab import viz

        out = super().visuals(fixed, data)
        if data.kind == "image":
            x = data.test_x[:10].to(next(self.parameters()).device)
            code = self.discriminator.encoder(x)
            out["reconstructions"] = viz.grid(torch.cat([x, self.discriminator.decoder(code)]), nrow=len(x))
        return out
