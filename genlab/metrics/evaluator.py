"""Sample-based evaluation of a model against its dataset, shared by `genlab eval` and the trainer.

What is measured is the metric table (metrics/table.py: fid, kid, prdc, is, classes, cond_acc, modes,
memorization, nll; choose with `metrics=[...]`, default: all that apply); how is one EvalSettings.

Samples are always compared with the *reference* split (train by default); the real-data floor is
the same computation with held-out real data (the other split) in place of the samples, at the same
sample count where the split is large enough.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import re
from pathlib import Path

import torch

from genlab.errors import GenlabError
from genlab.metrics import feature_stats, nearest_neighbours
from genlab.metrics._distance import kth_neighbour_distance
from genlab.metrics.records import Entry, EvalSettings, Metric, Scoring
from genlab.metrics.refcache import ReferenceCache, tensor_digest
from genlab.metrics.table import BY_NAME, base_name, better, metric
from genlab.metrics.sampling import batched_samples
from genlab.seeds import derive

log = logging.getLogger("genlab")

__all__ = ["Entry", "EvalSettings", "Evaluator", "PointFeatures", "base_name", "better"]


class PointFeatures:
    """For toy data the features are the points themselves."""

    name = id = "points"
    test_accuracy = None
    path = None

    def embed(self, x: torch.Tensor):
        return x.reshape(len(x), -1).float().cpu(), None

    def digest(self) -> str:
        return "points"


def finite_samples(x: torch.Tensor, name: str) -> torch.Tensor:
    """The samples with NaN / inf entries replaced (0, and the data range's ends for +-inf), said in one
    warning: a model that draws a few non-finite samples (an early Glow) is scored, not a crashed run."""
    if x.numel() == 0 or bool(torch.isfinite(x).all()):
        return x
    bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
    log.warning("%s drew %d of %d samples with NaN or inf values; they are scored with those values set to 0 "
                "(+-inf to +-1)", name, bad, len(x))
    return torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)


class Evaluator:
    """Evaluate models on a Data: `evaluate(model)`, `floor()`, and `__call__` as the trainer's hook."""

    def __init__(self, data, settings: EvalSettings | None = None, *, metrics=None, device=None,
                 featurenet_data=None):
        self.settings = s = dataclasses.replace(settings or EvalSettings())
        if s.split not in ("train", "test"):
            raise GenlabError(f"split must be train or test (the reference the samples are compared with), got {s.split}")
        self.data = data
        self.points = data.kind == "points"
        s.num_samples = int(s.num_samples or (2500 if self.points else 10000))
        if s.num_samples < 2:
            raise GenlabError(f"num_samples must be >= 2, got {s.num_samples}")
        self.requested = [metric(m).name for m in metrics] if metrics else None
        self.split = s.split
        self.heldout = "test" if s.split == "train" else "train"
        self.device = torch.device(device) if device is not None else data.device
        self.featurenet_data = featurenet_data
        self.skipped: list[str] = []
        self._nets = None
        self._caches: dict[str, ReferenceCache] = {}
        self._digests: dict = {}

    @property
    def num_samples(self) -> int:
        return self.settings.num_samples

    @property
    def seed(self) -> int:
        return self.settings.seed

    # ---- what applies -------------------------------------------------------------------------
    def groups(self, model=None) -> list[str]:
        """The metrics of the table that apply to this data (and model), in the requested order."""
        wanted = self.requested or list(BY_NAME)
        return [name for name in wanted if metric(name).applies(self.data, model)]

    # ---- feature networks ---------------------------------------------------------------------
    def nets(self) -> list:
        """The feature extractors: the points themselves, or the domain classifier (+ Inception)."""
        if self._nets is not None:
            return self._nets
        if self.points:
            self._nets = [PointFeatures()]
            return self._nets
        from genlab.metrics import featurenet as fnet

        nets = []
        if self.data.num_classes is not None and self.data.train_y is not None:
            fd = self.featurenet_data or self.data
            cfg = dict(self.settings.featurenet)
            cache = cfg.pop("cache_dir", None)
            recipe = fnet.recipe_for(fd, **cfg)
            nets.append(fnet.load_or_train(fd, recipe, cache, self.device))
        else:
            self.skipped.append("feature-network metrics: the dataset has no labels to train a classifier on")
        if self.settings.inception_weights:
            nets.append(fnet.InceptionNet(self.settings.inception_weights, self.device))
        else:
            self.skipped.append("Inception FID/IS: set eval.inception_weights=PATH (a local "
                                "pt_inception-2015-12-05 file) to compute them")
        self._nets = nets
        return nets

    def _split_x(self, split: str) -> torch.Tensor:
        return self.data.train_x if split == "train" else self.data.test_x

    def _split_y(self, split: str):
        return self.data.train_y if split == "train" else self.data.test_y

    def _cache(self, net) -> ReferenceCache:
        """The reference cache of one network: on disk next to it (image features), in memory for points."""
        if net.id not in self._caches:
            folder = None
            if self.settings.cache and not self.points:
                from genlab.metrics import featurenet as fnet

                base = Path(net.path).parent if net.path else fnet.cache_dir(self.settings.featurenet.get("cache_dir"))
                folder = base / (re.sub(r"[^A-Za-z0-9_.-]", "_", net.id) + ".refs")
            self._caches[net.id] = ReferenceCache(folder)
        return self._caches[net.id]

    def _key(self, net, split: str, n: int, **extra) -> dict:
        """Everything that decides a reference entry: network, weights, dataset content, split, count."""
        if net.id not in self._digests:
            self._digests[net.id] = net.digest()
        if split not in self._digests:
            self._digests[split] = tensor_digest(self.data.raw(split))
        return {"featurenet": net.id, "weights": self._digests[net.id], "dataset": self.data.name,
                "data": self._digests[split], "split": split, "n": int(n), **extra}

    def split_features(self, net, split: str, n: int | None = None) -> dict:
        """Features (and class probabilities) of the first n images of a split, with their mean and
        covariance: computed once per network, dataset and split, then read from the cache."""
        size = len(self.data.raw(split))
        n = size if n is None else min(int(n), size)

        def compute() -> dict:
            parts = [net.embed(b.x) for b in self.data.batches(split, 5000, limit=n)]
            feats = torch.cat([f for f, _ in parts])
            probs = torch.cat([p for _, p in parts]) if parts[0][1] is not None else None
            mu, sigma = feature_stats(feats)
            out = {"feats": feats, "mu": mu, "sigma": sigma}
            if probs is not None:
                out["probs"] = probs
            return out

        return self._cache(net).get(f"{self.data.name}-{split}-{n}", self._key(net, split, n), compute)

    def reference(self, net) -> dict:
        """Reference-split features of one network: all of them (FID), a fixed subset (PRDC)."""
        ref = self.split_features(net, self.split, self.settings.reference_limit)
        if "perm" not in ref:
            g = torch.Generator().manual_seed(derive(self.seed, "prdc-reference"))
            ref = {**ref, "perm": torch.randperm(len(ref["feats"]), generator=g), "stats": (ref["mu"], ref["sigma"])}
        return ref

    def reference_radii(self, net, ref: dict, m: int) -> torch.Tensor:
        """k-NN radii of the PRDC reference subset (the first m of the seeded permutation), cached."""
        n = len(ref["feats"])
        k = self.settings.prdc_k
        key = self._key(net, self.split, n, prdc_m=int(m), prdc_k=k, seed=derive(self.seed, "prdc-reference"))

        def compute() -> dict:
            real = ref["feats"][ref["perm"][:m]]
            return {"radii": kth_neighbour_distance(real.to(torch.float64), k)}

        return self._cache(net).get(f"{self.data.name}-{self.split}-{n}-radii{m}", key, compute)["radii"]

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def samples(self, model, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n samples (CPU, float32) and, for a conditional model, the labels they were asked for."""
        n = n or self.num_samples
        labels = None
        if model.conditional and self.data.num_classes:
            labels = torch.arange(n) % int(self.data.num_classes)
        x = batched_samples(model, n, self.seed, self.settings.batch_size, labels=labels, **self.settings.sampling)
        return finite_samples(x, getattr(getattr(model, "cfg", None), "name", "the model")), labels

    # ---- scoring one set ----------------------------------------------------------------------
    def score(self, x: torch.Tensor, groups: list[str], target_labels=None, embedded=None,
              model=None) -> dict[str, Entry]:
        """Every metric of `groups` for the set x: a model's samples, or held-out real data for the floor
        (model None); embedded(net) may give x's (features, probabilities) when they are already known."""
        rows = [metric(g) for g in groups]
        out: dict[str, Entry] = {}
        per_net = [m for m in rows if m.per_network]
        for net in self.nets() if per_net else []:
            feats, probs = embedded(net) if embedded is not None else net.embed(x)
            s = Scoring(self, x, target_labels, model, net, feats, probs, self.reference(net))
            for m in per_net:
                for key, e in _scored(m, s).items():
                    e.feature_network = net.id
                    out[f"{key}[{net.name}]"] = e
        s = Scoring(self, x, target_labels, model)
        for m in rows:
            if not m.per_network:
                out.update(_scored(m, s))
        return out

    # ---- the two sides of the table -----------------------------------------------------------
    def evaluate(self, model, groups: list[str] | None = None) -> tuple[dict[str, Entry], torch.Tensor]:
        """Metrics of the model's samples (and its own held-out likelihood); returns (entries, samples)."""
        groups = groups or self.groups(model)
        if any(metric(g).uses_samples for g in groups):
            x, labels = self.samples(model)
        else:  # e.g. metrics=[nll]: the model's own likelihood, no samples to draw
            x, labels = torch.empty(0), None
        return self.score(x, groups, labels, model=model), x

    def floor(self, groups: list[str], blur: float | None = None) -> dict[str, Entry]:
        """The same metrics for real held-out data (the other split) at the same sample count; blurred by a
        Gaussian of `blur` pixels when given (a floor that tells sharp samples from blurry ones)."""
        held = self._split_x(self.heldout)
        n = min(self.num_samples, len(held))
        g = torch.Generator().manual_seed(derive(self.seed, "floor"))
        idx = torch.randperm(len(held), generator=g)[:n].to(held.device)
        x = held[idx].float().cpu()
        y = self._split_y(self.heldout)

        def embedded(net):  # rows of the cached held-out split features
            f = self.split_features(net, self.heldout)
            cpu = idx.cpu()
            return f["feats"][cpu], (f["probs"][cpu] if "probs" in f else None)

        if blur:
            from genlab.pixels import gaussian_blur

            x, embedded = gaussian_blur(x, blur), None
        return self.score(x, [g_ for g_ in groups if metric(g_).floor], y[idx].cpu() if y is not None else None,
                          embedded)

    def nearest_grid(self, x: torch.Tensor, n: int = 24, per_row: int = 8) -> torch.Tensor | None:
        """Image grid: rows of samples, each followed by a row of their nearest training images."""
        if self.points:
            return None
        from genlab import viz

        n = min(n, len(x))
        _, idx = nearest_neighbours(x[:n], self.data.train_x.cpu())
        nn_imgs = self.data.train_x.cpu()[idx]
        rows = []
        for i in range(0, n, per_row):
            rows += [x[i:i + per_row], nn_imgs[i:i + per_row]]
        return viz.grid(torch.cat(rows), nrow=per_row)

    # ---- the trainer's hook -------------------------------------------------------------------
    def __call__(self, model, data, step: int) -> dict[str, float]:
        """Scalars for the trainer's periodic evaluation (no likelihood: the trainer asks the model)."""
        groups = [g for g in self.groups(model) if g != "nll"]
        if self.requested is None:
            if model.slow_sampling:
                return {}  # e.g. PixelCNN: H*W*C passes per sample; its NLL is the periodic metric
            groups = [g for g in groups if metric(g).cost == "cheap"]
        if not groups:  # e.g. eval_metrics=[nll]: the trainer asks the model itself
            return {}
        entries, _ = self.evaluate(model, groups)
        return {k: float(e.value) for k, e in entries.items() if math.isfinite(float(e.value))}


def _scored(m: Metric, s: Scoring) -> dict[str, Entry]:
    """m's score function (imported on first use) on one set."""
    module, function = m.score.split(":")
    return getattr(importlib.import_module(module), function)(s)
