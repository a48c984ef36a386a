"""InfoGAN (Chen et al. 2016): G(z, c) with a structured code c (categorical and continuous parts);
an auxiliary head Q on the discriminator's features maximises the variational lower bound
L_I = E[log Q(c | G(z, c))] + H(c) <= I(c; G(z, c)), with weight lambda (model.info_weight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genlab import nets
from genlab.models.gan import GAN, GANConfig, Side


@dataclass
class InfoGANConfig(GANConfig):
    name: str = "infogan"
    categorical: list[int] = field(default_factory=lambda: [10])  # one entry per categorical code: its K
    continuous: int = 2  # number of continuous codes, each ~ U(-1, 1)
    info_weight: float = 1.0  # lambda
    q_hidden: int = 128


def categorical_mi_bound(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The lower bound H(c) + E[log Q(c|x)] on I(c; x) for a uniform categorical code (nats)."""
    k = logits.shape[1]
    return math.log(k) - F.cross_entropy(logits.float(), codes)


class InfoDiscriminator(nn.Module):
    """D's body with two heads on its features: the adversarial logit and Q's code parameters."""

    def __init__(self, net_cfg, spec, q_out: int, q_hidden: int):
        super().__init__()
        self.body = nets.discriminator(net_cfg, spec)
        # The paper's Q: one hidden fully-connected layer on top of D's shared features.
        self.q = nn.Sequential(nn.Linear(self.body.feature_dim, q_hidden), nn.LeakyReLU(0.2, True),
                               nn.Linear(q_hidden, q_out))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The body's penultimate features (N, F), shared by both heads."""
        return self.body.features(x)

    def forward(self, x: torch.Tensor):
        h = self.features(x)
        return self.body.head(h).squeeze(1), self.q(h)


class InfoGAN(GAN):
    """GAN on (z, c) with Q(c | x) sharing D's body; both players add -lambda * L_I."""

    packs = False  # per-sample conditions or heads (labels, codes, reconstructions)

    Config = InfoGANConfig

    @classmethod
    def check(cls, cfg, spec):
        if any(k < 2 for k in cfg.categorical):
            return f"model.categorical lists category counts, each >= 2; got {list(cfg.categorical)}"
        if cfg.continuous < 0 or cfg.info_weight < 0:
            return "model.continuous and model.info_weight must be >= 0"
        if not cfg.categorical and cfg.continuous == 0:
            return "InfoGAN needs a code: set model.categorical (e.g. [10]) and/or model.continuous"
        return super().check(cfg, spec)

    def build_networks(self, cfg, spec):
        self.cats = [int(k) for k in cfg.categorical]
        self.n_cont = int(cfg.continuous)
        self.code_dim = sum(self.cats) + self.n_cont
        return (nets.generator(cfg.generator, spec, cfg.z_dim + self.code_dim),
                InfoDiscriminator(cfg.discriminator, spec, self.code_dim, cfg.q_hidden))

    # ---- codes ----------------------------------------------------------------------------------
    def codes(self, n: int, device, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Category indices (n, n_categorical) ~ uniform and continuous codes (n, n_cont) ~ U(-1, 1)."""
        idx = torch.stack([torch.randint(k, (n,), generator=generator, device=device) for k in self.cats], 1) \
            if self.cats else torch.zeros(n, 0, dtype=torch.long, device=device)
        cont = torch.rand(n, self.n_cont, generator=generator, device=device) * 2 - 1
        return idx, cont

    def encode(self, z: torch.Tensor, idx: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        """G's input [z, one-hot(c_1), ..., one-hot(c_m), c_cont]."""
        parts = [z] + [F.one_hot(idx[:, j], k).to(z.dtype) for j, k in enumerate(self.cats)] + [cont.to(z.dtype)]
        return torch.cat(parts, 1)

    def decode(self, g_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, category indices, continuous codes) from G's input vector."""
        z, rest = g_in[:, :self.cfg.z_dim], g_in[:, self.cfg.z_dim:]
        idx, o = [], 0
        for k in self.cats:
            idx.append(rest[:, o:o + k].argmax(1))
            o += k
        idx = torch.stack(idx, 1) if idx else torch.zeros(len(g_in), 0, dtype=torch.long, device=g_in.device)
        return z, idx, rest[:, o:]

    def latent(self, n, generator=None):
        z = super().latent(n, generator)
        return self.encode(z, *self.codes(n, z.device, generator))

    def info_loss(self, q_out: torch.Tensor, idx: torch.Tensor, cont: torch.Tensor):
        """-L_I up to the constant H(c): cross-entropy of each categorical code plus the Gaussian NLL
        (unit variance, constants dropped) of the continuous codes; and the categorical MI bound."""
        loss = q_out.new_zeros((), dtype=torch.float32)
        bound = q_out.new_zeros((), dtype=torch.float32)
        o = 0
        for j, k in enumerate(self.cats):
            logits = q_out[:, o:o + k].float()
            loss = loss + F.cross_entropy(logits, idx[:, j])
            bound = bound + categorical_mi_bound(logits, idx[:, j])
            o += k
        if self.n_cont:
            loss = loss + 0.5 * (q_out[:, o:].float() - cont.float()).pow(2).sum(1).mean()
        return loss, bound

    # ---- the GAN template's hooks: fakes carry their codes, Q reads them back ------------------
    def fake(self, n):
        idx, cont = self.codes(n, self.device)
        return self.generator(self.encode(self._noise(n), idx, cont)), (idx, cont)

    def heads(self, x, cond):
        return self.discriminator(x)

    def _info_terms(self, fake: Side):
        info, bound = self.info_loss(fake.aux, *fake.cond)
        return self.cfg.info_weight * info, {"info_loss": info.detach(), "mi_lower_bound": bound.detach()}

    def discriminator_terms(self, real: Side, fake: Side, batch):
        return self._info_terms(fake)

    def generator_terms(self, fake: Side, adversarial):
        return self._info_terms(fake)

    # ---- visuals --------------------------------------------------------------------------------
    @torch.no_grad()
    def visuals(self, fixed, data):
        """Random samples, then one grid per code: a categorical code per row (z per column), and each
        continuous code swept from -2 to 2 along the columns (the first categorical code per row)."""
        from genlab import viz

        out = super().visuals(fixed, data)
        if data.kind != "image":
            return out
        dev = next(self.parameters()).device
        base = fixed.get("noise")
        if base is None:
            base = self.latent(10)
        z, idx, cont = self.decode(base.to(dev))
        cols = min(10, len(z))
        for j, k in enumerate(self.cats):
            zz = z[:cols].repeat(k, 1)
            ii = idx[:cols].repeat(k, 1)
            ii[:, j] = torch.arange(k, device=dev).repeat_interleave(cols)
            x = self.sample(len(zz), noise=self.encode(zz, ii, torch.zeros(len(zz), self.n_cont, device=dev)))
            out[f"categorical_{j}"] = viz.grid(x, nrow=cols)
        rows = self.cats[0] if self.cats else min(8, len(z))
        sweep = torch.linspace(-2, 2, 10, device=dev)
        for i in range(self.n_cont):
            zz = z[:1].repeat(rows * len(sweep), 1) if self.cats else z[:rows].repeat_interleave(len(sweep), 0)
            ii = idx[:1].repeat(len(zz), 1)
            if self.cats:
                ii[:, 0] = torch.arange(rows, device=dev).repeat_interleave(len(sweep))
            cc = torch.zeros(len(zz), self.n_cont, device=dev)
            cc[:, i] = sweep.repeat(rows)
            x = self.sample(len(zz), noise=self.encode(zz, ii, cc))
            out[f"continuous_{i}"] = viz.grid(x, nrow=len(sweep))
        return out
