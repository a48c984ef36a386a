"""CycleGAN (Zhu, Park, Isola & Efros 2017): unpaired image-to-image translation.

Two generators G: A -> B and F: B -> A (ResNet-block nets) and two PatchGAN discriminators D_A, D_B,
trained with least-squares adversarial losses, the cycle-consistency loss
lambda * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1), and optionally the identity loss
|G(b) - b|_1 + |F(a) - a|_1. The discriminators see fakes from a history pool of earlier generated
images (Shrivastava et al. 2017), as in the paper. Batches: x from domain A, y from domain B.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from genlab.models.base import Batch, Step, StepContext
from genlab.models.gan import GAN, AdversarialConfig, Side
from genlab.models.penalties import lazy_r1, lecam, r1_term
from genlab.nets.image2image import PatchDiscriminator, ResnetGenerator, halvings, patch_output_size
from genlab.nets.spectral import apply_spectral_norm

DIRECTIONS = ("a2b", "b2a")
DOMAINS = ("a", "b")


@dataclass
class ResnetConfig:
    base_channels: int = 64
    n_blocks: int = 6
    norm: str = "instance"


@dataclass
class PatchConfig:
    base_channels: int = 64
    n_layers: int = 3
    norm: str = "instance"
    spectral_norm: bool = False


@dataclass
class CycleGANConfig(AdversarialConfig):
    name: str = "cyclegan"
    loss: str = "ls"
    # 2 x the table's 1/2 (D(G(x)) - 1)^2 gives the paper's (D(G(x)) - 1)^2 next to lambda = 10
    adversarial_weight: float = 2.0
    cycle_weight: float = 10.0  # lambda
    identity_weight: float = 0.0  # the paper's photo<->painting runs use 0.5 * lambda
    pool_size: int = 50  # history of generated images shown to D; 0 = only the newest
    generator: ResnetConfig = field(default_factory=ResnetConfig)
    discriminator: PatchConfig = field(default_factory=PatchConfig)


class ImagePool(nn.Module):
    """A buffer of up to `size` earlier fakes; each query returns, per image, the new one or (p = 1/2,
    once full) a stored one that the new image replaces. Buffers, so checkpoints carry the history."""

    def __init__(self, size: int, shape):
        super().__init__()
        self.size = int(size)
        self.register_buffer("images", torch.zeros(self.size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return x.detach()
        out = x.detach().clone()
        for i in range(len(x)):
            n = int(self.count)
            if n < self.size:
                self.images[n] = x[i]
                self.count += 1
            elif torch.rand(()) < 0.5:
                j = int(torch.randint(self.size, ()))
                out[i] = self.images[j].clone()
                self.images[j] = x[i]
        return out


class CycleGAN(GAN):
    """The GAN template over two (G, D) pairs: G: A -> B against D_B, F: B -> A against D_A, plus the
    cycle (and identity) losses. D's inputs go through GAN.discriminate with the domain as condition,
    so the augmentation, penalties, R1, clipping and EMA are the template's own."""

    Config = CycleGANConfig
    translates = True
    packs = True  # model.pack=m: each domain's PatchGAN judges m images joined along channels

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if spec.kind != "image" or getattr(spec, "domains", 1) != 2:
            return ("model cyclegan needs two unpaired image domains: use dataset=unpaired_sneaker_sandal "
                    "or dataset=unpaired_folders dataset.domain_a.path=DIR dataset.domain_b.path=DIR")
        problem = cls.game_problem(cfg, spec)
        if problem:
            return problem
        if min(cfg.cycle_weight, cfg.identity_weight, cfg.adversarial_weight) < 0 or cfg.pool_size < 0:
            return "model.cycle_weight, identity_weight, adversarial_weight and pool_size must be >= 0"
        c, h, w = spec.shape
        if h != w or halvings(h) < 1:
            return f"cyclegan needs square images of an even size, got {h}x{w}; set dataset.image_size"
        if patch_output_size(h, 1) < 1:
            return f"images of {h} px are too small for the PatchGAN discriminator; set dataset.image_size >= 8"
        return None

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.pools = nn.ModuleDict({k: ImagePool(cfg.pool_size, spec.shape) for k in DOMAINS})
        if self.lecam is not None:  # LeCam's anchors are one discriminator's outputs: a pair per domain
            self.lecam = nn.ModuleDict({k: lecam(cfg) for k in DOMAINS})
        self._fakes: dict[str, torch.Tensor] = {}

    def build_networks(self, cfg, spec):
        c, size, _ = spec.shape
        g, d = cfg.generator, cfg.discriminator
        gens = nn.ModuleDict({k: ResnetGenerator(c, c, g.base_channels, g.n_blocks, g.norm, image_size=size)
                              for k in DIRECTIONS})
        # discriminator["a"] = D_A judges domain A (real a vs F(b)); ["b"] = D_B (real b vs G(a)).
        discs = nn.ModuleDict({k: PatchDiscriminator(c * cfg.pack, d.base_channels, d.n_layers, d.norm, image_size=size)
                               for k in DOMAINS})
        if d.spectral_norm:
            apply_spectral_norm(discs)
        return gens, discs

    def heads(self, x, cond):
        """cond is the domain ("a" or "b") whose discriminator judges x: its patch scores."""
        return self.discriminator[cond](x), None

    def latent_shape(self):
        return None  # translations have no noise input

    def schedule(self):
        # G first, as in the paper's code: D then sees the fakes G has just made (through the pool).
        steps = [Step("generator", "generator", self.generator_step, after=self.update_ema),
                 Step("discriminator", "discriminator", self.discriminator_step, repeat=self.cfg.n_critic,
                      after=self.after_discriminator)]
        if lazy_r1(self.cfg):
            steps.append(Step("r1", "discriminator", self.r1_step, every=self.cfg.r1_every, after=self._clip))
        return steps

    def adversarial(self, domain: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """G's adversarial loss against one domain's D (D(real) only when the loss uses it)."""
        d_real = self.discriminate(real, domain)[0].detach() if self.loss.generator_needs_real else None
        return self.loss.generator(d_real, self.discriminate(fake, domain)[0])

    def generator_step(self, batch: Batch, ctx: StepContext):
        a, b = batch.x, batch.y
        G, F = self.generator["a2b"], self.generator["b2a"]
        fake_b, fake_a = G(a), F(b)
        adv_a2b = self.adversarial("b", b, fake_b)
        adv_b2a = self.adversarial("a", a, fake_a)
        cyc_a = (F(fake_b) - a).abs().mean()
        cyc_b = (G(fake_a) - b).abs().mean()
        loss = self.cfg.adversarial_weight * (adv_a2b + adv_b2a) + self.cfg.cycle_weight * (cyc_a + cyc_b)
        logs = {"adversarial_a2b": adv_a2b.detach(), "adversarial_b2a": adv_b2a.detach(),
                "cycle_a": cyc_a.detach(), "cycle_b": cyc_b.detach()}
        if self.cfg.identity_weight > 0:
            idt = (G(b) - b).abs().mean() + (F(a) - a).abs().mean()
            loss = loss + self.cfg.identity_weight * idt
            logs["identity"] = idt.detach()
        self._fakes = {"a": fake_a.detach(), "b": fake_b.detach()}
        return loss, logs

    def discriminator_step(self, batch: Batch, ctx: StepContext):
        if not self._fakes:  # a schedule that runs D first, or D's second and later repeats
            with torch.no_grad():
                self._fakes = {"a": self.generator["b2a"](batch.y), "b": self.generator["a2b"](batch.x)}
        real = {"a": batch.x, "b": batch.y}
        loss, logs, signs = 0.0, {}, []
        for k in DOMAINS:
            fake = self.pools[k].query(self._fakes[k])
            d_real, d_fake = self.discriminate(real[k], k)[0], self.discriminate(fake, k)[0]
            lk = self.loss.discriminator(d_real, d_fake)
            penalty, more = self.regularisers(lambda x, k=k: self.discriminate(x, k)[0], Side(real[k], k, d_real, None),
                                              Side(fake, k, d_fake, None), ctx,
                                              self.lecam[k] if self.lecam is not None else None)
            loss = loss + lk + penalty
            logs[f"D_{k}_loss"] = lk.detach()
            logs[f"D_{k}_real"] = d_real.detach().float().mean()
            logs[f"D_{k}_fake"] = d_fake.detach().float().mean()
            logs.update({f"D_{k}_{name}": v for name, v in more.items()})
            signs.append(d_real.detach().float().sign().mean())
        logs["real_sign"] = torch.stack(signs).mean()  # E[sign D(real)] over both discriminators (ADA's r_t)
        self._fakes = {}
        return loss, logs

    def r1_step(self, batch: Batch, ctx: StepContext):
        """The lazy R1 step (StyleGAN2) on both discriminators, scaled by the interval it runs at."""
        loss, logs = 0.0, {}
        for k, real in (("a", batch.x), ("b", batch.y)):
            r1, more = r1_term(self.cfg, lambda x, k=k: self.discriminate(x, k)[0], real, ctx, group=self.cfg.pack)
            loss = loss + r1
            logs.update({f"D_{k}_{name}": v for name, v in more.items()})
        return loss, logs

    # ---- translation --------------------------------------------------------------------------
    def translator(self, direction: str) -> nn.Module:
        """The generator for a2b or b2a (its EMA copy when model.ema_decay is set)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be a2b or b2a, got {direction!r}")
        gens = self.generator_ema.shadow if self.generator_ema is not None else self.generator
        return gens[direction]

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "a2b", batch_size: int = 64) -> torch.Tensor:
        """Images in [-1, 1] (N, C, H, W) translated to the other domain."""
        g = self.translator(direction)
        dev = next(g.parameters()).device
        return torch.cat([g(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, inputs=None, direction="a2b", **kwargs):
        """Translations of `inputs` (CycleGAN has no noise to sample from)."""
        if inputs is None:
            from genlab.errors import GenlabError

            raise GenlabError("cyclegan translates images rather than sampling them: use "
                              "genlab sample run=DIR input=test|/folder direction=a2b|b2a")
        return self.translate(inputs[:n], direction)

    @torch.no_grad()
    def visuals(self, fixed, data):
        """For each direction a grid with rows x, G(x), F(G(x)) on fixed test images."""
        from genlab import viz

        out = {}
        k = min(8, fixed["n"])
        for direction, src in (("a2b", "a"), ("b2a", "b")):
            back = "b2a" if direction == "a2b" else "a2b"
            x = data.split(src, "test")[:k]
            y = self.translate(x, direction)
            out[f"{direction}_cycle"] = viz.grid(torch.cat([x.cpu(), y, self.translate(y, back)]), nrow=len(x))
        return out
