"""The variational auto-encoder family (Kingma & Welling 2014; beta-VAE, Higgins et al. 2017; IWAE,
Burda et al. 2016): a Gaussian encoder q(z|x) that predicts a log-variance, reparameterised samples,
and a decoder p(x|z) that is a proper likelihood of the data it is given:

- bernoulli: binarised images (dataset.binarize=static|dynamic), exact log P(x|z);
- logistic: 8-bit images, a discretised logistic per sub-pixel over the 256 levels, exact log P(x|z);
- gaussian: points (a density), or 8-bit images, where the density of uniformly dequantised pixels
  plus D*log(bin width) bounds the discrete log-likelihood (as for the flows).

With model.prior=vamp (Tomczak & Welling 2018) the prior is the VampPrior p(z) = 1/K sum_k q(z | u_k),
a mixture of the encoder's posteriors at K learned pseudo-inputs u_k (model.prior_components); its KL
term is then the single-sample estimate log q(z|x) - log p(z).

So every number is in nats of the data the run was trained on, and 8-bit numbers are comparable with
RealNVP, Glow and PixelCNN in bits/dim. Training minimises -ELBO (reconstruction + beta * KL, with
KL warm-up and free bits) or, with iwae_k > 1, the IWAE bound. The test NLL is an importance-sampled
estimate with eval_k samples from q (log-mean-exp of the weights), an upper bound on the true NLL in
expectation that tightens as eval_k grows; the ELBO is reported next to it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from genlab import nets
from genlab.metrics.likelihood import PIXEL_BIN, dequantize_pixels, logmeanexp
from genlab.models.base import Batch, NetConfig, StepContext, conv_size_problem
from genlab.models.likelihood import LikelihoodModel
from genlab.nets.inference import inference_copy
from genlab.nets.pixelcnn import discretized_logistic_log_prob

_LOG_2PI = math.log(2 * math.pi)
# The conv VAE's fastest chunk on a CPU (scripts/bench_nll.py: smaller batches stay in cache; 4096 took
# 1.4x the CPU time); a GPU wants large batches.
CPU_EVAL_CHUNK = 64


@dataclass
class VAEConfig:
    name: str = "vae"
    z_dim: int = 16
    # auto: bernoulli for binarised images, logistic for 8-bit images, gaussian for points
    decoder_dist: str = "auto"
    # Gaussian decoder: fixed std if set, else a learned per-dimension log-std
    gaussian_std: Optional[float] = None
    kl_weight: float = 1.0  # beta; beta-VAE uses > 1
    kl_warmup_steps: int = 0  # beta ramps linearly from 0 to kl_weight over these steps
    free_bits: float = 0.0  # nats per latent dimension below which the KL is not penalised
    iwae_k: int = 1  # importance samples in the training objective (1 = the ELBO)
    eval_k: int = 1000  # importance samples for the test NLL estimate
    eval_limit: int = 1000  # test examples used by evaluate()
    # decoder evaluations per forward pass during evaluation; null = CPU_EVAL_CHUNK on a CPU, 4096 elsewhere
    eval_chunk: Optional[int] = None
    prior: str = "standard"  # standard (N(0, I)) | vamp (the VampPrior)
    prior_components: int = 500  # prior=vamp: K pseudo-inputs
    encoder: NetConfig = field(default_factory=NetConfig)
    decoder: NetConfig = field(default_factory=NetConfig)


DISTS = ("auto", "bernoulli", "logistic", "gaussian")
PRIORS = ("standard", "vamp")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL per example and latent dimension, (N, z_dim)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def log_normal(z: torch.Tensor, mu=None, logvar=None) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dimension (standard normal when mu is None)."""
    if mu is None:
        return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)
    return -0.5 * ((z - mu).pow(2) * (-logvar).exp() + logvar + _LOG_2PI).sum(-1)


def _full(t: torch.Tensor) -> torch.Tensor:
    """Likelihood arithmetic in at least float32 (autocast may hand us half precision)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def resolve_decoder_dist(dist: str, spec) -> str:
    """The decoder distribution `auto` stands for on this data."""
    if dist != "auto":
        return dist
    if spec.kind != "image":
        return "gaussian"
    return "bernoulli" if spec.binarized else "logistic"


class VAE(LikelihoodModel):
    """x -> q(z|x) -> z -> p(x|z); loss = reconstruction NLL + beta * KL, or the IWAE bound."""

    Config = VAEConfig
    key = "vae"
    accepts_temperature = True
    encodes = True

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if cfg.decoder_dist not in DISTS:
            return f"model.decoder_dist must be one of {', '.join(DISTS)}, got {cfg.decoder_dist}"
        dist = resolve_decoder_dist(cfg.decoder_dist, spec)
        if dist in ("bernoulli", "logistic") and spec.kind == "points":
            return f"model.decoder_dist={dist} needs image data; use model.decoder_dist=gaussian for points"
        if dist == "bernoulli" and not spec.binarized:
            return ("model.decoder_dist=bernoulli is not a likelihood of grey-level images; set "
                    "dataset.binarize=dynamic (or static), or use model.decoder_dist=logistic")
        if cfg.z_dim < 1 or cfg.kl_weight < 0:
            return "model.z_dim must be >= 1 and model.kl_weight >= 0"
        problem = (nets.settings_problem(cfg.encoder, spec.kind, "discriminator", "model.encoder", NetConfig())
                   or nets.settings_problem(cfg.decoder, spec.kind, "generator", "model.decoder", NetConfig()))
        if problem:
            return problem
        if cfg.gaussian_std is not None and cfg.gaussian_std <= 0:
            return f"model.gaussian_std must be > 0, got {cfg.gaussian_std}"
        chunk_ok = cfg.eval_chunk is None or cfg.eval_chunk >= 1
        if cfg.iwae_k < 1 or cfg.eval_k < 1 or cfg.eval_limit < 1 or not chunk_ok:
            return "model.iwae_k, model.eval_k, model.eval_limit and model.eval_chunk must be >= 1"
        if cfg.kl_warmup_steps < 0 or cfg.free_bits < 0:
            return "model.kl_warmup_steps and model.free_bits must be >= 0"
        if cfg.free_bits > 0 and cfg.iwae_k > 1:
            return "model.free_bits applies to the ELBO only; use it with model.iwae_k=1"
        if cfg.prior not in PRIORS:
            return f"model.prior must be one of {', '.join(PRIORS)}, got {cfg.prior}"
        if cfg.prior == "vamp" and cfg.prior_components < 1:
            return f"model.prior_components must be >= 1, got {cfg.prior_components}"
        if cfg.prior == "vamp" and nets.resolve_norm(cfg.encoder.get("norm", "none"),
                                                     nets.resolve_arch(cfg.encoder.arch, spec.kind)) == "batch":
            # Found by a 5-minute run whose test NLL went from 7.9 to 14.4 bits/dim while its training
            # ELBO improved: the pseudo-inputs, a batch of their own, were normalised by their own
            # statistics in training and by running statistics they had polluted in evaluation.
            return ("model.prior=vamp encodes its pseudo-inputs as a batch of their own, which batch norm in the "
                    "encoder normalises by their own statistics (and mixes into the running statistics the "
                    "evaluation uses): set model.encoder.norm=layer (or none), as model=vampprior does")
        if cfg.prior == "vamp" and cfg.free_bits > 0:
            return "model.free_bits needs the KL per latent dimension, which the VampPrior has not; use prior=standard"
        if spec.kind == "image" and "conv" in (nets.resolve_arch(cfg.encoder.arch, spec.kind),
                                               nets.resolve_arch(cfg.decoder.arch, spec.kind)):
            return conv_size_problem(spec.shape)
        return None

    def __init__(self, cfg, spec):
        cfg.decoder_dist = resolve_decoder_dist(cfg.decoder_dist, spec)
        super().__init__(cfg, spec)
        self.dist = cfg.decoder_dist
        self.encoder = nets.discriminator(cfg.encoder, spec, out_dim=2 * cfg.z_dim)
        out_spec = spec
        if self.dist == "logistic":  # a mean and a log-scale per sub-pixel
            out_spec = dataclasses.replace(spec, shape=(2 * spec.shape[0], *spec.shape[1:]))
        self.decoder = nets.generator(cfg.decoder, out_spec, cfg.z_dim, out_activation="none")
        if self.dist == "gaussian" and cfg.gaussian_std is None:
            self.log_std = nn.Parameter(torch.zeros(*spec.shape))
        if cfg.prior == "vamp":
            # Pseudo-inputs in data space near its centre (Tomczak & Welling initialise them small, too).
            self.pseudo_inputs = nn.Parameter(0.01 * torch.randn(cfg.prior_components, *spec.shape))

    def networks(self):
        return {"vae": self}

    def compile_targets(self):
        return {"encoder": self.encoder, "decoder": self.decoder}

    def latent_shape(self):
        return (self.cfg.z_dim,)

    # ---- the likelihood -----------------------------------------------------------------------
    @property
    def dequantized(self) -> bool:
        """Whether inputs are uniformly dequantised first: a density model of 8-bit images."""
        return self.dist == "gaussian" and self.spec.kind == "image"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input: x itself, or x plus uniform noise inside its 8-bit bin (Gaussian on images)."""
        return dequantize_pixels(x) if self.dequantized else x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) as (mu, logvar)."""
        h = _full(self.encoder(x))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def log_px_z(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example in nats: an exact probability (bernoulli, logistic) or, for the
        Gaussian, a density (points) or a density times the bin volume (dequantised images)."""
        out, x = _full(out), _full(x)
        if self.dist == "bernoulli":
            target = (x.flatten(1) + 1) / 2  # exactly {0, 1} on binarised data
            return -F.binary_cross_entropy_with_logits(out.flatten(1), target, reduction="none").sum(1)
        if self.dist == "logistic":
            # Independent discretised logistics per sub-pixel (PixelCNN++'s likelihood with one
            # component, bins at the 8-bit levels).
            c = x.shape[1]
            return discretized_logistic_log_prob(x, out[:, :c], out[:, c:])
        out, x = out.flatten(1), x.flatten(1)
        log_std = (torch.full_like(out, math.log(self.cfg.gaussian_std)) if self.cfg.gaussian_std is not None
                   else self.log_std.flatten().to(out.dtype).expand_as(out))
        lp = (-0.5 * ((x - out) / log_std.exp()).pow(2) - log_std - 0.5 * _LOG_2PI).sum(1)
        return lp + self.num_dims * math.log(PIXEL_BIN) if self.dequantized else lp

    def prior_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The VampPrior's components (mu, logvar), each (K, z_dim): q(z | u_k) at the pseudo-inputs
        (during evaluate() the ones computed when it started: the weights do not change there)."""
        if self._eval_prior is not None:
            return self._eval_prior
        u = self.pseudo_inputs
        return self.encode(F.hardtanh(u) if self.spec.kind == "image" else u)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) over the last dimension: N(0, I), or the VampPrior's mixture log(1/K sum_k q(z | u_k))."""
        if self.cfg.prior == "standard":
            return log_normal(z)
        mu, logvar = self.prior_components()
        return torch.logsumexp(log_normal(z.unsqueeze(-2), mu, logvar), -1) - math.log(len(mu))

    def kl_weight(self, step: int) -> float:
        """beta at this global step: linear warm-up from 0 to kl_weight over kl_warmup_steps."""
        w = self.cfg.kl_weight
        if self.cfg.kl_warmup_steps > 0:
            w *= min(1.0, step / self.cfg.kl_warmup_steps)
        return w

    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example reconstruction log-likelihood and KL (per dimension too) for one sample."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = self.log_px_z(self.decoder(z), x)
        if self.cfg.prior != "standard":  # no closed form: the single-sample estimate of the KL
            return {"log_px_z": rec, "kl": log_normal(z, mu, logvar) - self.log_prior(z), "mu": mu}
        kl_dim = gaussian_kl_per_dim(mu, logvar)
        return {"log_px_z": rec, "kl": kl_dim.sum(1), "kl_dim": kl_dim, "mu": mu}

    def log_weights(self, x: torch.Tensor, k: int, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x|z), log p(z) - log q(z|x)), each (k, N), for z ~ q(z|x); their sum is the log weight.

        The k samples are drawn in chunks of at most `chunk` decoder evaluations, so k=1000 fits in memory.
        """
        mu, logvar = self.encode(x)
        n = x.shape[0]
        per = max(1, (chunk or k * n) // n)
        decoder = self._eval_decoder if self._eval_decoder is not None else self.decoder
        recs, ratios = [], []
        for i in range(0, k, per):
            s = min(per, k - i)
            z = mu + torch.randn(s, *mu.shape, device=mu.device, dtype=mu.dtype) * (0.5 * logvar).exp()
            recon = decoder(z.reshape(s * n, -1))
            xs = x.unsqueeze(0).expand(s, *x.shape).reshape(s * n, *x.shape[1:])
            recs.append(self.log_px_z(recon, xs).view(s, n))
            ratios.append(self.log_prior(z) - log_normal(z, mu, logvar))
        return torch.cat(recs, 0), torch.cat(ratios, 0)

    def train_step(self, batch: Batch, ctx: StepContext):
        x = self.prepare(batch.x)
        beta = self.kl_weight(ctx.step)
        if self.cfg.iwae_k > 1:
            k = self.cfg.iwae_k
            rec, ratio = self.log_weights(x, k)
            # KL warm-up for the IWAE objective: anneal log p(z) - log q(z|x) inside the weights.
            loss = -logmeanexp(rec + beta * ratio, 0).mean()
            bound = logmeanexp((rec + ratio).detach(), 0).mean()
            elbo = (rec + ratio).detach().mean()
            return loss, {"neg_iwae_bound": -bound, "neg_elbo": -elbo, "kl_weight": torch.tensor(beta)}
        t = self.elbo_terms(x)
        recon, kl = -t["log_px_z"].mean(), t["kl"].mean()
        if self.cfg.free_bits > 0:
            # Kingma et al. (2016): each latent dimension's batch-mean KL costs nothing below free_bits.
            kl_term = t["kl_dim"].mean(0).clamp(min=self.cfg.free_bits).sum()
        else:
            kl_term = kl
        loss = recon + beta * kl_term
        return loss, {"reconstruction": recon.detach(), "kl": kl.detach(), "neg_elbo": (recon + kl).detach(),
                      "kl_weight": torch.tensor(beta)}

    # ---- evaluation (the template averages these terms and adds bits/dim) ------------------------
    _eval_decoder: nn.Module | None = None  # a copy for evaluate()'s decoder passes (not a submodule)
    _eval_prior: tuple[torch.Tensor, torch.Tensor] | None = None  # the VampPrior's components during evaluate()

    def evaluate(self, data, **kwargs):
        """The template's evaluation; on CPU the k decoder passes per image run on the decoder's
        inference copy (nets.inference_copy: the same function, faster there). The VampPrior's K
        components are encoded once, not at every chunk of every image (K = 500 encoder passes each
        time: ten times the decoder's work of a k = 100 estimate)."""
        if next(self.parameters()).device.type == "cpu":
            object.__setattr__(self, "_eval_decoder", inference_copy(self.decoder))
        if self.cfg.prior == "vamp":
            with torch.no_grad():
                object.__setattr__(self, "_eval_prior", self.prior_components())
        try:
            return super().evaluate(data, **kwargs)
        finally:
            object.__setattr__(self, "_eval_decoder", None)
            object.__setattr__(self, "_eval_prior", None)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The importance-sampled estimate of log p(x) with eval_k samples from q (a bound in expectation)."""
        return self._iwae_log_prob(self.prepare(x))

    def _iwae_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        rec, ratio = self.log_weights(x, self.eval_k(), self.eval_chunk())
        return logmeanexp((rec + ratio).double(), 0)

    def eval_k(self) -> int | None:
        """Importance samples of the test NLL: evaluate()'s k when given, else model.eval_k."""
        return int(self.eval_k_override or self.cfg.eval_k)

    def eval_batch_size(self) -> int:
        return max(1, min(100, self.eval_chunk() // max(1, min(self.eval_k(), 50))))

    def eval_chunk(self) -> int:
        """Decoder passes per forward pass of the evaluation: model.eval_chunk, or the fastest measured one."""
        if self.cfg.eval_chunk is not None:
            return int(self.cfg.eval_chunk)
        return CPU_EVAL_CHUNK if next(self.parameters()).device.type == "cpu" else 4096

    def eval_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Test NLL (importance-sampled, eval_k), -ELBO and KL per example, and the posterior means."""
        x = self.prepare(batch.x)
        t = self.elbo_terms(x)
        return {"nll": -self._iwae_log_prob(x), "neg_elbo": -(t["log_px_z"] - t["kl"]).double(),
                "kl": t["kl"].double(), "mu": t["mu"]}

    def report(self, terms):
        return {**super().report(terms), "active_units": float(active_units(terms["mu"]))}

    def protocol(self, data, n: int) -> dict:
        """The template's protocol plus the decoder and k."""
        return {**super().protocol(data, n), "decoder": self.dist, "eval_k": self.eval_k()}

    # ---- sampling and pictures ----------------------------------------------------------------
    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder's mean in data space."""
        if self.dist == "bernoulli":
            return torch.sigmoid(out) * 2 - 1
        if self.dist == "logistic":
            return out[:, : self.spec.shape[0]].clamp(-1, 1)
        return out.clamp(-1, 1) if self.spec.kind == "image" else out

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean images (or points) for latents z."""
        return _full(self.mean_image(self.decoder(z.to(next(self.parameters()).device))))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior means of x: the latent codes an ex-post prior (genlab sample prior=gmm) is fitted to."""
        return self.encode(self.prepare(x))[0]

    def prior_latents(self, eps: torch.Tensor, components: torch.Tensor | None = None) -> torch.Tensor:
        """Latents of the prior from standard normal noise: z = eps, or for the VampPrior
        z = mu_k + std_k * eps with component k of each row (default i mod K, so fixed noise gives fixed samples)."""
        if self.cfg.prior == "standard":
            return eps
        mu, logvar = self.prior_components()
        k = components if components is not None else torch.arange(len(eps), device=eps.device) % len(mu)
        return mu[k] + (0.5 * logvar[k]).exp() * eps

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, temperature=1.0, **kwargs):
        if noise is not None:
            return self.decode(self.prior_latents(noise.to(next(self.parameters()).device) * temperature))
        eps = self.latent(n, generator)
        k = None
        if self.cfg.prior == "vamp":  # a component drawn uniformly for each sample
            k = torch.randint(self.cfg.prior_components, (n,), generator=generator, device=eps.device)
        return self.decode(self.prior_latents(eps * temperature, k))

    @torch.no_grad()
    def visuals(self, fixed, data):
        from genlab import viz

        out = super().visuals(fixed, data)
        if data.kind != "image":
            return out
        x = data.test_x[:32]
        mu, _ = self.encode(x)
        pairs = torch.stack([x, self.decode(mu)], 1).flatten(0, 1)  # original, reconstruction, ...
        out["reconstructions"] = viz.grid(pairs, nrow=8)
        out["interpolations"] = viz.grid(self.decode(interpolate(mu[:16], 10)), nrow=10)
        if self.cfg.z_dim == 2:
            out["manifold"] = viz.grid(self.decode(manifold_grid(16, mu.device)), nrow=16, padding=0)
        return out


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E_q[z_u]) > threshold
    (Burda et al. 2016); the others have collapsed to the prior."""
    if len(mu) < 2:
        return 0
    return int((mu.double().var(0) > threshold).sum())


def interpolate(mu: torch.Tensor, steps: int) -> torch.Tensor:
    """Linear paths in latent space between consecutive pairs of codes: (len(mu)//2 * steps, z_dim)."""
    a, b = mu[0::2], mu[1::2]
    m = min(len(a), len(b))
    t = torch.linspace(0, 1, steps, device=mu.device).view(1, -1, 1)
    return (a[:m, None] * (1 - t) + b[:m, None] * t).reshape(-1, mu.shape[1])


def manifold_grid(size: int, device=None) -> torch.Tensor:
    """A size x size grid of 2-D latents at evenly spaced quantiles of N(0, 1), row-major from the top."""
    q = torch.linspace(0.5 / size, 1 - 0.5 / size, size, device=device)
    v = torch.distributions.Normal(0.0, 1.0).icdf(q)
    yy, xx = torch.meshgrid(v.flip(0), v, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
