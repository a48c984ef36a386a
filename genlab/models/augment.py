"""Augmentations of what the discriminator sees: a table from `model.augment` names to modules.

Every input of D (real, fake, interpolates, R1's reals) passes through GAN.discriminate, which applies
the model's augmentation module first (as stylegan2-ada-pytorch's `run_D` applies its augment pipe), so
an augmentation written here works for every GAN variant. Contract of an augmentation module:
- built as `cls(cfg, spec)` from the model's typed config and the data spec;
- `problem(cfg, spec, loss)` (a classmethod): why it cannot work with these settings, data and loss class;
- forward(x) -> x', differentiable in x (G's gradient flows through it), identity in eval mode
  (`self.training` False: visuals, heat-maps and evaluation see D unaugmented);
- adapt(logs): called after every discriminator update with that step's logs (e.g. `real_sign`,
  E[sign D(real)]); adaptive state lives in registered buffers, so checkpoints carry it.

The two of the field:
- diffaug (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"): every op
  of `augment_policy` on every image, real and fake alike, each with fresh random parameters, as the
  official DiffAugment code: color = brightness, saturation, contrast; translation by up to 1/8 of the
  side with zero padding; cutout of a square half the side;
- ada (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"): the same ops,
  each applied to an image with probability p, and p adapted from the overfitting heuristic
  r_t = E[sign D(x_real)]: every `ada_interval` discriminator steps p moves by
  sign(r_t - ada_target) * (batch * interval) / (ada_kimg * 1000), so p can cross [0, 1] in ada_kimg
  thousand real images (500 in the paper). p and the running sum of r_t are buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class Augment(nn.Module):
    """The identity augmentation and the base of every other: no op, nothing to adapt."""

    def __init__(self, cfg=None, spec=None):
        super().__init__()
        cls = type(self)
        # An augmentation that keeps the identity's forward is skipped in D's path (a module call per D input
        # saved), and one that keeps its adapt needs no E[sign D(real)] at every update (ADA's r_t).
        self.active = cls.forward is not Augment.forward
        self.reads_real_sign = cls.adapt is not Augment.adapt

    @classmethod
    def problem(cls, cfg, spec, loss) -> str | None:
        """Why this augmentation cannot work with these settings, data and loss class (None if it can)."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adapt(self, logs: dict) -> None:
        """Update adaptive state (buffers) from the discriminator step's logs; nothing here."""

    def stats(self) -> dict[str, torch.Tensor]:
        """Adaptive state the discriminator step logs (ADA's p); none here."""
        return {}


def brightness(x: torch.Tensor) -> torch.Tensor:
    """Add one uniform offset in [-0.5, 0.5) per image."""
    return x + (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its per-pixel channel mean by a factor in [0, 2)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * side pixels in each direction, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dh = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dw = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    b, gh, gw = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    # Indices into the image padded by one zero pixel: clamping to the border reads the padding.
    gh = torch.clamp(gh + dh + 1, 0, h + 1)
    gw = torch.clamp(gw + dw + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[b, gh, gw].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio * side per image at a uniform centre (it may reach over the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oh = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ow = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    b, gh, gw = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gh = torch.clamp(gh + oh - ch // 2, 0, h - 1)
    gw = torch.clamp(gw + ow - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gh, gw] = 0
    return x * mask.unsqueeze(1)


#: the policies of the DiffAugment paper, each a sequence of ops
POLICIES = {"color": (brightness, saturation, contrast), "translation": (translation,), "cutout": (cutout,)}


class DiffAugment(Augment):
    """Every op of model.augment_policy on every image D sees (Zhao et al. 2020)."""

    def __init__(self, cfg, spec=None):
        super().__init__(cfg, spec)
        self.ops = [op for name in cfg.augment_policy for op in POLICIES[name]]

    @classmethod
    def problem(cls, cfg, spec, loss) -> str | None:
        unknown = [p for p in cfg.augment_policy if p not in POLICIES]
        if unknown or not cfg.augment_policy:
            return f"model.augment_policy takes a non-empty list of {', '.join(POLICIES)}, got {list(cfg.augment_policy)}"
        if spec.kind != "image":
            return f"model.augment={cfg.augment} transforms images; the dataset has {spec.kind}"
        return None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The ops on every image."""
        for op in self.ops:
            x = op(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x).contiguous() if self.training else x


class ADA(DiffAugment):
    """Each op on each image with probability p, p steered so that r_t = E[sign D(real)] meets ada_target."""

    def __init__(self, cfg, spec=None):
        super().__init__(cfg, spec)
        self.target, self.interval, self.kimg = float(cfg.ada_target), int(cfg.ada_interval), float(cfg.ada_kimg)
        self.register_buffer("p", torch.zeros(()))
        self.register_buffer("sign_sum", torch.zeros(()))  # sum of E[sign D(real)] since the last adjustment
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # discriminator updates seen
        self.batch = 0

    @classmethod
    def problem(cls, cfg, spec, loss) -> str | None:
        if loss.reads_energies:
            return "model.augment=ada steers p by sign D(real), which energies (low = real) do not carry"
        if not 0 < cfg.ada_target < 1 or cfg.ada_interval < 1 or cfg.ada_kimg <= 0:
            return "model.ada_target must be in (0, 1), model.ada_interval >= 1 and model.ada_kimg > 0"
        return super().problem(cfg, spec, loss)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Each op on each image with probability p."""
        self.batch = x.shape[0]  # the images per D input, for the size of p's adjustment
        p = self.p.to(x.dtype)
        for op in self.ops:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= p
            x = torch.where(keep, x, op(x))
        return x

    def stats(self):
        return {"ada_p": self.p.clone()}

    @torch.no_grad()
    def adapt(self, logs: dict) -> None:
        """Account one discriminator update's E[sign D(real)]; adjust p every `interval` updates."""
        # On the device and without branching on tensor values, so it never waits for the device.
        self.sign_sum += logs["real_sign"].float()
        self.count += 1
        due = self.count % self.interval == 0
        r_t = self.sign_sum / ((self.count - 1) % self.interval + 1)
        step = self.batch * self.interval / (self.kimg * 1000)
        self.p.copy_(torch.where(due, (self.p + torch.sign(r_t - self.target) * step).clamp(0, 1), self.p))
        self.sign_sum.copy_(torch.where(due, torch.zeros_like(self.sign_sum), self.sign_sum))


# name -> "module.Class" (imported on use); a new augmentation is one file and one entry here.
AUGMENTS: dict[str, str] = {
    "none": "genlab.models.augment.Augment",
    "diffaug": "genlab.models.augment.DiffAugment",
    "ada": "genlab.models.augment.ADA",
}


@dataclass
class Augmentation:
    """The augmentation every adversarial model takes as config (a Config mixin)."""

    augment: str = "none"  # a name of AUGMENTS
    augment_policy: list[str] = field(default_factory=lambda: ["color", "translation", "cutout"])
    ada_target: float = 0.6  # the r_t that p is steered to (the paper's 0.6)
    ada_interval: int = 4  # discriminator updates between adjustments of p
    ada_kimg: float = 500.0  # thousands of real images over which p may move from 0 to 1


def _augment_class(name: str):
    from hydra.utils import get_class

    return get_class(AUGMENTS[name])


def augment_problem(cfg, spec, loss) -> str | None:
    """Why model.augment cannot work with this data and loss class (None if it can)."""
    if cfg.augment not in AUGMENTS:
        return f"unknown model.augment={cfg.augment}; choose one of {', '.join(AUGMENTS)}"
    return _augment_class(cfg.augment).problem(cfg, spec, loss)


def build_augment(cfg, spec) -> Augment:
    """The augmentation module named by cfg.augment."""
    return _augment_class(cfg.augment)(cfg, spec)
