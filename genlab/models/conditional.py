"""Class-conditional GANs: cGAN (Mirza & Osindero 2014) with a concatenation or projection
discriminator (Miyato & Koyama 2018) and the wrong-label term of text-to-image GAN-CLS (Reed et al.
2016), and AC-GAN (Odena et al. 2017), whose discriminator has an auxiliary classifier head.

G(z, y) sees a learned label embedding concatenated to z. D(x, y) is one of
- projection: D(x, y) = psi(phi(x)) + <embed(y), phi(x)> on the discriminator's features phi;
- concat: one-hot label planes (images) or a one-hot vector (points) concatenated to the input;
- none: an unconditional D (AC-GAN's choice: the labels reach D only through the classifier head).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab import nets
from genlab.models.base import Batch
from genlab.models.gan import GAN, GANConfig, Side
from genlab.types import plus

D_CONDITIONING = ("projection", "concat", "none")


@dataclass
class ConditionalGANConfig(GANConfig):
    name: str = "cgan"
    # 0 = the one-hot label concatenated to z; > 0 = a learned embedding of that size. A learned embedding
    # let G lean on the label and ignore z (within-class collapse on Fashion-MNIST), so one-hot is the default.
    embed_dim: int = 0
    d_conditioning: str = "projection"  # projection | concat | none
    # GAN-CLS: D also sees (real image, wrong label) as fake; L_D = real + (1 - w) fake + w wrong.
    wrong_label_weight: float = 0.5
    aux_classifier: bool = False  # AC-GAN's classifier head on D's features
    class_weight: float = 1.0  # weight of the class log-likelihood in both players' losses


@dataclass
class ACGANConfig(ConditionalGANConfig):
    name: str = "acgan"
    d_conditioning: str = "none"
    wrong_label_weight: float = 0.0
    aux_classifier: bool = True


class ConditionalGenerator(nn.Module):
    """G(z, y) = net([z, embed(y)]); embed_dim = 0 concatenates the one-hot label (Mirza & Osindero)."""

    def __init__(self, net_cfg, spec, z_dim: int, num_classes: int, embed_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if embed_dim > 0 else None
        self.net = nets.generator(net_cfg, spec, z_dim + (embed_dim if embed_dim > 0 else num_classes))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = self.embed(y) if self.embed is not None else F.one_hot(y, self.num_classes)
        return self.net(torch.cat([z, e.to(z.dtype)], 1))


def one_hot_input(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """x with the one-hot label appended: as constant planes for images, as entries for vectors."""
    h = F.one_hot(y, num_classes).to(x.dtype)
    if x.dim() == 4:
        h = h[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, h], 1)


class ConditionalDiscriminator(nn.Module):
    """D(x, y) -> (adversarial logits (N,), class logits (N, K) or None)."""

    def __init__(self, net_cfg, spec, num_classes: int, conditioning: str, aux_classifier: bool):
        super().__init__()
        self.conditioning, self.num_classes = conditioning, num_classes
        if conditioning == "concat":
            c, *rest = spec.shape
            spec = dataclasses.replace(spec, shape=(c + num_classes, *rest))
        self.body = nets.discriminator(net_cfg, spec)
        dim = self.body.feature_dim
        sn = bool(net_cfg.spectral_norm)
        wrap = nn.utils.parametrizations.spectral_norm if sn else (lambda m: m)
        self.embed = None
        if conditioning == "projection":
            emb = nn.Embedding(num_classes, dim)
            nn.init.normal_(emb.weight, 0.0, 0.02)
            self.embed = wrap(emb)
        self.classifier = wrap(nn.Linear(dim, num_classes)) if aux_classifier else None

    def features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The body's penultimate features of (x, y) (N, F)."""
        if self.conditioning == "concat":
            x = one_hot_input(x, y, self.num_classes)
        return self.body.features(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        h = self.features(x, y)
        out = self.body.head(h).squeeze(1)
        if self.embed is not None:
            # The projection term: the inner product of the class embedding with the features.
            out = out + (self.embed(y).to(h.dtype) * h).sum(1)
        cls = self.classifier(h) if self.classifier is not None else None
        return out, cls


def wrong_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A label different from y for every example, uniform over the other K - 1 classes."""
    shift = torch.randint(1, num_classes, y.shape, device=y.device)
    return (y + shift) % num_classes


def discriminator_loss_with_wrong_labels(loss, d_real, d_fake, d_wrong, weight: float) -> torch.Tensor:
    """real as real; (1 - w) * fake-with-its-label + w * real-with-a-wrong-label as fake (GAN-CLS at w = 1/2).

    For a loss that is a sum of a real and a fake term (all but the relativistic ones), mixing two calls
    mixes only the fake terms; for RaGAN it mixes the two relativistic games.
    """
    if weight == 0 or d_wrong is None:
        return loss.discriminator(d_real, d_fake)
    return (1 - weight) * loss.discriminator(d_real, d_fake) + weight * loss.discriminator(d_real, d_wrong)


class ConditionalGAN(GAN):
    """G(z, y) against D(x, y): cGAN (projection or concat D, wrong-label term) and AC-GAN (classifier head)."""

    packs = False  # per-sample conditions or heads (labels, codes, reconstructions)

    Config = ConditionalGANConfig
    conditional = True

    @classmethod
    def check(cls, cfg, spec):
        if spec.num_classes is None:
            return (f"model {cfg.name} is class-conditional but the dataset has no class labels; "
                    "use a labelled dataset such as dataset=fashion_mnist")
        if cfg.d_conditioning not in D_CONDITIONING:
            return f"model.d_conditioning must be one of {', '.join(D_CONDITIONING)}, got {cfg.d_conditioning}"
        if not 0 <= cfg.wrong_label_weight <= 1:
            return f"model.wrong_label_weight must be in [0, 1], got {cfg.wrong_label_weight}"
        if cfg.wrong_label_weight > 0 and cfg.d_conditioning == "none":
            return "model.wrong_label_weight > 0 needs a label-aware discriminator (d_conditioning projection or concat)"
        if cfg.d_conditioning == "none" and not cfg.aux_classifier:
            return "model.d_conditioning=none without aux_classifier leaves D blind to the labels; set one of them"
        if cfg.embed_dim < 0 or cfg.class_weight < 0:
            return "model.embed_dim must be >= 0 (0 = one-hot) and model.class_weight >= 0"
        return super().check(cfg, spec)

    def build_networks(self, cfg, spec):
        self.num_classes = int(spec.num_classes)
        return (ConditionalGenerator(cfg.generator, spec, cfg.z_dim, self.num_classes, cfg.embed_dim),
                ConditionalDiscriminator(cfg.discriminator, spec, self.num_classes, cfg.d_conditioning,
                                         cfg.aux_classifier))

    def random_labels(self, n: int, device) -> torch.Tensor:
        return torch.randint(self.num_classes, (n,), device=device)

    def class_loss(self, logits, y) -> torch.Tensor:
        """AC-GAN's L_C as a loss: the negative class log-likelihood, mean over the batch."""
        return F.cross_entropy(logits.float(), y)

    # ---- the GAN template's hooks: fakes come with random labels, D sees (x, y) ------------------
    def fake(self, n):
        y = self.random_labels(n, self.device)
        return self.generator(self._noise(n), y), y

    def real_condition(self, batch: Batch):
        if batch.y is None:
            raise RuntimeError("a conditional GAN needs labelled batches")
        return batch.y

    def heads(self, x, cond):
        return self.discriminator(x, cond)

    def features(self, x, cond):
        return self.discriminator.features(x, cond)

    def discriminator_terms(self, real: Side, fake: Side, batch: Batch):
        extra, logs = 0.0, {}
        if self.cfg.wrong_label_weight > 0:
            # GAN-CLS: real images with wrong labels replace a share w of the fakes
            d_wrong, _ = self.discriminate(real.x, wrong_labels(real.cond, self.num_classes))
            w = self.cfg.wrong_label_weight
            wrong = self.loss.discriminator(real.d, d_wrong)
            adv = discriminator_loss_with_wrong_labels(self.loss, real.d, fake.d, d_wrong, w)
            extra = adv - self.loss.discriminator(real.d, fake.d)
            logs.update(adversarial=adv.detach(), wrong_label_loss=wrong.detach(),
                        D_x_wrong_label=self.loss.belief(d_wrong.detach().float()).mean())
        if real.aux is not None:
            cls = self.class_loss(real.aux, real.cond) + self.class_loss(fake.aux, fake.cond)
            extra = plus(extra, self.cfg.class_weight * cls)
            logs.update(class_loss=cls.detach(), class_accuracy_real=(real.aux.argmax(1) == real.cond).float().mean())
        return extra, logs

    def generator_terms(self, fake: Side, adversarial):
        if fake.aux is None:
            return 0.0, {}
        cls = self.class_loss(fake.aux, fake.cond)
        return self.cfg.class_weight * cls, {"class_loss": cls.detach(),
                                             "class_accuracy_fake": (fake.aux.argmax(1) == fake.cond).float().mean()}

    def labels_for(self, n: int, labels, device) -> torch.Tensor:
        """labels as an (n,) long tensor: None cycles through the classes, an int repeats."""
        if labels is None:
            return torch.arange(n, device=device) % self.num_classes
        y = torch.as_tensor(labels, device=device).long().reshape(-1)
        if y.numel() == 1:
            y = y.expand(n)
        if y.numel() != n:
            raise ValueError(f"got {y.numel()} labels for {n} samples")
        if (y < 0).any() or (y >= self.num_classes).any():
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}")
        return y

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, **kwargs):
        z = noise if noise is not None else self.latent(n, generator)
        return self.sampler(z.to(self.device), self.labels_for(n, labels, self.device)).float()

    @torch.no_grad()
    def visuals(self, fixed, data):
        """One row per class over the same fixed noise per column, so each column holds z fixed."""
        from genlab import viz

        k, cols = self.num_classes, max(1, min(10, fixed["n"]))
        noise = fixed.get("noise")
        z = noise[:cols] if noise is not None and len(noise) >= cols else self.latent(cols, fixed.get("generator"))
        z = z.repeat(k, 1)
        y = torch.arange(k, device=z.device).repeat_interleave(cols)
        x = self.sample(len(z), noise=z, labels=y)
        return {"class_rows": viz.grid(x, nrow=cols)}


class ACGAN(ConditionalGAN):
    """AC-GAN: an unconditional D with a classifier head; both players add the class log-likelihood."""

    Config = ACGANConfig


__all__ = ["ACGAN", "ConditionalGAN", "discriminator_loss_with_wrong_labels", "wrong_labels"]
