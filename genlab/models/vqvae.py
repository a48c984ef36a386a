"""VQ-VAE (van den Oord et al. 2017) and its second stage, a gated PixelCNN prior over the code map.

Stage one (model=vqvae): the encoder's vectors z_e are replaced by their nearest codebook entries z_q;
the decoder sees z_e + sg(z_q - z_e) (the straight-through estimator: forward z_q, backward the
identity), and the loss is -log p(x | z_q) + ||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2 (beta 0.25).
With ema_decay set, the codebook follows exponential moving averages of the vectors assigned to it
(the paper's appendix) instead of the codebook loss. The decoder is a discretised logistic per
sub-pixel, so -log p(x | z) is an exact discrete NLL.

Bits/dim. The posterior is deterministic (one code map per image), so the ELBO is
log p(x | z(x)) + log p(z(x)): with stage one's uniform prior, -log p(z) = h*w*log K; stage two
(model=vqvae_prior model.vqvae_run=DIR) fits a PixelCNN to the code maps of the frozen encoder and
replaces it by the prior's exact NLL. Both are reported as test_elbo_bits_per_dim, a bound on the NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from genlab.models.base import Batch, StepContext
from genlab.models.likelihood import LikelihoodModel
from genlab.nets.pixelcnn import CategoricalPixelCNN, discretized_logistic_log_prob
from genlab.nets.vqvae import VQDecoder, VQEncoder, code_map_size


@dataclass
class VQVAEConfig:
    name: str = "vqvae"
    codebook_size: int = 256  # K
    code_dim: int = 32  # D, the length of each code vector
    hidden: int = 64
    n_res_blocks: int = 2
    beta: float = 0.25  # commitment weight
    ema_decay: Optional[float] = None  # e.g. 0.99: EMA codebook updates instead of the codebook loss
    ema_epsilon: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    eval_limit: int = 1000  # test images used by evaluate()


def straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """z_q in the forward pass, the identity in the backward pass: z_e + sg(z_q - z_e)."""
    return z_e + (z_q - z_e).detach()


def perplexity(codes: torch.Tensor, k: int) -> torch.Tensor:
    """exp(entropy) of the codes' empirical distribution: K when all are used equally, 1 for one code."""
    p = torch.bincount(codes.flatten(), minlength=k).double() / codes.numel()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())


class VectorQuantizer(nn.Module):
    """A codebook of K vectors of size D: nearest-neighbour assignment and, optionally, EMA updates.

    ema_decay=None: the codebook is a parameter learned by the codebook loss. Otherwise it is a buffer
    e_i = m_i / N_i, with N_i (cluster sizes, Laplace-smoothed) and m_i (sums of assigned vectors)
    exponential moving averages of each training batch's assignments.
    """

    def __init__(self, k: int, dim: int, ema_decay: float | None = None, epsilon: float = 1e-5):
        super().__init__()
        self.k, self.dim, self.ema_decay, self.epsilon = k, dim, ema_decay, epsilon
        init = torch.empty(k, dim).uniform_(-1 / k, 1 / k)
        if ema_decay is None:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.zeros(k))
            self.register_buffer("ema_sum", init.clone())

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """The index of the nearest code of each vector z (..., D) -> (...)."""
        flat = z.reshape(-1, self.dim).float()
        e = self.codebook.float()
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(1)
        return d.argmin(1).view(z.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors (..., D) of indices (...)."""
        return self.codebook[codes]

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """One EMA step from vectors z (..., D) and their codes: N <- g N + (1-g) n, m <- g m + (1-g) sum z,
        e = m / N with N Laplace-smoothed (sizes sum to the same n, none is 0)."""
        g = self.ema_decay
        onehot = F.one_hot(codes.flatten(), self.k).to(self.ema_sum.dtype)
        flat = z.reshape(-1, self.dim).to(self.ema_sum.dtype)
        counts, sums = onehot.sum(0), onehot.T @ flat
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # under DDP every rank adds the whole global batch's statistics, so the codebooks stay equal
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.ema_count.mul_(g).add_(counts, alpha=1 - g)
        self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
        n = self.ema_count.sum()
        count = (self.ema_count + self.epsilon) / (n + self.k * self.epsilon) * n
        self.codebook.copy_(self.ema_sum / count.unsqueeze(1))


class VQVAE(LikelihoodModel):
    """x -> z_e -> nearest codes -> z_q -> p(x | z_q); trained with the straight-through estimator."""

    Config = VQVAEConfig
    key = "vqvae"

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if spec.kind != "image":
            return "model=vqvae needs image data (a dataset of images, not points)"
        if spec.shape[1] % 4 or spec.shape[2] % 4:
            return f"model=vqvae downsamples by 4: image height and width must be multiples of 4, got {spec.shape[1:]}"
        if cfg.codebook_size < 2 or cfg.code_dim < 1 or cfg.hidden < 2 or cfg.n_res_blocks < 0:
            return "model.codebook_size must be >= 2, model.code_dim >= 1, model.hidden >= 2, model.n_res_blocks >= 0"
        if cfg.beta < 0:
            return f"model.beta must be >= 0, got {cfg.beta}"
        if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
            return f"model.ema_decay must be in (0, 1) (or null for the codebook loss), got {cfg.ema_decay}"
        if cfg.ema_epsilon <= 0 or cfg.eval_limit < 1:
            return "model.ema_epsilon must be > 0 and model.eval_limit >= 1"
        return None

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        c = spec.shape[0]
        self.encoder = VQEncoder(c, cfg.hidden, cfg.code_dim, cfg.n_res_blocks)
        self.decoder = VQDecoder(2 * c, cfg.hidden, cfg.code_dim, cfg.n_res_blocks)  # a mean and a log-scale
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.ema_decay, cfg.ema_epsilon)
        self.code_shape = code_map_size(*spec.shape[1:])

    def networks(self):
        return {"vqvae": self}

    # ---- the pieces ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_e (N, D, h, w), codes (N, h, w)) of images x."""
        z_e = self.encoder(x)
        return z_e, self.quantizer.assign(z_e.permute(0, 2, 3, 1))

    def quantized(self, codes: torch.Tensor) -> torch.Tensor:
        """z_q (N, D, h, w) of a code map (N, h, w)."""
        return self.quantizer.lookup(codes).permute(0, 3, 1, 2)

    def log_px_z(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x | z) in nats per image from the decoder's output."""
        c = x.shape[1]
        return discretized_logistic_log_prob(x.float(), out[:, :c].float(), out[:, c:].float())

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The decoder's mean images in [-1, 1] for a code map."""
        return self.decoder(self.quantized(codes))[:, : self.spec.shape[0]].clamp(-1, 1).float()

    def code_prior_nats(self, codes: torch.Tensor) -> torch.Tensor:
        """-log p(codes) per map under stage one's uniform prior: h*w*log K."""
        return torch.full((len(codes),), codes[0].numel() * math.log(self.cfg.codebook_size), dtype=torch.float64,
                          device=codes.device)

    # ---- training -----------------------------------------------------------------------------
    def train_step(self, batch: Batch, ctx: StepContext):
        """Reconstruction (nats/dim) + codebook loss (or an EMA update) + beta * commitment."""
        x = batch.x
        z_e, codes = self.encode(x)
        z_q = self.quantized(codes)
        out = self.decoder(straight_through(z_e, z_q))
        rec = -self.log_px_z(x, out).mean() / self.num_dims
        commitment = F.mse_loss(z_e.float(), z_q.detach().float())
        loss = rec + self.cfg.beta * commitment
        logs = {"reconstruction_bits_per_dim": rec.detach() / math.log(2), "commitment": commitment.detach(),
                "perplexity": perplexity(codes, self.cfg.codebook_size).float(),
                "codes_used": torch.tensor(float(torch.unique(codes).numel()), device=codes.device)}
        if self.quantizer.ema_decay is None:
            codebook = F.mse_loss(z_q.float(), z_e.detach().float())
            loss = loss + codebook
            logs["codebook"] = codebook.detach()
        elif self.training:
            self.quantizer.ema_update(z_e.detach().permute(0, 2, 3, 1), codes)
        with torch.no_grad():
            logs["mse"] = F.mse_loss(out[:, : x.shape[1]].clamp(-1, 1).float(), x.float())
        return loss, logs

    # ---- evaluation ---------------------------------------------------------------------------
    def eval_batch_size(self) -> int:
        return 250

    def code_terms(self, x: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The decoder's NLL of x given its codes, the squared error of its mean, and the codes."""
        out = self.decoder(self.quantized(codes))
        mean = out[:, : x.shape[1]].clamp(-1, 1)
        return {"decoder_nll": -self.log_px_z(x, out).double(), "mse": (mean - x).pow(2).flatten(1).mean(1).double(),
                "codes": codes.flatten(1)}

    def eval_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """-ELBO = the prior's NLL of the code map + the decoder's NLL of x given it, per image."""
        _, codes = self.encode(batch.x)
        t = self.code_terms(batch.x, codes)
        return {**t, "neg_elbo": self.code_prior_nats(codes) + t["decoder_nll"]}

    def report(self, terms):
        codes = terms["codes"]
        used = torch.bincount(codes.flatten(), minlength=self.cfg.codebook_size) > 0
        dec = float(terms["decoder_nll"].mean())
        return {**super().report(terms), "test_decoder_bits_per_dim": self.bits_per_dim(dec),
                "test_mse": float(terms["mse"].mean()), "code_perplexity": float(perplexity(codes, self.cfg.codebook_size)),
                "codes_used": int(used.sum()), "dead_codes": int((~used).sum())}

    def protocol(self, data, n):
        return {**super().protocol(data, n), "code_prior": "uniform", "codebook_size": self.cfg.codebook_size,
                "code_map": "x".join(map(str, self.code_shape)), "decoder": "logistic"}

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, **kwargs):
        """Decoded code maps drawn from stage one's uniform prior (train model=vqvae_prior for real samples)."""
        dev = self.quantizer.codebook.device
        codes = torch.randint(self.cfg.codebook_size, (n, *self.code_shape), generator=generator, device=dev)
        return self.decode(codes)

    @torch.no_grad()
    def visuals(self, fixed, data):
        from genlab import viz

        x = data.test_x[:32]
        recon = self.decode(self.encode(x)[1])
        return {"reconstructions": viz.grid(torch.stack([x, recon], 1).flatten(0, 1), nrow=8)}


@dataclass
class VQVAEPriorConfig:
    name: str = "vqvae_prior"
    vqvae_run: Optional[str] = None  # the run folder (or .pt) of the trained VQ-VAE
    vqvae: dict[str, Any] = field(default_factory=dict)  # its model config, copied from that run at training
    n_layers: int = 8
    hidden: int = 64
    kernel: int = 3
    first_kernel: int = 7
    eval_limit: int = 1000


class VQVAEPrior(LikelihoodModel):
    """Stage two: a gated PixelCNN p(codes) over the code maps of a frozen, trained VQ-VAE."""

    Config = VQVAEPriorConfig
    key = "prior"
    #: the config key naming the run this model builds on, the class that run must hold, and where
    #: that run's model config is kept (so this run's folder rebuilds the whole model by itself)
    first_stage_key = "vqvae_run"
    first_stage_model = VQVAE
    first_stage_config = "vqvae"

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if not cfg.vqvae:
            return "model=vqvae_prior needs model.vqvae_run: the run folder of a trained VQVAE (genlab train model=vqvae)"
        if cfg.n_layers < 1 or cfg.hidden < 1:
            return "model.n_layers and model.hidden must be >= 1"
        if cfg.kernel % 2 == 0 or cfg.first_kernel % 2 == 0:
            return f"model.kernel and model.first_kernel must be odd, got {cfg.kernel} and {cfg.first_kernel}"
        return VQVAE.check(cls.vqvae_config(cfg), spec)

    @staticmethod
    def vqvae_config(cfg):
        """The first stage's typed config."""
        node = dict(OmegaConf.to_container(OmegaConf.create(cfg.vqvae), resolve=True))
        node.pop("_target_", None)
        return OmegaConf.merge(OmegaConf.structured(VQVAEConfig), node)

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.vqvae = VQVAE(self.vqvae_config(cfg), spec).requires_grad_(False)
        self.prior = CategoricalPixelCNN(self.vqvae.cfg.codebook_size, self.vqvae.code_shape, cfg.n_layers,
                                         cfg.hidden, cfg.kernel, cfg.first_kernel)

    def networks(self):
        return {"prior": self.prior}

    def load_first_stage(self, state: dict[str, torch.Tensor]) -> None:
        """The trained VQ-VAE's weights (its checkpoint's model state)."""
        self.vqvae.load_state_dict(state)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's code map of x."""
        with torch.no_grad():
            return self.vqvae.encode(x)[1]

    def train_step(self, batch: Batch, ctx: StepContext):
        """The prior's NLL of the code maps, in bits per code."""
        nll = -self.prior.log_prob(self.codes(batch.x)).float().mean()
        bits = nll / (math.prod(self.vqvae.code_shape) * math.log(2))
        return bits, {"nll_nats": nll.detach(), "bits_per_code": bits.detach()}

    def eval_batch_size(self) -> int:
        return 250

    def eval_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """-ELBO = the PixelCNN's NLL of the code map + the decoder's NLL of x given it, per image."""
        codes = self.codes(batch.x)
        t = self.vqvae.code_terms(batch.x, codes)
        prior_nll = -self.prior.log_prob(codes).double()
        return {**t, "prior_nll": prior_nll, "neg_elbo": prior_nll + t["decoder_nll"]}

    def report(self, terms):
        out = VQVAE.report(self.vqvae, terms)  # the ELBO from this model's terms: the PixelCNN's code NLL
        out["test_prior_bits_per_code"] = float(terms["prior_nll"].mean()) / (terms["codes"].shape[1] * math.log(2))
        out["test_uniform_prior_elbo_bits_per_dim"] = self.bits_per_dim(
            float(terms["decoder_nll"].mean()) + terms["codes"].shape[1] * math.log(self.vqvae.cfg.codebook_size))
        return out

    def protocol(self, data, n):
        return {**self.vqvae.protocol(data, n), "code_prior": "pixelcnn"}

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, **kwargs):
        """Code maps drawn by the PixelCNN (h*w passes), decoded by the VQ-VAE."""
        return self.vqvae.decode(self.prior.sample(n, generator=generator))

    @torch.no_grad()
    def visuals(self, fixed, data):
        from genlab import viz

        x = self.sample(fixed["n"], generator=fixed.get("generator"))
        return {"samples": viz.grid(x, nrow=fixed.get("nrow")), **self.vqvae.visuals(fixed, data)}
