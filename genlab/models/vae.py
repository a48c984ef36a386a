"""The variational auto-encoder (Kingma & Welling 2014): Gaussian encoder q(z|x) with log-variance,
reparameterised samples, and a Bernoulli or Gaussian decoder p(x|z). The loss is the negative ELBO
in nats per example, its reconstruction and KL terms logged separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from genlab import nets
from genlab.models.base import Batch, Model, NetConfig, Step, StepContext, conv_size_problem


@dataclass
class VAEConfig:
    name: str = "vae"
    z_dim: int = 16
    decoder_dist: str = "auto"  # auto (bernoulli for images, gaussian for points) | bernoulli | gaussian
    # Gaussian decoder: fixed std if set, else a learned per-dimension log-std
    gaussian_std: Optional[float] = None
    kl_weight: float = 1.0
    encoder: NetConfig = field(default_factory=NetConfig)
    decoder: NetConfig = field(default_factory=NetConfig)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


class VAE(Model):
    """x -> q(z|x) -> z -> p(x|z); loss = -ELBO = reconstruction NLL + kl_weight * KL."""

    Config = VAEConfig
    family = "likelihood"

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if cfg.decoder_dist not in ("auto", "bernoulli", "gaussian"):
            return f"model.decoder_dist must be auto, bernoulli or gaussian, got {cfg.decoder_dist}"
        if cfg.decoder_dist == "bernoulli" and spec.kind == "points":
            return "model.decoder_dist=bernoulli needs image data; use model.decoder_dist=gaussian for points"
        if cfg.z_dim < 1 or cfg.kl_weight < 0:
            return "model.z_dim must be >= 1 and model.kl_weight >= 0"
        if cfg.gaussian_std is not None and cfg.gaussian_std <= 0:
            return f"model.gaussian_std must be > 0, got {cfg.gaussian_std}"
        if spec.kind == "image":
            return conv_size_problem(spec.shape)
        return None

    def __init__(self, cfg, spec):
        if cfg.decoder_dist == "auto":
            cfg.decoder_dist = "bernoulli" if spec.kind == "image" else "gaussian"
        super().__init__(cfg, spec)
        self.encoder = nets.discriminator(cfg.encoder, spec, out_dim=2 * cfg.z_dim)
        self.decoder = nets.generator(cfg.decoder, spec, cfg.z_dim, out_activation="none")
        self.num_dims = math.prod(spec.shape)
        if cfg.decoder_dist == "gaussian" and cfg.gaussian_std is None:
            self.log_std = nn.Parameter(torch.zeros(*spec.shape))

    def networks(self):
        return {"vae": self}

    def schedule(self):
        return [Step("vae", "vae", self.elbo_step)]

    def latent(self, n, generator=None):
        dev = generator.device if generator is not None else next(self.parameters()).device
        return torch.randn(n, self.cfg.z_dim, generator=generator, device=dev)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) as (mu, logvar)."""
        h = self.encoder(x).float()
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def log_px_z(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example in nats (a density for the Gaussian decoder: constants included)."""
        out = out.float().flatten(1)
        x = x.float().flatten(1)
        if self.cfg.decoder_dist == "bernoulli":
            target = (x + 1) / 2  # pixels in [0, 1]; exactly {0, 1} when the data is binarised
            return -F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(1)
        log_std = (torch.full_like(out, math.log(self.cfg.gaussian_std)) if self.cfg.gaussian_std is not None
                   else self.log_std.flatten().float().expand_as(out))
        return (-0.5 * ((x - out) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(1)

    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example reconstruction log-likelihood and KL for one reparameterised sample."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return {"log_px_z": self.log_px_z(self.decoder(z), x), "kl": gaussian_kl(mu, logvar)}

    def elbo_step(self, batch: Batch, ctx: StepContext):
        t = self.elbo_terms(batch.x)
        recon, kl = -t["log_px_z"].mean(), t["kl"].mean()
        neg_elbo = recon + kl
        loss = recon + self.cfg.kl_weight * kl
        return loss, {"reconstruction": recon.detach(), "kl": kl.detach(), "neg_elbo": neg_elbo.detach()}

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder's mean in data space."""
        return (torch.sigmoid(out) * 2 - 1) if self.cfg.decoder_dist == "bernoulli" else out

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, **kwargs):
        z = noise if noise is not None else self.latent(n, generator)
        dev = next(self.parameters()).device
        return self.mean_image(self.decoder(z.to(dev)).float())

    @torch.no_grad()
    def visuals(self, fixed, data):
        from genlab import viz

        out = super().visuals(fixed, data)
        if data.kind == "image":
            x = data.test_x[: min(32, fixed["n"])]
            mu, _ = self.encode(x)
            recon = self.mean_image(self.decoder(mu).float())
            pairs = torch.stack([x, recon], 1).flatten(0, 1)  # original, reconstruction, ...
            out["reconstructions"] = viz.grid(pairs, nrow=8)
        return out

    @torch.no_grad()
    def evaluate(self, data):
        total, n = {"neg_elbo": 0.0, "kl": 0.0}, 0
        for b in data.batches("test", 500, limit=2000):
            t = self.elbo_terms(b.x)
            total["neg_elbo"] += float(-(t["log_px_z"] - t["kl"]).sum())
            total["kl"] += float(t["kl"].sum())
            n += len(b)
        out = {k: v / n for k, v in total.items()}
        out["elbo_bits_per_dim"] = out["neg_elbo"] / (self.num_dims * math.log(2))
        return out
