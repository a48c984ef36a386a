"""The GAN template. One class plays every unconditional game: the loss table (losses.py), the number
of critic steps, weight clipping, the gradient penalty, R1 and the generator EMA are config values,
so GAN, WGAN, WGAN-GP and RaGAN are YAML files. Variants (cGAN, AC-GAN, InfoGAN, EBGAN) override
small hooks (how G and D are built, how D's heads score a batch, extra terms for each player) and so
inherit every regulariser written here.

Everything D sees (real, fake, interpolates, R1's reals, the heat-map plane) goes through one method,
`discriminate(x, cond)`: the model's augmentation (models/augment.py), then the `heads` hook. No
variant overrides it, so an augmentation or a packing of D's inputs is written once for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from genlab import nets
from genlab.models.augment import Augmentation, augment_problem, build_augment
from genlab.models.base import Batch, Model, NetConfig, Step, StepContext, conv_size_problem
from genlab.models.ema import EMA
from genlab.models.generator_objective import (GeneratorObjective, feature_matching, objective_problem, top_k,
                                               topk_count)
from genlab.models.losses import LOSSES, AdversarialLoss, build_loss, loss_problem
from genlab.models.penalties import (LeCamConfig, Regularisers, clipper, compilable, lazy_r1, lazy_ratio, lecam,
                                     lecam_problem, penalty_terms, r1_term, regulariser_problem)
from genlab.types import plus


@dataclass
class AdversarialConfig(Augmentation, LeCamConfig, Regularisers):
    """The options of every game the template plays, whatever its networks (GANs and CycleGAN)."""

    name: str = "gan"
    loss: str = "ns"
    loss_params: dict[str, Any] = field(default_factory=dict)
    n_critic: int = 1
    # Generator EMA: samples and evaluation use the averaged weights when set (e.g. 0.999).
    ema_decay: Optional[float] = None
    # PacGAN (Lin et al. 2018): D judges m samples at once, joined along features (points) or channels
    # (images), for real and fake batches alike; trainer.batch_size counts samples (batch_size / m packs).
    pack: int = 1


def packed_spec(spec, m: int):
    """The spec of D's packed inputs: m samples joined along features (points) or channels (images)."""
    if m == 1:
        return spec
    import dataclasses

    return dataclasses.replace(spec, shape=(spec.shape[0] * m, *spec.shape[1:]))


def pack(x: torch.Tensor, m: int) -> torch.Tensor:
    """(N, C, ...) -> (N / m, m C, ...): consecutive groups of m samples joined along dim 1 (PacGAN)."""
    if m == 1:
        return x
    return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])


@dataclass
class GANConfig(AdversarialConfig, GeneratorObjective):
    z_dim: int = 64
    generator: NetConfig = field(default_factory=NetConfig)
    discriminator: NetConfig = field(default_factory=NetConfig)


@dataclass
class Side:
    """One side of a discriminator step: the inputs, their condition (labels, codes) and D's outputs."""

    x: torch.Tensor
    cond: Any
    d: torch.Tensor  # adversarial scores
    aux: Any = None  # whatever else D's heads return (class logits, Q's codes, auto-encoder codes)


class GAN(Model):
    """Generator G(z) against discriminator/critic D(x) under an adversarial loss from the table."""

    Config = GANConfig
    #: D's inputs may be packed (model.pack): D scores each input without a per-sample condition or head
    packs: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "discriminate" in cls.__dict__:
            raise TypeError(f"{cls.__name__} overrides GAN.discriminate, the one path of D's inputs; "
                            "override the heads() hook instead")

    @classmethod
    def game_problem(cls, cfg, spec) -> str | None:
        """Why the game's options (AdversarialConfig: loss, augmentation, regularisers, EMA) cannot work."""
        problem = (loss_problem(cfg.loss, cls.loss_params(cfg)) or regulariser_problem(cfg)
                   or augment_problem(cfg, spec, LOSSES[cfg.loss]))
        if problem:
            return problem
        if cfg.n_critic < 1:
            return f"model.n_critic must be >= 1, got {cfg.n_critic}"
        if cfg.pack < 1:
            return f"model.pack must be >= 1 (1 = no packing), got {cfg.pack}"
        if cfg.pack > 1 and not cls.packs:
            return (f"model {cfg.name} scores each sample with a condition or a head of its own, so its "
                    "discriminator inputs cannot be packed; use model.pack=1")
        if cfg.ema_decay is not None and not 0 <= cfg.ema_decay < 1:
            return f"model.ema_decay must be in [0, 1) (or null for no EMA), got {cfg.ema_decay}"
        return None

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        """Why cfg cannot work on data of this spec (None if it can)."""
        problem = cls.game_problem(cfg, spec) or lecam_problem(cfg) or objective_problem(cfg)
        if problem:
            return problem
        if cfg.z_dim < 1:
            return f"model.z_dim must be >= 1, got {cfg.z_dim}"
        problem = (nets.settings_problem(cfg.generator, spec.kind, "generator", "model.generator", NetConfig())
                   or nets.settings_problem(cfg.discriminator, spec.kind, "discriminator", "model.discriminator",
                                            NetConfig()))
        if problem:
            return problem
        if spec.kind == "image" and "conv" in (nets.resolve_arch(cfg.generator.arch, spec.kind),
                                               nets.resolve_arch(cfg.discriminator.arch, spec.kind)):
            return conv_size_problem(spec.shape)
        return None

    @classmethod
    def loss_params(cls, cfg) -> dict:
        """The adversarial loss's parameters (EBGAN takes its margin from model.margin)."""
        return dict(cfg.loss_params)

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.generator, self.discriminator = self.build_networks(cfg, spec)
        self.loss: AdversarialLoss = build_loss(cfg.loss, **self.loss_params(cfg))
        self.critic_name = self.loss.role
        self.generator_ema = EMA(self.generator, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.augment = build_augment(cfg, spec)
        self._clip = clipper(cfg, self.discriminator)  # WGAN's weight clipping after each D update, or None
        self.lecam = lecam(cfg)

    # ---- hooks --------------------------------------------------------------------------------------
    def build_networks(self, cfg, spec) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(G, D) for this variant."""
        return nets.generator(cfg.generator, spec, cfg.z_dim), nets.discriminator(cfg.discriminator,
                                                                                   packed_spec(spec, cfg.pack))

    def fake(self, n: int) -> tuple[torch.Tensor, Any]:
        """n generated samples and the condition they were made under (None: unconditional)."""
        return self.generator(self._noise(n)), None

    def real_condition(self, batch: Batch) -> Any:
        """The condition D judges a real batch under (None: unconditional)."""
        return None

    def heads(self, x: torch.Tensor, cond: Any) -> tuple[torch.Tensor, Any]:
        """How D's heads turn (x, cond) into (adversarial scores, auxiliary outputs)."""
        return self.discriminator(x), None

    def features(self, x: torch.Tensor, cond: Any) -> torch.Tensor:
        """D's penultimate features of (x, cond) (N, F), for feature matching."""
        return self.discriminator.features(x)

    def discriminator_loss(self, real: "Side", fake: "Side") -> torch.Tensor:
        """D's adversarial loss from the table (BEGAN weighs the fake term by its controlled k_t)."""
        return self.loss.discriminator(real.d, fake.d)

    def generator_needs_data(self) -> bool:
        """Whether the generator step draws a real batch (the loss uses D(real), feature matching; the AAE encodes it)."""
        return self.loss.generator_needs_real or self.cfg.feature_matching_weight > 0

    def discriminator_terms(self, real: Side, fake: Side, batch: Batch) -> tuple[Any, dict]:
        """Extra terms of D's loss (0 and no logs here)."""
        return 0.0, {}

    def generator_terms(self, fake: Side, adversarial: torch.Tensor) -> tuple[Any, dict]:
        """Extra terms of G's loss (0 and no logs here)."""
        return 0.0, {}

    # ---- the template -------------------------------------------------------------------------------
    def discriminate(self, x: torch.Tensor, cond: Any = None, features: bool = False) -> tuple[torch.Tensor, Any]:
        """(scores, aux) of D on x under cond: the one path of every D input; augments, then heads().

        features=True gives D's penultimate features of the same view instead (the features() hook).
        """
        if self.augment.active:  # the identity is not worth a module call per D input
            x = self.augment(x)
        # Packing (PacGAN) joins m augmented samples here, before D's heads see them: one score per pack.
        x = pack(x, self.hot.pack)
        return self.features(x, cond) if features else self.heads(x, cond)

    def update_ema(self, logs: dict | None = None) -> None:
        """The generator Step's `after` hook."""
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator)

    def after_discriminator(self, logs: dict) -> None:
        """The discriminator Step's `after` hook: WGAN's clipping, then the augmentation adapts from the logs."""
        if self._clip is not None:
            self._clip(logs)
        self.augment.adapt(logs)

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator that samples: the EMA weights when model.ema_decay is set."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def networks(self):
        return {"generator": self.generator, "discriminator": self.discriminator}

    def compile_targets(self):
        return compilable(self.cfg, self.networks())

    def optimizer_ratio(self, key):
        return lazy_ratio(self.cfg) if key == "discriminator" else 1.0

    def schedule(self):
        steps = [Step(self.critic_name, "discriminator", self.discriminator_step, repeat=self.cfg.n_critic,
                      after=self.after_discriminator)]
        if lazy_r1(self.cfg):
            steps.append(Step("r1", "discriminator", self.r1_step, every=self.cfg.r1_every, after=self._clip))
        steps.append(Step("generator", "generator", self.generator_step, after=self.update_ema,
                          needs_data=self.generator_needs_data()))
        return steps

    def latent_shape(self):
        return (self.hot.z_dim,)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def _noise(self, n: int) -> torch.Tensor:
        """z ~ N(0, I) alone (a variant's latent() may append codes), from the global RNG."""
        return Model.latent(self, n)

    def discriminator_step(self, batch: Batch, ctx: StepContext):
        fake_x, fake_cond = self.fake(len(batch))
        cond = self.real_condition(batch)
        real = Side(batch.x, cond, *self.discriminate(batch.x, cond))
        fake_x = fake_x.detach()
        fake = Side(fake_x, fake_cond, *self.discriminate(fake_x, fake_cond))
        loss = self.discriminator_loss(real, fake)
        # What D believes costs a few reductions per update: measured only where it is written.
        logs = self.loss.diagnostics(real.d.detach().float(), fake.d.detach().float()) if ctx.log else {}
        # E[sign D(real)]: ADA's overfitting heuristic r_t (Karras et al. 2020), which ADA's adapt reads at every
        # update; other augmentations need it only where it is written.
        if ctx.log or self.augment.reads_real_sign:
            logs["real_sign"] = real.d.detach().float().sign().mean()
        logs.update(self.augment.stats())
        extra, more = self.discriminator_terms(real, fake, batch)
        if more:
            logs["adversarial"] = loss.detach()
            logs.update(more)
        penalty, more = self.regularisers(lambda x: self.discriminate(x, real.cond)[0], real, fake, ctx, self.lecam)
        logs.update(more)
        return plus(loss, extra, penalty), logs

    def regularisers(self, critic, real: "Side", fake: "Side", ctx: StepContext, anchors) -> tuple[Any, dict]:
        """One discriminator's regularisers and their logs, written once for every D (CycleGAN has two):
        the gradient penalties on critic (GP, DRAGAN, WGAN-div, non-lazy R1) and LeCam on `anchors`."""
        penalty, logs = penalty_terms(self.hot, critic, real.x, fake.x, ctx, group=self.hot.pack)
        if anchors is not None:
            reg = anchors(real.d, fake.d)
            penalty = plus(penalty, self.hot.lecam_weight * reg)
            logs["lecam"] = reg.detach()
        return penalty, logs

    def r1_step(self, batch: Batch, ctx: StepContext):
        """The lazy R1 step (StyleGAN2): R1 alone, scaled by the interval it runs at."""
        cond = self.real_condition(batch)
        return r1_term(self.cfg, lambda x: self.discriminate(x, cond)[0], batch.x, ctx, group=self.hot.pack)

    def generator_step(self, batch: Batch, ctx: StepContext):
        x, cond = self.fake(len(batch))
        fake = Side(x, cond, *self.discriminate(x, cond))
        d_real = None
        if self.loss.generator_needs_real:
            d_real = self.discriminate(batch.x, self.real_condition(batch))[0].detach()
        scored, logs = fake.d, {}
        if self.hot.topk is not None:
            c = self.cfg
            k = topk_count(fake.d.shape[0], ctx.step, c.topk, c.topk_gamma, c.topk_every)
            scored = fake.d[top_k(fake.d, k, lowest=self.loss.reads_energies)]
            logs["topk"] = torch.tensor(float(k), device=x.device)
        adv = self.loss.generator(d_real, scored)
        extra, more = self.generator_terms(fake, adv)
        logs.update(more)
        if self.hot.feature_matching_weight > 0:
            with torch.no_grad():
                real_features = self.discriminate(batch.x, self.real_condition(batch), features=True)
            fm = feature_matching(real_features, self.discriminate(x, cond, features=True))
            extra = plus(extra, self.hot.feature_matching_weight * fm)
            logs["feature_matching"] = fm.detach()
        if logs:
            logs = {"adversarial": adv.detach(), **logs}
        return plus(adv, extra), logs

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, **kwargs):
        z = noise if noise is not None else self.latent(n, generator)
        return self.sampler(z.to(self.device)).float()

    def critic_values(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's scalar output per point, for the toy heat-maps (packed: m copies of the point)."""
        return self.discriminate(x.repeat_interleave(self.hot.pack, 0), None)[0]

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
        # D's output as what it estimates (a probability on a fixed [0, 1] axis for logit losses, so
        # saturation shows as flat 0 / 1 plateaus)
        curve = self.loss.belief(self.critic_values(xs).float().reshape(-1)).cpu()
        return {f"{self.critic_name}_curve": viz.plot1d(x, real, curve, extent=data.extent,
                                                        curve_range=self.loss.output_range), **out}
