"""PixelCNN: causal masked convolutions, Gated PixelCNN blocks, and the two discrete output heads.

Conventions. Images are (N, C, H, W) in [-1, 1] on the 8-bit grid x = k / 127.5 - 1, k = 0..255.
Pixels are generated in raster order (row by row, left to right); within a pixel, channel c comes
after channels 0..c-1.

- output='softmax256' (van den Oord et al. 2016): a 256-way softmax per channel. With C > 1 the
  network masks channel groups (channel c at a pixel sees channels < c of that pixel), so the
  logits of channel c may depend on the already generated channels of the same pixel.
- output='logistic_mixture' (PixelCNN++, Salimans et al. 2017): a mixture of discretised logistics
  per pixel, shared by its channels. The network only sees strictly earlier pixels; the dependence
  between channels of one pixel is the linear coefficients on the means (G on R, B on R and G).

Both give exact discrete log-likelihoods in nats; bits/dim = -log_prob / (C*H*W*log 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab import pixels
from genlab import progress as bars
from genlab.pixels import from_levels

_HALF_BIN = 1.0 / 255.0  # half the width of one of the 256 bins of [-1, 1]


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to integer levels 0..255 (long), for indexing the 256-way outputs."""
    return pixels.to_levels(x).long()


# ----------------------------------------------------------------------------- masked convolutions


def causal_mask(
    in_ch: int, out_ch: int, kernel: tuple[int, int], mask_type: str, data_channels: int = 1, stack: str = "raster"
) -> torch.Tensor:
    """(out_ch, in_ch, kh, kw) 0/1 mask of a causal convolution.

    stack='raster': PixelCNN's mask (rows above, then the left part of the current row).
    stack='vertical': rows above only (type A) or rows above and the whole current row (type B);
    used on features that already see only earlier rows, so the current row adds no future pixels.
    stack='horizontal': a (1, k) kernel on the current row, left of the centre.
    At the centre pixel, feature channels are split into data_channels groups (channel i is in
    group i % data_channels): type A lets group g see groups < g, type B groups <= g.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(out_ch, in_ch, kh, kw)
    if stack == "vertical":
        mask[:, :, :ch] = 1
        if mask_type == "B":
            mask[:, :, ch] = 1
        return mask
    if stack not in ("raster", "horizontal"):
        raise ValueError(f"stack must be 'raster', 'vertical' or 'horizontal', got {stack!r}")
    mask[:, :, :ch] = 1
    mask[:, :, ch, :cw] = 1
    g_out = (torch.arange(out_ch) % data_channels).view(-1, 1)
    g_in = (torch.arange(in_ch) % data_channels).view(1, -1)
    mask[:, :, ch, cw] = (g_in < g_out if mask_type == "A" else g_in <= g_out).float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a causal mask (see causal_mask); 'same' padding."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        mask_type: str = "B",
        data_channels: int = 1,
        stack: str = "raster",
    ):
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        super().__init__(in_ch, out_ch, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        # Not persistent: the mask follows from the arguments, so checkpoints need not carry it.
        mask = causal_mask(in_ch, out_ch, kernel, mask_type, data_channels, stack)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def _gate(x):
    """Gated activation tanh(a) * sigmoid(b) over the two halves of the channels."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedBlock(nn.Module):
    """Gated PixelCNN layer (van den Oord et al. 2016): a vertical and a horizontal stack, no blind spot.

    The vertical stack sees every pixel of the rows above (left and right); the horizontal stack sees
    the current row to the left plus the vertical stack through a 1x1 connection. Both use gated
    tanh * sigmoid units; the horizontal stack is residual. With num_classes, a learned embedding of
    the label is added to the gate pre-activations of both stacks. forward(v, h, y) -> (v, h).
    mask_type='A' is the first layer (the current pixel is hidden); later layers use 'B'.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel: int = 3,
        mask_type: str = "B",
        data_channels: int = 1,
        num_classes: int | None = None,
    ):
        super().__init__()
        if data_channels > 1 and channels % data_channels:
            raise ValueError(f"GatedBlock channels ({channels}) must be divisible by data_channels ({data_channels})")
        self.channels = channels
        self.v_conv = MaskedConv2d(in_channels, 2 * channels, kernel, mask_type, data_channels, "vertical")
        self.h_conv = MaskedConv2d(in_channels, 2 * channels, (1, kernel), mask_type, data_channels, "horizontal")
        # The vertical stack never sees the current row's past, so this link needs no channel mask.
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d(channels, channels, 1, "B", data_channels)
        self.residual = mask_type == "B" and in_channels == channels
        self.embed = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    def forward(self, v, h, y=None):
        """One layer: (v, h) -> (v, h)."""
        v_pre = self.v_conv(v)
        h_pre = self.h_conv(h) + self.v_to_h(v_pre)
        if self.embed is not None:
            if y is None:
                raise ValueError("this PixelCNN is class-conditional: pass labels y")
            v_bias, h_bias = self.embed(y)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + v_bias, h_pre + h_bias
        h_new = self.h_out(_gate(h_pre))
        return _gate(v_pre), h + h_new if self.residual else h_new


# ----------------------------------------------------------------------------- output distributions


def softmax256_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x) in nats per example for logits (N, C, 256, H, W) and images x (N, C, H, W) in [-1, 1]."""
    picked = F.log_softmax(logits, dim=2).gather(2, to_levels(x).unsqueeze(2)).squeeze(2)
    return picked.flatten(1).sum(1)


def logistic_mixture_channels(n_mixtures: int, channels: int) -> int:
    """Outputs per pixel: M mixture logits, and per component C means, C log-scales, C(C-1)/2 coefficients."""
    return n_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def _unpack_mixture(params: torch.Tensor, channels: int):
    """(N, P, H, W) -> logits (N, M, H, W), means, log-scales (N, M, C, H, W), coefficients (N, M, C(C-1)/2, H, W)."""
    n, p, h, w = params.shape
    per = 1 + 2 * channels + channels * (channels - 1) // 2
    if p % per:
        raise ValueError(f"{p} mixture parameters is not a multiple of {per} for {channels} channels")
    m = p // per
    logits = params[:, :m]
    rest = params[:, m:].reshape(n, m, per - 1, h, w)
    means = rest[:, :, :channels]
    # PixelCNN++'s floor on the log-scale: a narrower logistic would put all mass in one bin anyway.
    log_scales = rest[:, :, channels : 2 * channels].clamp(min=-7.0)
    coeffs = torch.tanh(rest[:, :, 2 * channels :])
    return logits, means, log_scales, coeffs


def _coeff_index(c: int, prev: int) -> int:
    """Position of the coefficient of channel `prev` in the mean of channel c: (1,0), (2,0), (2,1), ..."""
    return c * (c - 1) // 2 + prev


def _shifted_means(means, coeffs, x):
    """Means of each channel shifted by the coefficients times the earlier channels' values x (N, 1, C, H, W)."""
    out = [means[:, :, 0]]
    for c in range(1, means.shape[2]):
        shift = sum(coeffs[:, :, _coeff_index(c, p)] * x[:, :, p] for p in range(c))
        out.append(means[:, :, c] + shift)
    return torch.stack(out, dim=2)


def _log_bins(levels: torch.Tensor, centered: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(level) of a discretised logistic, elementwise: the mass of each 8-bit level's bin."""
    inv_scale = torch.exp(-log_scales)
    plus = inv_scale * (centered + _HALF_BIN)  # upper edge of the bin
    minus = inv_scale * (centered - _HALF_BIN)  # lower edge of the bin
    # Level 0 owns (-inf, upper edge]; level 255 owns [lower edge, inf).
    log_cdf_plus = F.logsigmoid(plus)
    log_sf_minus = F.logsigmoid(-minus)
    # Interior: log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(1 - exp(b - a)).
    # Exact in the tails where the plain difference of two sigmoids cancels to 0 (PixelCNN++ falls
    # back to a density approximation there); b - a = -2 / (255 scale) < 0, so every term is finite.
    log_mid = log_cdf_plus + log_sf_minus + torch.log(-torch.expm1(minus - plus))
    return torch.where(levels == 0, log_cdf_plus, torch.where(levels == 255, log_sf_minus, log_mid))


def discretized_mix_logistic_log_prob(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log p(x) in nats per example under PixelCNN++'s discretised logistic mixture; x (N, C, H, W) in [-1, 1]."""
    logits, means, log_scales, coeffs = _unpack_mixture(params, x.shape[1])
    xs = x.unsqueeze(1)
    log_bins = _log_bins(to_levels(x).unsqueeze(1), xs - _shifted_means(means, coeffs, xs), log_scales)
    log_joint = log_bins.sum(dim=2) + F.log_softmax(logits, dim=1)  # channels of one component multiply
    return torch.logsumexp(log_joint, dim=1).flatten(1).sum(1)


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x) in nats per example of independent discretised logistics per sub-pixel (N, C, H, W):
    the mixture above with one component and no channel coefficients, without their bookkeeping."""
    return _log_bins(to_levels(x), x - mean, log_scale).flatten(1).sum(1)


def sample_discretized_mix_logistic(
    params: torch.Tensor, channels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw x (N, C, H, W) on the 8-bit grid of [-1, 1] from PixelCNN++'s mixture parameters (N, P, H, W)."""
    logits, means, log_scales, coeffs = _unpack_mixture(params, channels)
    n, m, h, w = logits.shape
    probs = F.softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, m)
    comp = torch.multinomial(probs, 1, generator=generator).view(n, 1, 1, h, w)

    def pick(t):
        return t.gather(1, comp.expand(n, 1, t.shape[2], h, w)).squeeze(1)

    mean, log_scale, coeff = pick(means), pick(log_scales), pick(coeffs)
    u = torch.rand(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    # Inverse-CDF logistic noise; u = 0 gives -inf, which the clamp sends to level 0 as it should.
    noise = torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    x = torch.empty_like(mean)
    for c in range(channels):
        shift = sum(coeff[:, _coeff_index(c, p)] * x[:, p] for p in range(c))
        # Rounding a continuous logistic draw to its bin is exactly a draw from the discretised one.
        x[:, c] = from_levels(to_levels(mean[:, c] + shift + noise[:, c]), mean.dtype)
    return x


# ----------------------------------------------------------------------------- the model


class PixelCNN(nn.Module):
    """Gated PixelCNN over images in [-1, 1] with a softmax256 or a discretised logistic mixture output.

    n_layers gated blocks (the first 'A' with a first_kernel x first_kernel kernel, the rest 'B'),
    then a ReLU, 1x1, ReLU, 1x1 head. forward returns logits (N, C, 256, H, W) for softmax256 and
    mixture parameters (N, logistic_mixture_channels(n_mixtures, C), H, W) for logistic_mixture.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        n_layers: int = 8,
        hidden: int = 64,
        output: str = "softmax256",
        n_mixtures: int = 5,
        num_classes: int | None = None,
        kernel: int = 3,
        first_kernel: int = 7,
    ):
        super().__init__()
        if output not in ("softmax256", "logistic_mixture"):
            raise ValueError(f"PixelCNN output must be 'softmax256' or 'logistic_mixture', got {output!r}")
        self.shape, self.output, self.num_classes = tuple(shape), output, num_classes
        c = self.shape[0]
        # Only the softmax head orders the channels inside a pixel; the mixture couples them itself.
        groups = c if output == "softmax256" else 1
        if groups > 1 and hidden % groups:
            raise ValueError(f"PixelCNN hidden ({hidden}) must be divisible by the {c} image channels for softmax256")
        self.blocks = nn.ModuleList(
            [GatedBlock(c, hidden, first_kernel, "A", groups, num_classes)]
            + [GatedBlock(hidden, hidden, kernel, "B", groups, num_classes) for _ in range(n_layers - 1)]
        )
        n_out = 256 * c if output == "softmax256" else logistic_mixture_channels(n_mixtures, c)
        self.head = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(hidden, hidden, 1, "B", groups),
            nn.ReLU(),
            MaskedConv2d(hidden, n_out, 1, "B", groups),
        )

    def forward(self, x, y=None):
        """Logits (N, C, 256, H, W) or mixture parameters (N, P, H, W) for images x in [-1, 1]."""
        v = h = x
        for block in self.blocks:
            v, h = block(v, h, y)
        out = self.head(h)
        if self.output == "softmax256":
            n, _, hh, ww = out.shape
            # Output channel k*C + c is in channel group c (groups are i % C): logit k of channel c.
            return out.view(n, 256, self.shape[0], hh, ww).transpose(1, 2)
        return out

    def log_prob(self, x, y=None):
        """Exact discrete log-likelihood of the 8-bit images x in [-1, 1], in nats per example."""
        out = self(x, y)
        if self.output == "softmax256":
            return softmax256_log_prob(out, x)
        return discretized_mix_logistic_log_prob(x, out)

    @torch.no_grad()
    def sample(self, n: int, y=None, generator: torch.Generator | None = None, progress: bool | None = False):
        """Ancestral sampling in raster order (and channel order for softmax256); returns x in [-1, 1].

        progress: a bar over the pixels (None: when stderr is a terminal)."""
        ref = next(self.parameters())
        c, h, w = self.shape
        x = torch.zeros(n, c, h, w, device=ref.device, dtype=ref.dtype)
        with bars.bar(h * w, f"PixelCNN sampling {n} images", "px", enabled=progress) as bar:
            for pos in range(h * w):
                self._sample_pixel(x, y, pos, generator)
                bar.update()
        return x

    @torch.no_grad()
    def sampling_seconds(self, n: int, y=None, repeats: int = 3) -> float:
        """Seconds sample(n) takes on this machine, timed on the first row's and the last row's pixel step:
        a step's cost grows linearly with the rows it computes, so the mean of the two is the mean step."""
        import time

        ref = next(self.parameters())
        c, h, w = self.shape
        x = torch.zeros(n, c, h, w, device=ref.device, dtype=ref.dtype)
        self._sample_pixel(x, y, 0, None)  # warm-up: the first call pays for allocations
        times = []
        for pos in (0, (h - 1) * w):
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                self._sample_pixel(x, y, pos, None)
                if ref.device.type == "cuda":
                    torch.cuda.synchronize(ref.device)
                runs.append(time.perf_counter() - t0)
            times.append(sorted(runs)[repeats // 2])
        return h * w * (times[0] + times[1]) / 2

    def _sample_pixel(self, x, y, pos: int, generator) -> None:
        """Draw pixel `pos` (raster order) of every image of x in place, given the pixels before it."""
        c, _, w = self.shape
        i, j = divmod(pos, w)
        # Row i depends on rows <= i only, so the rows below are not computed (half the work).
        if self.output == "softmax256":
            for ch in range(c):
                probs = F.softmax(self(x[:, :, : i + 1], y)[:, ch, :, i, j], dim=1)
                x[:, ch, i, j] = from_levels(torch.multinomial(probs, 1, generator=generator)[:, 0], x.dtype)
        else:
            params = self(x[:, :, : i + 1], y)[:, :, i : i + 1, j : j + 1]
            x[:, :, i, j] = sample_discretized_mix_logistic(params, c, generator)[:, :, 0, 0]


class CategoricalPixelCNN(nn.Module):
    """Gated PixelCNN over maps of categories (N, h, w) in 0..K-1, e.g. a VQ-VAE's codes: an embedding
    of each category, n_layers gated blocks (the first 'A'), and K logits per position."""

    def __init__(self, n_categories: int, shape: tuple[int, int], n_layers: int = 8, hidden: int = 64,
                 kernel: int = 3, first_kernel: int = 7):
        super().__init__()
        self.n_categories, self.shape = n_categories, tuple(shape)
        self.embed = nn.Embedding(n_categories, hidden)
        self.blocks = nn.ModuleList([GatedBlock(hidden, hidden, first_kernel, "A")]
                                    + [GatedBlock(hidden, hidden, kernel, "B") for _ in range(n_layers - 1)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, n_categories, 1))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, h, w) of each position given the positions before it in raster order."""
        v = h = self.embed(codes).permute(0, 3, 1, 2)
        for block in self.blocks:
            v, h = block(v, h)
        return self.head(h)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """Exact log P(codes) in nats per map."""
        return -F.cross_entropy(self(codes), codes, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling in raster order: h*w passes; returns codes (n, h, w) (long)."""
        dev = self.embed.weight.device
        rows, cols = self.shape
        codes = torch.zeros(n, rows, cols, dtype=torch.long, device=dev)
        with bars.bar(rows * cols, f"prior sampling {n} code maps", "px") as bar:
            for pos in range(rows * cols):
                i, j = divmod(pos, cols)
                probs = F.softmax(self(codes[:, : i + 1])[:, :, i, j].float(), dim=1)
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
                bar.update()
        return codes
