"""PixelCNN (van den Oord et al. 2016, Gated PixelCNN): an autoregressive model of 8-bit images with an
exact discrete likelihood, trained by maximum likelihood and sampled pixel by pixel.

The network is genlab/nets/pixelcnn.py: masked convolutions (type A first, then B), gated blocks with
a vertical and a horizontal stack (no blind spot), and a 256-way softmax per sub-pixel (grayscale,
or RGB with channel masks) or PixelCNN++'s discretised logistic mixture (RGB). With
model.conditional=true the gates get a class embedding and sample() takes labels.
The likelihood template (models/likelihood.py) turns log_prob into the loss (bits/dim of the training
batch) and the exact test NLL in nats and bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genlab.models.likelihood import LikelihoodModel
from genlab.nets.pixelcnn import PixelCNN as PixelCNNNet


@dataclass
class PixelCNNConfig:
    name: str = "pixelcnn"
    n_layers: int = 8  # gated blocks (the first is type A)
    hidden: int = 64
    kernel: int = 3
    first_kernel: int = 7
    output: str = "auto"  # auto (softmax256 for grayscale, logistic_mixture for RGB) | softmax256 | logistic_mixture
    n_mixtures: int = 5
    conditional: bool = False  # class-conditional gates (needs a labelled dataset)
    eval_limit: int = 1000  # test images used by evaluate()
    visual_samples: int = 16  # images sampled for each picture logged during training (sampling is slow)
    progress: bool = True  # a progress bar while sampling


OUTPUTS = ("auto", "softmax256", "logistic_mixture")


class PixelCNN(LikelihoodModel):
    """log p(x) = sum over sub-pixels in raster order of log p(x_i | x_<i), exactly."""

    Config = PixelCNNConfig
    key = "pixelcnn"
    slow_sampling = True  # ancestral: one network pass per sub-pixel

    @classmethod
    def check(cls, cfg, spec) -> str | None:
        if spec.kind != "image":
            return "model=pixelcnn needs image data (a dataset of images, not points)"
        if cfg.output not in OUTPUTS:
            return f"model.output must be one of {', '.join(OUTPUTS)}, got {cfg.output}"
        if cfg.n_layers < 1 or cfg.hidden < 1 or cfg.n_mixtures < 1:
            return "model.n_layers, model.hidden and model.n_mixtures must be >= 1"
        if cfg.kernel % 2 == 0 or cfg.first_kernel % 2 == 0:
            return f"model.kernel and model.first_kernel must be odd, got {cfg.kernel} and {cfg.first_kernel}"
        c = spec.shape[0]
        if cls._output(cfg, spec) == "softmax256" and c > 1 and cfg.hidden % c:
            return f"model.hidden ({cfg.hidden}) must be divisible by the {c} image channels for softmax256"
        if cfg.conditional and not spec.num_classes:
            return "model.conditional=true needs a labelled dataset; use model.conditional=false"
        if cfg.eval_limit < 1 or cfg.visual_samples < 1:
            return "model.eval_limit and model.visual_samples must be >= 1"
        return None

    @staticmethod
    def _output(cfg, spec) -> str:
        if cfg.output != "auto":
            return cfg.output
        return "softmax256" if spec.shape[0] == 1 else "logistic_mixture"

    def __init__(self, cfg, spec):
        cfg.output = self._output(cfg, spec)
        super().__init__(cfg, spec)
        self.conditional = bool(cfg.conditional)
        self.net = PixelCNNNet(tuple(spec.shape), cfg.n_layers, cfg.hidden, cfg.output, cfg.n_mixtures,
                               spec.num_classes if cfg.conditional else None, cfg.kernel, cfg.first_kernel)

    def networks(self):
        return {"pixelcnn": self.net}

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log P(x) (or log P(x | y)) in nats per image."""
        return self.net.log_prob(x, y if self.conditional else None)

    def eval_batch_size(self) -> int:
        return 100

    def default_labels(self, n: int, device) -> torch.Tensor:
        """Labels 0, 1, ..., K-1, 0, 1, ... for class-conditional grids."""
        return torch.arange(n, device=device) % self.spec.num_classes

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, noise=None, **kwargs):
        """Ancestral sampling, one sub-pixel at a time (H*W*C network passes): slow, so with a progress bar."""
        dev = next(self.parameters()).device
        y = None
        if self.conditional:
            y = labels.to(dev) if labels is not None else self.default_labels(n, dev)
        return self.net.sample(n, y, generator=generator, progress=None if self.cfg.progress else False).float()

    def sample_seconds(self, n: int) -> float:
        """Timed, not guessed: the network's own sampling steps on n images (see nets.pixelcnn)."""
        dev = next(self.parameters()).device
        return self.net.sampling_seconds(n, self.default_labels(n, dev) if self.conditional else None)

    @torch.no_grad()
    def visuals(self, fixed, data):
        from genlab import viz

        n = min(fixed["n"], self.cfg.visual_samples)
        labels = None
        if self.conditional:
            labels = self.default_labels(n, next(self.parameters()).device)
        x = self.sample(n, generator=fixed.get("generator"), labels=labels)
        return {"samples": viz.grid(x, nrow=max(1, int(math.ceil(math.sqrt(n)))))}
