"""Domain feature networks: a small LeNet-style classifier per labelled image dataset.

Inception weights cannot be downloaded here, and an ImageNet network judges 28x28 digits poorly, so
FID/KID/PRDC use the penultimate features of a classifier trained on the dataset itself, and IS /
class coverage / conditional accuracy use its softmax. A network is cached under
`<cache_dir>/<name>.pt` where the name carries a hash of its recipe (architecture, dataset, image
shape, training set size, epochs, seed, ...): change the recipe and a new network is trained;
keep it and the cached one is reused. Its test accuracy is stored beside the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from genlab import progress, safeio
from genlab.errors import GenlabError
from genlab.metrics.refcache import cache_root, module_digest
from genlab.pixels import from_levels, to_uint8

log = logging.getLogger("genlab")

ARCH_VERSION = 1  # bump when LeNet below changes, so old caches are not reused


@dataclass
class Recipe:
    """Everything that decides the weights of a feature network (its hash names the cache file)."""

    dataset: str
    shape: tuple
    num_classes: int
    n_train: int
    arch: str = "lenet"
    width: int = 32
    feature_dim: int = 128
    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    arch_version: int = ARCH_VERSION

    def digest(self) -> str:
        text = json.dumps({**asdict(self), "shape": list(self.shape)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def short_name(self) -> str:
        """The name metric keys carry, e.g. lenet-fashion_mnist."""
        return f"{self.arch}-{self.dataset}"

    @property
    def id(self) -> str:
        """The cache id, e.g. lenet-fashion_mnist-1a2b3c4d."""
        return f"{self.short_name}-{self.digest()[:8]}"


class LeNet(nn.Module):
    """conv5-pool-conv5-pool-fc(feature_dim)-fc(classes); features are the post-ReLU fc activations."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 2 * width * (size // 4) ** 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(flat, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureNet:
    """A trained classifier used as a feature extractor; `embed` gives (features, class probabilities)."""

    def __init__(self, net: nn.Module, recipe: Recipe, test_accuracy: float, path: Path | None = None):
        self.net = net.eval()
        self.recipe = recipe
        self.test_accuracy = float(test_accuracy)
        self.path = path
        self.name = recipe.short_name
        self.id = recipe.id

    def to(self, device) -> "FeatureNet":
        self.net.to(device)
        return self

    def digest(self) -> str:
        """A hash of the weights (reference caches are keyed by it)."""
        return module_digest(self.net)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, D) float32 and softmax (N, K) of images in [-1, 1] (N, C, H, W), on CPU."""
        dev = next(self.net.parameters()).device
        feats, probs = [], []
        with progress.bar(len(x), f"features [{self.name}]", "img") as bar:
            for i in range(0, len(x), batch_size):
                f = self.net.features(x[i:i + batch_size].to(dev).float())
                feats.append(f.cpu())
                probs.append(F.softmax(self.net.head(f), 1).cpu())
                bar.update(len(f))
        return torch.cat(feats), torch.cat(probs)


def recipe_for(data, **overrides) -> Recipe:
    """The default recipe for a labelled image Data (overrides: any Recipe field)."""
    if data.kind != "image" or data.num_classes is None or data.train_y is None:
        raise GenlabError(f"a feature network needs a labelled image dataset; {data.name} is not one")
    c, h, w = data.shape
    if h < 8 or h != w:
        raise GenlabError(f"the LeNet feature network needs square images of at least 8x8, got {h}x{w}")
    fields = {k: v for k, v in overrides.items() if v is not None}
    # limit: train on the first images only (a quick network for smoke tests; its own cache entry)
    limit = fields.pop("limit", None)
    n_train = len(data) if limit is None else min(int(limit), len(data))
    return Recipe(dataset=data.name, shape=tuple(data.shape), num_classes=int(data.num_classes),
                  n_train=n_train, **fields)


def cache_dir(path: str | None = None) -> Path:
    """Where feature networks live: the given path, else <cache root>/featurenets (see refcache.cache_root)."""
    if path:
        return Path(os.path.expanduser(str(path)))
    return cache_root() / "featurenets"


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            xb = from_levels(x[i:i + 1000].to(device))
            correct += int((net(xb).argmax(1).cpu() == y[i:i + 1000].cpu()).sum())
    return correct / max(len(x), 1)


def fit_classifier(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, device="cpu", tag: str = "") -> LeNet:
    """The recipe's LeNet trained on 8-bit images x (N, C, H, W) with labels y (seeded, in eval mode on CPU)."""
    g = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        c, h, _ = recipe.shape
        net = LeNet(c, h, recipe.num_classes, recipe.width, recipe.feature_dim).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    x, y = x.cpu(), y.cpu()
    steps = max(1, -(-len(x) // recipe.batch_size)) * recipe.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), progress.bar(steps, f"training feature network {recipe.id}", "step") as bar:
        torch.manual_seed(recipe.seed)  # dropout masks
        for epoch in range(recipe.epochs):
            net.train()
            perm = torch.randperm(len(x), generator=g)
            total, n = 0.0, 0
            for i in range(0, len(x), recipe.batch_size):
                idx = perm[i:i + recipe.batch_size]
                xb = from_levels(x[idx].to(device))
                loss = F.cross_entropy(net(xb), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
                total += float(loss.detach()) * len(idx)
                n += len(idx)
            log.info("%s: epoch %d/%d, train loss %.4f (%.0fs)", tag or f"classifier {recipe.id}", epoch + 1,
                     recipe.epochs, total / n, time.perf_counter() - t0)
    return net.cpu().eval()


def train(data, recipe: Recipe, device="cpu") -> tuple[LeNet, float]:
    """Train the recipe's classifier on data's train split; returns (net, test accuracy)."""
    net = fit_classifier(data.raw("train")[:recipe.n_train], data.train_y[:recipe.n_train], recipe, device,
                         f"featurenet {recipe.id}")
    n_test = min(len(data.test_y), recipe.n_train)  # the whole test split unless trained on a few images
    acc = _accuracy(net.to(device), data.raw("test")[:n_test].cpu(), data.test_y[:n_test].cpu(), device)
    return net.cpu().eval(), acc


def _cached(path: Path, recipe: Recipe) -> FeatureNet | None:
    """The cached network of this recipe, or None (and a warning) when the file is not one: it is retrained."""
    try:
        state = safeio.load_tensors(path, "feature network")
    except GenlabError as e:
        log.warning("%s; retraining it", e)
        return None
    if not isinstance(state, dict) or state.get("digest") != recipe.digest():
        log.warning("featurenet cache %s does not match its recipe; retraining", path)
        return None
    c, h, _ = recipe.shape
    net = LeNet(c, h, recipe.num_classes, recipe.width, recipe.feature_dim)
    try:
        net.load_state_dict(state["weights"])
        accuracy = float(state["test_accuracy"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        log.warning("featurenet cache %s has the recipe's digest but not its weights (%s); retraining", path,
                    str(e).splitlines()[0][:200])
        return None
    return FeatureNet(net, recipe, accuracy, path)


def load_or_train(data, recipe: Recipe | None = None, cache: str | Path | None = None, device="cpu",
                  retrain: bool = False) -> FeatureNet:
    """The cached network for this recipe, training (and caching) it first if there is none."""
    recipe = recipe or recipe_for(data)
    folder = cache_dir(str(cache) if cache else None)
    path = folder / f"{recipe.id}.pt"
    if path.is_file() and not retrain:
        cached = _cached(path, recipe)
        if cached is not None:
            return cached.to(device)
    log.info("training feature network %s on %s (%d images, %d epochs); cached at %s", recipe.id,
             recipe.dataset, recipe.n_train, recipe.epochs, path)
    net, acc = train(data, recipe, device)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"weights": net.state_dict(), "recipe": {**asdict(recipe), "shape": list(recipe.shape)},
                "digest": recipe.digest(), "test_accuracy": acc}, tmp)
    os.replace(tmp, path)
    (folder / f"{recipe.id}.json").write_text(json.dumps(
        {"id": recipe.id, "test_accuracy": acc, "recipe": {**asdict(recipe), "shape": list(recipe.shape)}},
        indent=2) + "\n")
    log.info("feature network %s: test accuracy %.4f", recipe.id, acc)
    return FeatureNet(net, recipe, acc, path).to(device)


class InceptionNet:
    """The standard Inception-v3 (torch-fidelity's TF-ported network) from a local weights file."""

    name = "inception"

    def __init__(self, weights_path: str, device="cpu"):
        p = Path(os.path.expanduser(str(weights_path)))
        if not p.is_file():
            raise GenlabError(f"eval.inception_weights={p} does not exist; give the path of "
                              "pt_inception-2015-12-05-6726825d.pth or leave it null")
        # Read once here with weights_only, whatever torch-fidelity's own torch.load does with it.
        weights = safeio.load_tensors(p, "eval.inception_weights")
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise GenlabError(f"eval.inception_weights={p} is not a state dict of tensors")
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise GenlabError("eval.inception_weights needs torch-fidelity: pip install 'genlab[inception]'") from None
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=str(p)).to(device).eval()
        self.id = f"inception-v3-compat:{p.name}"
        self.test_accuracy = None
        self.path = None  # its reference caches live in the feature-network cache, not beside the weights

    def digest(self) -> str:
        return module_digest(self.net)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
        """2048-d pool features and softmax of the 1008 logits for images in [-1, 1]."""
        dev = next(self.net.parameters()).device
        feats, probs = [], []
        with progress.bar(len(x), f"features [{self.name}]", "img") as bar:
            for i in range(0, len(x), batch_size):
                xb = to_uint8(x[i:i + batch_size])
                if xb.shape[1] == 1:
                    xb = xb.expand(-1, 3, -1, -1)
                f, logits = self.net(xb.to(dev))
                feats.append(f.float().cpu())
                probs.append(F.softmax(logits.double(), 1).float().cpu())
                bar.update(len(xb))
        return torch.cat(feats), torch.cat(probs)
