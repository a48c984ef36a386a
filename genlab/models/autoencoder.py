"""Deterministic auto-encoders whose aggregate posterior q(z) = E_x q(z|x) is matched to the prior N(0, I):

- WAE-MMD (Tolstikhin et al. 2018): squared reconstruction error + lambda * MMD^2(q(z), p(z)), the
  MMD estimated (unbiased) with the inverse multiquadratic kernel of metrics/kid.py, KID's code;
- AAE (Makhzani et al. 2016): a discriminator on codes tells prior samples (real) from encoded data
  (fake); the auto-encoder minimises reconstruction + adversarial_weight * the generator's loss. It is
  the GAN template (models/gan.py) played in code space: its loss table, regularisers (clipping,
  gradient penalty, R1), optimizer keys ('generator' = encoder and decoder, 'discriminator'),
  generator EMA and D-input path, with only the two steps written here.

Both sample by decoding z ~ N(0, I), or an ex-post mixture fitted to their codes (genlab sample prior=gmm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from genlab import nets
from genlab.metrics.kid import imq_kernel, mmd2, rbf_kernel
from genlab.models.base import Batch, Model, NetConfig, Spec, Step, StepContext, conv_size_problem
from genlab.models.gan import GAN, GANConfig, Side
from genlab.models.penalties import penalty_terms, r1_term

KERNELS = {"imq": imq_kernel, "rbf": rbf_kernel}


class AutoEncoderNet(nn.Module):
    """An encoder x -> z and a decoder z -> x; calling it decodes (so it is a generator of z)."""

    def __init__(self, encoder_cfg, decoder_cfg, spec, z_dim: int):
        super().__init__()
        act = "tanh" if spec.kind == "image" else "none"  # images live in [-1, 1]
        self.encoder = nets.discriminator(encoder_cfg, spec, out_dim=z_dim)
        self.decoder = nets.generator(decoder_cfg, spec, z_dim, out_activation=act)

    def forward(self, z):
        return self.decoder(z)


def squared_error(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """||x_hat - x||^2 per example (the WAE paper's cost c(x, y))."""
    return (x_hat.float() - x.float()).pow(2).flatten(1).sum(1)


def net_problem(cfg, spec, *net_cfgs) -> str | None:
    """Why the conv nets cannot take these images (None if they can, or for MLPs)."""
    if spec.kind == "image" and "conv" in [nets.resolve_arch(c.arch, spec.kind) for c in net_cfgs]:
        return conv_size_problem(spec.shape)
    return None


@torch.no_grad()
def reconstruction_visuals(model, data) -> dict:
    """Originals next to their reconstructions (images), or reconstructions over the data (points)."""
    from genlab import viz

    x = data.test_x[:32] if data.kind == "image" else data.test_x[:2000]
    recon = model.decode(model.codes(x))
    if data.kind != "image":
        return {"reconstructions": viz.scatter(recon.cpu(), x.cpu(), extent=data.extent)}
    return {"reconstructions": viz.grid(torch.stack([x, recon], 1).flatten(0, 1), nrow=8)}


@dataclass
class WAEConfig:
    name: str = "wae"
    z_dim: int = 8
    mmd_weight: float = 10.0  # lambda
    kernel: str = "imq"  # imq (the paper's) | rbf
    encoder: NetConfig = field(default_factory=NetConfig)
    decoder: NetConfig = field(default_factory=NetConfig)


class WAE(Model):
    """WAE-MMD: min E||x - G(E(x))||^2 + lambda MMD^2(E(x), z ~ N(0, I))."""

    Config = WAEConfig
    encodes = True  # family 'adversarial' (the default): scored by its samples, it has no likelihood

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if cfg.kernel not in KERNELS:
            return f"model.kernel must be one of {', '.join(KERNELS)}, got {cfg.kernel}"
        if cfg.z_dim < 1 or cfg.mmd_weight < 0:
            return "model.z_dim must be >= 1 and model.mmd_weight >= 0"
        return net_problem(cfg, spec, cfg.encoder, cfg.decoder)

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.autoencoder = AutoEncoderNet(cfg.encoder, cfg.decoder, spec, cfg.z_dim)
        self.kernel = KERNELS[cfg.kernel]

    def networks(self):
        return {"autoencoder": self.autoencoder}

    def schedule(self):
        return [Step("wae", "autoencoder", self.train_step)]

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's codes E(x)."""
        return self.autoencoder.encoder(x).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's outputs G(z)."""
        return self.autoencoder.decoder(z.to(next(self.parameters()).device)).float()

    def latent(self, n, generator=None):
        dev = generator.device if generator is not None else next(self.parameters()).device
        return torch.randn(n, self.cfg.z_dim, generator=generator, device=dev)

    def train_step(self, batch: Batch, ctx: StepContext):
        """Reconstruction + lambda * MMD^2 between the batch's codes and as many prior samples."""
        z = self.codes(batch.x)
        rec = squared_error(self.autoencoder.decoder(z), batch.x).mean()
        penalty = mmd2(z, torch.randn_like(z), self.kernel)
        return rec + self.cfg.mmd_weight * penalty, {"reconstruction": rec.detach(), "mmd": penalty.detach()}

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, **kwargs):
        return self.decode(noise if noise is not None else self.latent(n, generator))

    @torch.no_grad()
    def visuals(self, fixed, data):
        return {**super().visuals(fixed, data), **reconstruction_visuals(self, data)}


@dataclass
class AAEConfig(GANConfig):
    name: str = "aae"
    z_dim: int = 8
    encoder: NetConfig = field(default_factory=NetConfig)
    adversarial_weight: float = 1.0  # the generator's adversarial loss next to the reconstruction


class AAE(GAN):
    """The GAN template in code space: D(z) judges prior samples (real) against E(x) (fake); the
    generator is the auto-encoder, trained on reconstruction + adversarial_weight * its GAN loss."""

    Config = AAEConfig
    encodes = True

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if cfg.augment != "none":
            return "model.augment transforms images; the AAE's discriminator sees latent codes: use model.augment=none"
        if cfg.adversarial_weight < 0:
            return f"model.adversarial_weight must be >= 0, got {cfg.adversarial_weight}"
        return super().check(cfg, Spec("points", (cfg.z_dim,))) or net_problem(cfg, spec, cfg.encoder, cfg.generator)

    def build_networks(self, cfg, spec):
        """(the auto-encoder as the generator, D on codes of size z_dim)."""
        return (AutoEncoderNet(cfg.encoder, cfg.generator, spec, cfg.z_dim),
                nets.discriminator(cfg.discriminator, Spec("points", (cfg.z_dim,))))

    def generator_needs_data(self) -> bool:
        return True  # the encoder's codes of real data are the fakes

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's codes E(x)."""
        return self.generator.encoder(x).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's outputs (the EMA decoder's when model.ema_decay is set)."""
        return self.sampler(z.to(self.device)).float()

    def prior(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, device=self.device)

    def discriminator_step(self, batch: Batch, ctx: StepContext):
        """D's loss from the table on prior samples (real) and codes (fake), plus the regularisers."""
        with torch.no_grad():
            fake_z = self.codes(batch.x)
        real_z = self.prior(len(batch))
        real, fake = Side(real_z, None, *self.discriminate(real_z)), Side(fake_z, None, *self.discriminate(fake_z))
        logs = self.loss.diagnostics(real.d.detach().float(), fake.d.detach().float())
        penalty, more = penalty_terms(self.cfg, lambda z: self.discriminate(z)[0], real.x, fake.x, ctx)
        return self.loss.discriminator(real.d, fake.d) + penalty, {**logs, **more}

    def r1_step(self, batch: Batch, ctx: StepContext):
        """Lazy R1 on D's real inputs: prior samples."""
        return r1_term(self.cfg, lambda z: self.discriminate(z)[0], self.prior(len(batch)), ctx)

    def generator_step(self, batch: Batch, ctx: StepContext):
        """Reconstruction of the batch + adversarial_weight * the generator's loss on its codes."""
        z = self.codes(batch.x)
        rec = squared_error(self.generator.decoder(z), batch.x).mean()
        d_real = self.discriminate(self.prior(len(batch)))[0].detach() if self.loss.generator_needs_real else None
        adv = self.loss.generator(d_real, self.discriminate(z)[0])
        return rec + self.cfg.adversarial_weight * adv, {"reconstruction": rec.detach(), "adversarial": adv.detach()}

    @torch.no_grad()
    def visuals(self, fixed, data):
        from genlab import viz

        x = self.sample(fixed["n"], noise=fixed.get("noise"), generator=fixed.get("generator"))
        first = ({"samples": viz.scatter(x.cpu(), data.test_x[:2000].cpu(), extent=data.extent)}
                 if data.kind == "points" else {"samples": viz.grid(x, nrow=fixed.get("nrow"))})
        return {**first, **reconstruction_visuals(self, data)}
