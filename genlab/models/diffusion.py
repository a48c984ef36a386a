"""The diffusion template: a denoiser network net(x_t, t[, y]) trained by regression and sampled by
integrating a reverse process; a variant states its loss, its sampler and its likelihood.

- DDPM (Ho et al. 2020): the forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) over
  T steps with a linear (Ho) or cosine (Nichol & Dhariwal 2021) schedule; the network predicts eps,
  x_0 or v (Salimans & Ho 2022) under the simple loss, optionally min-SNR-gamma weighted (Hang et al.
  2023); ancestral sampling (respaced to fewer steps, Nichol & Dhariwal) and DDIM (Song et al. 2021)
  with eta; the variational bound L_T + sum L_{t-1} + L_0 (discretised decoder) as its NLL.
- Flow matching (Lipman et al. 2023) on the linear path x_t = t x_1 + (1 - t) x_0 between noise x_0
  and data x_1 (rectified flow, Liu et al. 2023): a velocity loss, an Euler or Heun ODE sampler, and
  the exact ODE log-density (Hutchinson's trace for images) of dequantised data as its NLL.

Written once here: the network and its generator EMA (samples and evaluation use it), the
class-conditional variant with classifier-free guidance (Ho & Salimans 2022; model.cond_drop in
training, guidance=w at sampling: w=0 unconditional, 1 conditional, >1 guided), the step bound the
trainer sets on periodic samples, and the pictures (samples, denoising trajectories, point clouds at
several t). The likelihood template turns log_prob into the test NLL in nats and bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from genlab import nets
from genlab.metrics.likelihood import PIXEL_BIN, dequantize_pixels
from genlab.models.base import Batch, Step, StepContext
from genlab.models.ema import EMA
from genlab.models.likelihood import LikelihoodModel

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class DenoiserConfig:
    """The denoiser network: arch auto = the MLP for points, the U-Net for images."""

    arch: str = "auto"
    base_channels: int = 16  # U-Net width of the first level
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # one entry per resolution
    num_res_blocks: int = 1
    attention: bool = True  # self-attention at the lowest resolution
    dropout: float = 0.0
    groups: int = 8  # group norm groups
    hidden: int = 128  # MLP width
    depth: int = 3  # MLP residual layers


@dataclass
class DiffusionBaseConfig:
    name: str = "diffusion"
    net: DenoiserConfig = field(default_factory=DenoiserConfig)
    ema_decay: Optional[float] = 0.999  # null: sample from the trained weights
    conditional: bool = False  # class-conditional (labelled data), with classifier-free guidance
    cond_drop: float = 0.1  # share of training labels replaced by the null label
    guidance: float = 1.0  # w: eps_u + w (eps_c - eps_u); 0 = unconditional, 1 = conditional
    sampler: str = "auto"
    sample_steps: Optional[int] = None  # null: the sampler's own (T for ancestral DDPM)
    eval_limit: int = 1000  # test examples of evaluate()
    eval_batch: int = 100  # test examples per batch of the NLL
    trajectory_frames: int = 8  # x_t frames per row of the denoising-trajectory picture
    progress: bool = True  # a bar over the denoising steps (on a terminal)


class Diffusion(LikelihoodModel):
    """Template: the denoiser, its EMA, label dropout, guidance and the pictures; hooks below."""

    Config = DiffusionBaseConfig
    key = "denoiser"
    sample_options = ("steps", "guidance")
    #: the sampler names this variant knows; the first is what `auto` means
    SAMPLERS: tuple = ()

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if cfg.sampler != "auto" and cfg.sampler not in cls.SAMPLERS:
            return f"model.sampler must be one of auto, {', '.join(cls.SAMPLERS)}; got {cfg.sampler}"
        if cfg.sample_steps is not None and cfg.sample_steps < 1:
            return f"model.sample_steps must be >= 1 (or null for the sampler's own), got {cfg.sample_steps}"
        if cfg.ema_decay is not None and not 0 <= cfg.ema_decay < 1:
            return f"model.ema_decay must be in [0, 1) (or null for no EMA), got {cfg.ema_decay}"
        if not 0 <= cfg.cond_drop < 1:
            return f"model.cond_drop must be in [0, 1), got {cfg.cond_drop}"
        if cfg.conditional and not spec.num_classes:
            return "model.conditional=true needs a labelled dataset; use model.conditional=false"
        if not cfg.conditional and cfg.guidance != 1.0:
            return "model.guidance applies to class-conditional models; set model.conditional=true"
        if min(cfg.eval_limit, cfg.eval_batch, cfg.trajectory_frames) < 1:
            return "model.eval_limit, model.eval_batch and model.trajectory_frames must be >= 1"
        net = cfg.net
        if net.arch not in ("auto", *nets.DENOISERS):
            return f"model.net.arch must be one of auto, {', '.join(nets.DENOISERS)}; got {net.arch}"
        if spec.kind == "image" and net.arch in ("auto", "unet"):
            if not net.channel_mult or min(net.channel_mult) < 1 or net.base_channels < 1:
                return "model.net.channel_mult needs one entry >= 1 per resolution and model.net.base_channels >= 1"
            c, h, w = spec.shape
            halvings = len(net.channel_mult) - 1
            if h != w or h % 2 ** halvings:
                return (f"the U-Net halves {h}x{w} images {halvings} times (model.net.channel_mult="
                        f"{list(net.channel_mult)}); use square images divisible by {2 ** halvings}")
        if spec.kind == "points" and net.arch == "unet":
            return "model.net.arch=unet needs images; use model.net.arch=mlp (or auto) for points"
        return nets.denoiser_settings_problem(net, spec.kind, "model.net", DenoiserConfig()) or cls.check_variant(cfg, spec)

    @classmethod
    def check_variant(cls, cfg, spec) -> str | None:
        """The variant's own checks (None if cfg can work)."""
        return None

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.conditional = bool(cfg.conditional)
        self.null_label = spec.num_classes if self.conditional else None
        self.net = nets.denoiser(cfg.net, spec, spec.num_classes if self.conditional else None)
        self.net_ema = EMA(self.net, cfg.ema_decay, warmup=True) if cfg.ema_decay is not None else None
        self.sampler_name = cfg.sampler if cfg.sampler != "auto" else self.SAMPLERS[0]

    # ---- hooks ----------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """The training loss of a batch (labels already dropped to the null label) and what to log."""
        raise NotImplementedError

    def default_steps(self, sampler: str) -> int:
        """Steps of `sampler` when neither sample_steps nor steps= says."""
        raise NotImplementedError

    def chain(self, x: torch.Tensor, predict, steps: int, sampler: str, eta: float | None, generator):
        """Yield (t in [0, 1] as noise level, x) along the reverse process from the noise x; the last is the sample."""
        raise NotImplementedError

    def max_steps(self) -> int | None:
        """The most sampling steps this variant can take (None: any number)."""
        return None

    # ---- written once ---------------------------------------------------------------------------
    def networks(self):
        return {self.key: self.net}

    def schedule(self):
        return [Step(self.key, self.key, self.train_step, after=self.update_ema)]

    def update_ema(self, logs: dict | None = None) -> None:
        """The training step's `after` hook."""
        if self.net_ema is not None:
            self.net_ema.update(self.net)

    @property
    def sampler_net(self) -> torch.nn.Module:
        """The network that samples and is evaluated: the EMA weights when model.ema_decay is set."""
        return self.net_ema if self.net_ema is not None else self.net

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def train_step(self, batch: Batch, ctx: StepContext):
        y = None
        if self.conditional:
            drop = torch.rand(len(batch), device=batch.x.device) < self.cfg.cond_drop
            y = torch.where(drop, torch.full_like(batch.y, self.null_label), batch.y)
        return self.loss(batch.x, y)

    def latent(self, n, generator=None):
        """The starting noise x_T, flattened (interpolation works on it: DDIM with eta=0 and the ODE are deterministic)."""
        dev = generator.device if generator is not None else self.device
        return torch.randn(n, self.num_dims, generator=generator, device=dev)

    def guided(self, net, y: torch.Tensor | None, w: float):
        """net's output under classifier-free guidance: out_u + w (out_c - out_u) (one pass when w is 0 or 1)."""
        if y is None or w == 1.0:
            return lambda x, t: net(x, t, y)
        null = torch.full_like(y, self.null_label)
        if w == 0.0:
            return lambda x, t: net(x, t, null)

        def both(x, t):
            out_c, out_u = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
            return out_u + w * (out_c - out_u)
        return both

    def sampling_problem(self, steps=None, eta=None, guidance=None) -> str | None:
        """Why these sampling settings cannot work on this model (None if they can)."""
        problem = super().sampling_problem(steps=steps, eta=eta, guidance=guidance)
        if problem:
            return problem
        if steps is not None:
            top = self.max_steps()
            if steps < 1 or (top is not None and steps > top):
                return f"steps must be in 1..{top} (model.timesteps), got {steps}" if top else \
                    f"steps must be >= 1, got {steps}"
        if eta is not None and eta < 0:
            return f"eta must be >= 0 (0 = deterministic DDIM, 1 = ancestral), got {eta}"
        if guidance is not None and not self.conditional:
            return (f"guidance= needs a class-conditional model; this {self.cfg.name} run is unconditional "
                    "(train with model.conditional=true)")
        return None

    def resolve(self, steps, sampler: str | None = None) -> tuple[str, int]:
        """(sampler, steps) of one sampling call: steps= or model.sample_steps, capped by the trainer's bound."""
        sampler = sampler or self.sampler_name
        steps = int(steps or self.cfg.sample_steps or self.default_steps(sampler))
        if self.steps_bound is not None:
            steps = min(steps, int(self.steps_bound))
        return sampler, steps

    def labels_for(self, n: int, labels) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            return torch.arange(n, device=self.device) % self.spec.num_classes
        return labels.to(self.device).long()

    def start(self, n: int, noise, generator) -> torch.Tensor:
        z = noise if noise is not None else self.latent(n, generator)
        return z.to(self.device, next(self.net.parameters()).dtype).reshape(n, *self.spec.shape)

    @torch.no_grad()
    def trajectory(self, n, *, generator=None, labels=None, noise=None, steps=None, eta=None, guidance=None):
        """Every state (t, x_t) of the reverse chain from noise to samples."""
        problem = self.sampling_problem(steps, eta, guidance)
        if problem:
            from genlab.errors import GenlabError

            raise GenlabError(problem)
        sampler, steps = self.resolve(steps, "ddim" if eta is not None and "ddim" in self.SAMPLERS else None)
        w = self.cfg.guidance if guidance is None else float(guidance)
        predict = self.guided(self.sampler_net, self.labels_for(n, labels), w)
        from genlab.progress import bar

        x = self.start(n, noise, generator)
        with bar(steps, f"{self.cfg.name} sampling", "step", None if self.cfg.progress else False) as b:
            for t, x in self.chain(x, predict, steps, sampler, eta, generator):
                yield t, x
                b.update()

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, steps=None, eta=None, guidance=None, **kwargs):
        """n samples: the last state of the reverse chain (steps=, eta= for DDIM, guidance= for conditional models)."""
        x = None
        for _, x in self.trajectory(n, generator=generator, labels=labels, noise=noise, steps=steps, eta=eta,
                                    guidance=guidance):
            pass
        return self.finish(x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1, 1) if self.spec.kind == "image" else x

    # ---- pictures -------------------------------------------------------------------------------
    @torch.no_grad()
    def visuals(self, fixed, data):
        """Samples, the denoising trajectory of a few seeds (x_t along the chain) and, for points, the cloud at several t."""
        from genlab import viz

        n = fixed["n"]
        labels = self.labels_for(n, fixed.get("labels"))
        states = list(self.trajectory(n, generator=fixed.get("generator"), labels=labels, noise=fixed.get("noise")))
        frames = self.cfg.trajectory_frames
        picks = sorted({round(i * (len(states) - 1) / max(1, frames - 1)) for i in range(frames)})
        x = self.finish(states[-1][1])
        if data.kind == "points":
            out = {"samples": viz.scatter(x, data.test_x[:2000], extent=data.extent)}
            if data.shape[0] == 2:
                clouds = [viz.scatter(states[i][1], data.test_x[:2000], extent=data.extent, size=160) for i in picks]
                out["point_cloud_over_t"] = torch.cat(clouds, 2)
            return out
        out = {"samples": viz.grid(x, nrow=fixed.get("nrow"))}
        seeds = min(4, n)
        rows = torch.stack([self.finish(states[i][1][:seeds]) for i in picks], 1).flatten(0, 1)
        out["denoising_trajectory"] = viz.grid(rows, nrow=len(picks))
        return out


# ============================================================================================
# DDPM
# ============================================================================================

SCHEDULES = ("linear", "cosine")
TARGETS = ("eps", "x0", "v")
VARIANCES = ("small", "large")


def beta_schedule(name: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02, s: float = 0.008) -> torch.Tensor:
    """beta_1..beta_T (float64): linear from beta_start to beta_end (Ho), or the cosine abar (Nichol & Dhariwal)."""
    if name == "linear":
        # Ho et al.'s 1e-4 .. 0.02 is for T = 1000; other T keep the same abar_T by scaling.
        scale = 1000.0 / T
        return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


@dataclass
class DDPMConfig(DiffusionBaseConfig):
    name: str = "ddpm"
    timesteps: int = 1000  # T
    schedule: str = "linear"  # linear (Ho) | cosine (Nichol & Dhariwal)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    target: str = "eps"  # what the network predicts: eps | x0 | v
    min_snr_gamma: Optional[float] = None  # min-SNR-gamma loss weight (e.g. 5), null = the simple loss
    variance: str = "large"  # reverse variance sigma_t^2: large (beta_t) | small (the posterior's)
    eta: float = 0.0  # DDIM's eta (sampler=ddim): 0 deterministic, 1 the posterior's variance
    clip_denoised: bool = True  # clip the predicted x_0 to [-1, 1] while sampling images
    bound_terms: Optional[int] = None  # NLL bound: null = all T terms; k = an unbiased estimate from k of them


class DDPM(Diffusion):
    """eps/x0/v-prediction over a discrete forward process; ancestral or DDIM sampling; the variational bound."""

    Config = DDPMConfig
    sample_options = ("steps", "eta", "guidance")
    SAMPLERS = ("ddpm", "ddim")

    @classmethod
    def check_variant(cls, cfg, spec):
        if cfg.schedule not in SCHEDULES:
            return f"model.schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule}"
        if cfg.target not in TARGETS:
            return f"model.target must be one of {', '.join(TARGETS)}, got {cfg.target}"
        if cfg.variance not in VARIANCES:
            return f"model.variance must be one of {', '.join(VARIANCES)}, got {cfg.variance}"
        if cfg.timesteps < 2:
            return f"model.timesteps must be >= 2, got {cfg.timesteps}"
        if cfg.schedule == "linear" and (not 0 < cfg.beta_start <= cfg.beta_end
                                         or cfg.beta_end * 1000.0 / cfg.timesteps >= 1):
            return ("model.beta_start and model.beta_end need 0 < beta_start <= beta_end and beta_end * 1000 / "
                    f"model.timesteps < 1 (the linear schedule scales to T), got {cfg.beta_start}, {cfg.beta_end}, "
                    f"T={cfg.timesteps}")
        if cfg.sample_steps is not None and cfg.sample_steps > cfg.timesteps:
            return f"model.sample_steps must be <= model.timesteps ({cfg.timesteps}), got {cfg.sample_steps}"
        if cfg.min_snr_gamma is not None and cfg.min_snr_gamma <= 0:
            return f"model.min_snr_gamma must be > 0 (or null for the simple loss), got {cfg.min_snr_gamma}"
        if cfg.eta < 0:
            return f"model.eta must be >= 0, got {cfg.eta}"
        if cfg.bound_terms is not None and not 1 <= cfg.bound_terms <= cfg.timesteps:
            return f"model.bound_terms must be in 1..{cfg.timesteps} (or null for all), got {cfg.bound_terms}"
        return None

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        T = int(cfg.timesteps)
        betas = beta_schedule(cfg.schedule, T, cfg.beta_start, cfg.beta_end)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)
        # The schedule is a function of the config: buffers so it moves with the model, not saved; in
        # float64, cast to the input's precision where used.
        for name, v in {"betas": betas, "abar": abar, "abar_prev": abar_prev, "post_var": post_var,
                        "post_c0": betas * abar_prev.sqrt() / (1 - abar),
                        "post_ct": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)}.items():
            self.register_buffer(name, v, persistent=False)
        self.T = T

    def max_steps(self):
        return self.T

    def default_steps(self, sampler):
        return self.T if sampler == "ddpm" else 50

    # ---- the forward process --------------------------------------------------------------------
    def _at(self, v: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t an index 0..T-1 (timestep t+1)."""
        a = self._at(self.abar, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at(self.post_c0, t, xt) * x0 + self._at(self.post_ct, t, xt) * xt
        return mean, self._at(self.post_var, t, xt).expand_as(xt)

    def target(self, x0, eps, t):
        """What the network regresses onto: eps, x_0 or v = sqrt(abar) eps - sqrt(1 - abar) x_0."""
        if self.cfg.target == "eps":
            return eps
        if self.cfg.target == "x0":
            return x0
        a = self._at(self.abar, t, x0)
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    def time_input(self, t: torch.Tensor) -> torch.Tensor:
        return (t.float() + 1) / self.T

    def split(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0, eps) from the network's output under the configured target, x_0 clipped to [-1, 1] if asked."""
        a = self._at(self.abar, t, xt)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        if self.cfg.target == "eps":
            eps, x0 = out, (xt - sb * out) / sa
        elif self.cfg.target == "x0":
            x0, eps = out, (xt - sa * out) / sb
        else:
            x0, eps = sa * xt - sb * out, sb * xt + sa * out
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (xt - sa * x0) / sb
        return x0, eps

    def weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """min-SNR-gamma weights in the target's own loss (Hang et al. 2023), None for the simple loss."""
        g = self.cfg.min_snr_gamma
        if g is None:
            return None
        a = self.abar[t]
        snr = a / (1 - a)
        clipped = snr.clamp(max=g)
        return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.cfg.target].float()

    def draw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training noise of a batch: timestep indices t ~ U{0..T-1} and eps ~ N(0, I)."""
        return torch.randint(0, self.T, (len(x),), device=x.device), torch.randn_like(x)

    def loss(self, x, y):
        t, eps = self.draw(x)
        out = self.net(self.q_sample(x, t, eps), self.time_input(t), y)
        per = (out.float() - self.target(x, eps, t)).pow(2).flatten(1).mean(1)
        w = self.weight(t)
        mse = per.mean()
        loss = mse if w is None else (w * per).mean()
        return loss, {"mse": mse.detach()}

    # ---- sampling -------------------------------------------------------------------------------
    def timesteps_for(self, steps: int) -> list[int]:
        """`steps` indices of 0..T-1, evenly spaced, from T-1 down to 0 (respacing, Nichol & Dhariwal)."""
        if steps >= self.T:
            return list(range(self.T - 1, -1, -1))
        idx = torch.linspace(0, self.T - 1, steps, dtype=torch.float64).round().long().unique()
        return idx.flip(0).tolist()

    def chain(self, x, predict, steps, sampler, eta, generator):
        """DDIM's update x_prev = sqrt(abar') x0 + sqrt(1 - abar' - s^2) eps + s z over the respaced steps.

        ddpm (ancestral): the mean is the posterior's (DDIM with eta = 1), the noise s^2 = sigma_t^2 of
        model.variance; ddim: s = eta times the posterior's standard deviation."""
        clip = self.cfg.clip_denoised and self.spec.kind == "image"
        eta = self.cfg.eta if eta is None else float(eta)
        ts = self.timesteps_for(steps)
        for i, t in enumerate(ts):
            prev = ts[i + 1] if i + 1 < len(ts) else -1
            tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
            x0, eps = self.split(predict(x, self.time_input(tt)).float(), x, tt, clip)
            a = self.abar[t]
            a_prev = self.abar[prev] if prev >= 0 else torch.ones((), device=x.device)
            post = (1 - a_prev) / (1 - a) * (1 - a / a_prev)  # the posterior's variance over this stride
            if sampler == "ddim":
                var_mean, var_noise = (eta ** 2) * post, (eta ** 2) * post
            else:
                var_mean = post
                var_noise = post if self.cfg.variance == "small" else (1 - a / a_prev)
            x = a_prev.sqrt() * x0 + (1 - a_prev - var_mean).clamp(min=0).sqrt() * eps
            if prev >= 0:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + var_noise.sqrt() * z
            yield (prev + 1) / self.T, x

    # ---- the variational bound ------------------------------------------------------------------
    def decoder_var(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t^2 of p(x_{t-1} | x_t): beta_t (large) or the posterior's (small; at t=1 that of t=2)."""
        if self.cfg.variance == "large":
            return self.betas[t]
        return torch.where(t == 0, self.post_var[1], self.post_var[t])

    def bound_term(self, x0: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
        """L_{t-1} per example in nats for index t: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)), or L_0 = -log p(x_0|x_1) at t=0."""
        xt = self.q_sample(x0, t, torch.randn_like(x0))
        x0, xt64 = x0.double(), xt.double()
        x0_hat, _ = self.split(self.sampler_net(xt, self.time_input(t), y).double(), xt64, t, False)
        mean_q, var_q = self.posterior(x0, xt64, t)
        mean_p, _ = self.posterior(x0_hat, xt64, t)
        var_p = self.decoder_var(t).view(-1, *([1] * (xt.dim() - 1)))
        kl = 0.5 * (var_p.log() - var_q.clamp_min(1e-30).log() + (var_q + (mean_q - mean_p) ** 2) / var_p - 1)
        kl = kl.flatten(1).sum(1)
        nll0 = -self.decoder_log_prob(x0, mean_p, var_p).flatten(1).sum(1)
        return torch.where(t == 0, nll0, kl)

    def decoder_log_prob(self, x0, mean, var):
        """log p(x_0 | x_1): a Gaussian discretised to the 256 levels (Ho et al.) on images, the density on points."""
        if self.spec.kind != "image":
            return -0.5 * ((x0 - mean) ** 2 / var + var.log() + _LOG_2PI)
        std = var.sqrt()
        normal = torch.distributions.Normal(torch.zeros((), dtype=x0.dtype, device=x0.device), 1.0)
        upper = torch.where(x0 > 1 - PIXEL_BIN / 2, torch.full_like(x0, math.inf), (x0 + PIXEL_BIN / 2 - mean) / std)
        lower = torch.where(x0 < -1 + PIXEL_BIN / 2, torch.full_like(x0, -math.inf), (x0 - PIXEL_BIN / 2 - mean) / std)
        # log(Phi(u) - Phi(l)) through the tail that keeps precision
        p = (normal.cdf(upper) - normal.cdf(lower)).clamp_min(1e-30)
        return p.log()

    def prior_term(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per example."""
        a = self.abar[-1]
        mean, var = a.sqrt() * x0.double(), 1 - a
        return (0.5 * (var + mean ** 2 - 1 - var.log())).flatten(1).sum(1)

    def bound(self, x0: torch.Tensor, y=None, terms: int | None = None) -> torch.Tensor:
        """-ELBO per example in nats: L_T + sum_t L_{t-1} + L_0 over all T terms, or an unbiased estimate
        from `terms` stratified indices (T times their mean)."""
        n = len(x0)
        if terms is None or terms >= self.T:
            total = torch.zeros(n, dtype=torch.float64, device=x0.device)
            for t in range(self.T):
                total += self.bound_term(x0, torch.full((n,), t, device=x0.device, dtype=torch.long), y)
            return self.prior_term(x0) + total
        strata = torch.arange(terms, device=x0.device, dtype=torch.float64)
        parts = []
        for j in strata:
            u = torch.rand(n, device=x0.device, dtype=torch.float64)
            t = ((j + u) * self.T / terms).long().clamp(max=self.T - 1)
            parts.append(self.bound_term(x0, t, y))
        return self.prior_term(x0) + self.T * torch.stack(parts).mean(0)

    def bound_terms(self) -> int | None:
        """Terms of the bound: evaluate()'s k when given (the trainer's bound), else model.bound_terms."""
        k = self.eval_k_override or self.cfg.bound_terms
        return int(k) if k else None

    def log_prob(self, x, y=None):
        """The evidence lower bound of log P(x) (8-bit images: a discrete probability; points: a density)."""
        return -self.bound(x, y if self.conditional else None, self.bound_terms())

    def eval_batch_size(self):
        return self.cfg.eval_batch

    def protocol(self, data, n):
        k = self.bound_terms()
        return {**super().protocol(data, n), "nll": "variational bound (upper bound on the NLL)",
                "bound_terms": k or self.T, "timesteps": self.T, "weights": "ema" if self.net_ema else "trained"}


# ============================================================================================
# Flow matching
# ============================================================================================

@dataclass
class FlowMatchingConfig(DiffusionBaseConfig):
    name: str = "flow_matching"
    likelihood_steps: int = 50  # Heun steps of the ODE log-density (evaluate's k overrides)
    hutchinson: str = "auto"  # divergence: auto (exact up to 4 dims, else Hutchinson) | exact | hutchinson


class FlowMatching(Diffusion):
    """A velocity field v(x_t, t) regressed onto x_1 - x_0 on the linear path; ODE sampling and density."""

    Config = FlowMatchingConfig
    SAMPLERS = ("heun", "euler")

    @classmethod
    def check_variant(cls, cfg, spec):
        if cfg.likelihood_steps < 1:
            return f"model.likelihood_steps must be >= 1, got {cfg.likelihood_steps}"
        if cfg.hutchinson not in ("auto", "exact", "hutchinson"):
            return f"model.hutchinson must be auto, exact or hutchinson, got {cfg.hutchinson}"
        return None

    def default_steps(self, sampler):
        return 50

    def draw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training noise of a batch: times t ~ U(0, 1) and the path's start x_0 ~ N(0, I)."""
        return torch.rand(len(x), device=x.device), torch.randn_like(x)

    def loss(self, x, y):
        t, noise = self.draw(x)
        tv = t.view(-1, *([1] * (x.dim() - 1)))
        xt = tv * x + (1 - tv) * noise
        out = self.net(xt, t, y)
        loss = (out.float() - (x - noise)).pow(2).flatten(1).mean(1).mean()
        return loss, {"mse": loss.detach()}

    def chain(self, x, predict, steps, sampler, eta, generator):
        """x' = x + h v(x, t) (Euler), or Heun's trapezoid (one Euler step corrected), from t = 0 to 1."""
        h = 1.0 / steps
        for i in range(steps):
            t0 = torch.full((len(x),), i * h, device=x.device)
            v0 = predict(x, t0).float()
            nxt = x + h * v0
            if sampler == "heun":
                v1 = predict(nxt, t0 + h).float()
                nxt = x + 0.5 * h * (v0 + v1)
            x = nxt
            yield 1.0 - (i + 1) * h, x

    # ---- the ODE log-density --------------------------------------------------------------------
    def divergence(self, field, x, t, probe):
        """(v(x, t), div v): exact (one backward pass per dimension) or Hutchinson's estimate with a Rademacher probe."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = field(x, t).float()
            if probe is None:
                flat = v.flatten(1)
                div = sum(torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)[0].flatten(1)[:, i]
                          for i in range(flat.shape[1]))
            else:
                div = (torch.autograd.grad(v, x, probe)[0] * probe).flatten(1).sum(1)
        return v.detach(), div.detach()

    def ode_log_density(self, x1: torch.Tensor, y=None, steps: int | None = None) -> torch.Tensor:
        """log p_1(x_1) = log N(x_0; 0, I) - int_0^1 div v dt, integrating from the data back to noise (Heun)."""
        steps = int(steps or self.cfg.likelihood_steps)
        field = lambda x, t: self.sampler_net(x, t, y)  # noqa: E731
        exact = self.cfg.hutchinson == "exact" or (self.cfg.hutchinson == "auto" and self.num_dims <= 4)
        probe = None if exact else torch.randint(0, 2, x1.shape, device=x1.device).float() * 2 - 1
        h = 1.0 / steps
        x, integral = x1.float(), torch.zeros(len(x1), dtype=torch.float64, device=x1.device)
        for i in range(steps):
            t1 = torch.full((len(x),), 1.0 - i * h, device=x.device)
            v1, d1 = self.divergence(field, x, t1, probe)
            guess = x - h * v1
            v0, d0 = self.divergence(field, guess, t1 - h, probe)
            x = x - 0.5 * h * (v1 + v0)
            integral += 0.5 * h * (d1 + d0).double()
        log_p0 = -0.5 * (x.double().flatten(1) ** 2 + _LOG_2PI).sum(1)
        return log_p0 - integral

    def likelihood_steps(self) -> int:
        return int(self.eval_k_override or self.cfg.likelihood_steps)

    def log_prob(self, x, y=None):
        """log density of uniformly dequantised images (plus nll_offset: a bound on log P), or of points."""
        if self.spec.kind == "image":
            x = dequantize_pixels(x)
        return self.ode_log_density(x, y if self.conditional else None, self.likelihood_steps())

    def nll_offset(self):
        return -self.num_dims * math.log(PIXEL_BIN) if self.spec.kind == "image" else 0.0

    def eval_batch_size(self):
        return self.cfg.eval_batch

    def protocol(self, data, n):
        exact = self.cfg.hutchinson == "exact" or (self.cfg.hutchinson == "auto" and self.num_dims <= 4)
        return {**super().protocol(data, n),
                "nll": "ODE log-density" + (" of uniformly dequantised pixels (a bound)" if self.spec.kind == "image" else ""),
                "ode_steps": self.likelihood_steps(), "divergence": "exact" if exact else "hutchinson",
                "weights": "ema" if self.net_ema else "trained"}

