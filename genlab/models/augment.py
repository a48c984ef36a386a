"""What D sees is augmented: DiffAugment (Zhao et al. 2020) and ADA (Karras et al. 2020).

Both apply differentiable ops to every image D judges, real and fake alike, so G's gradient flows
back through the augmentation and D never learns the augmented distribution as "real" only:
- diffaug: every op of `augment_policy` on every image, each with fresh random parameters
  (the official DiffAugment: color = brightness, saturation, contrast; translation by up to 1/8 of
  the side with zero padding; cutout of a square half the side);
- ada: the same ops, each applied to an image with probability p, and p adapted from the overfitting
  heuristic r_t = E[sign D(x_real)]: every `ada_interval` discriminator steps p moves by
  sign(r_t - ada_target) * (batch * interval) / (ada_kimg * 1000), so p can cross [0, 1] in
  ada_kimg thousand real images (500 in the paper).
The adaptive state (p and the running sum of sign D(real)) lives in buffers, so checkpoints carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


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
AUGMENTS = ("none", "diffaug", "ada")


@dataclass
class AugmentConfig:
    """The augmentation options every adversarial model takes (a Config mixin)."""

    augment: str = "none"  # none | diffaug | ada
    augment_policy: list[str] = field(default_factory=lambda: ["color", "translation", "cutout"])
    ada_target: float = 0.6  # the r_t that p is steered to (the paper's 0.6)
    ada_interval: int = 4  # discriminator steps between adjustments of p
    ada_kimg: float = 500.0  # thousands of real images over which p may move from 0 to 1


def augment_problem(cfg, spec, reads_energies: bool) -> str | None:
    """Why the augmentation settings cannot work on this data (None if they can)."""
    if cfg.augment not in AUGMENTS:
        return f"model.augment must be one of {', '.join(AUGMENTS)}, got {cfg.augment}"
    if cfg.augment == "none":
        return None
    unknown = [p for p in cfg.augment_policy if p not in POLICIES]
    if unknown or not cfg.augment_policy:
        return f"model.augment_policy takes a non-empty list of {', '.join(POLICIES)}, got {list(cfg.augment_policy)}"
    if spec.kind != "image":
        return f"model.augment={cfg.augment} transforms images; the dataset has {spec.kind}"
    if cfg.augment == "ada":
        if reads_energies:
            return "model.augment=ada steers p by sign D(real), which energies (low = real) do not carry"
        if not 0 < cfg.ada_target < 1 or cfg.ada_interval < 1 or cfg.ada_kimg <= 0:
            return "model.ada_target must be in (0, 1), model.ada_interval >= 1 and model.ada_kimg > 0"
    return None


class DiffAugment(nn.Module):
    """Every op of the policy on every image (Zhao et al. 2020)."""

    def __init__(self, policy):
        super().__init__()
        self.ops = [op for name in policy for op in POLICIES[name]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op(x)
        return x.contiguous()

    def observe(self, d_real: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the augmentation learns from one discriminator step's real scores: nothing (fixed ops)."""
        return {}


class ADA(DiffAugment):
    """Each op on each image with probability p, p adapted towards r_t = E[sign D(real)] = target."""

    def __init__(self, policy, target: float = 0.6, interval: int = 4, kimg: float = 500.0):
        super().__init__(policy)
        self.target, self.interval, self.kimg = float(target), int(interval), float(kimg)
        self.register_buffer("p", torch.zeros(()))
        self.register_buffer("sign_sum", torch.zeros(()))  # sum of E[sign D(real)] since the last adjustment
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.to(x.dtype)
        for op in self.ops:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= p
            x = torch.where(keep, x, op(x))
        return x.contiguous()

    @torch.no_grad()
    def observe(self, d_real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Account one discriminator step's real scores; adjust p every `interval` steps; (r_t, p) logs."""
        # On the device and without branching on tensor values, so it never waits for the device.
        self.sign_sum += torch.sign(d_real.detach().float()).mean()
        self.count += 1
        due = self.count % self.interval == 0
        r_t = self.sign_sum / ((self.count - 1) % self.interval + 1)
        step = d_real.shape[0] * self.interval / (self.kimg * 1000)
        self.p.copy_(torch.where(due, (self.p + torch.sign(r_t - self.target) * step).clamp(0, 1), self.p))
        self.sign_sum.copy_(torch.where(due, torch.zeros_like(self.sign_sum), self.sign_sum))
        return {"ada_r_t": r_t, "ada_p": self.p.clone()}


def build_augment(cfg) -> nn.Module | None:
    """The augmentation module named by cfg.augment (None for none)."""
    if cfg.augment == "diffaug":
        return DiffAugment(cfg.augment_policy)
    if cfg.augment == "ada":
        return ADA(cfg.augment_policy, cfg.ada_target, cfg.ada_interval, cfg.ada_kimg)
    return None
