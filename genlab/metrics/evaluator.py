"""Sample-based evaluation of a model against its dataset, shared by `genlab eval` and the trainer.

Metric groups (choose with `metrics=[...]`; default: all that apply):
  fid, kid, prdc   on feature-network features (images) or on the points themselves (toy data)
  is, classes      on the feature network's softmax (labelled image datasets)
  cond_acc         class accuracy of class-conditional samples (conditional models)
  modes            PacGAN/VEEGAN mode metrics (toy mixtures with known centres)
  memorization     nearest training neighbours of samples (pixels / coordinates)
  nll              the model's own held-out likelihood (likelihood models)

Samples are always compared with the *reference* split (train by default); the real-data floor is
the same computation with held-out real data (the other split) in place of the samples, at the same
sample count where the split is large enough.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genlab import metrics as M
from genlab.errors import GenlabError
from genlab.metrics._distance import kth_neighbour_distance
from genlab.metrics.refcache import ReferenceCache, tensor_digest

log = logging.getLogger("genlab")

GROUPS = ("fid", "kid", "prdc", "is", "classes", "cond_acc", "modes", "memorization", "nll")
# The trainer's periodic evaluation skips the k-NN groups by default: they cost more than the rest.
CHEAP_GROUPS = ("fid", "kid", "is", "classes", "cond_acc", "modes", "nll")

LOWER = ("fid", "kid", "class_kl", "reverse_kl", "nll", "bits_per_dim", "neg_elbo", "kl")
HIGHER = ("is", "precision", "recall", "density", "coverage", "classes_covered", "cond_acc", "modes",
          "high_quality")
NOT_A_SCORE = ("_std", "sample_nn_mean", "test_nn_mean", "num_")


def base_name(key: str) -> str:
    """fid[lenet-mnist] -> fid."""
    return key.split("[", 1)[0]


def better(key: str) -> str:
    """'lower', 'higher', '~1' or '' for a metric key (used by the table and by best.pt)."""
    b = base_name(key)
    if any(s in b for s in NOT_A_SCORE):
        return ""
    if b == "nn_ratio":
        return "~1"
    if b == "closer_than_test_median":
        return "~0.5"
    if any(b == s or b.endswith(s) for s in LOWER):
        return "lower"
    if b in HIGHER:
        return "higher"
    return ""


@dataclass
class Entry:
    """One metric value with the counts it was computed from."""

    value: float
    num_samples: int
    num_reference: int | None = None
    feature_network: str | None = None
    extra: dict = field(default_factory=dict)


class PointFeatures:
    """For toy data the features are the points themselves."""

    name = id = "points"
    test_accuracy = None

    def embed(self, x: torch.Tensor, batch_size: int = 0):
        return x.reshape(len(x), -1).float().cpu(), None

    def digest(self) -> str:
        return "points"


class Evaluator:
    """Evaluate models on a Data: `evaluate(model)`, `floor()`, and `__call__` as the trainer's hook."""

    def __init__(self, data, *, metrics=None, num_samples: int | None = None, seed: int = 0,
                 split: str = "train", featurenet: dict | None = None, inception_weights: str | None = None,
                 device=None, memorization_samples: int = 1000, prdc_max: int = 5000, prdc_k: int = 5,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, batch_size: int = 500,
                 featurenet_data=None, reference_limit: int | None = None, nll_images: int | None = None,
                 nll_k: int | None = None, cache: bool = True):
        if split not in ("train", "test"):
            raise GenlabError(f"split must be train or test (the reference the samples are compared with), got {split}")
        self.data = data
        self.points = data.kind == "points"
        self.num_samples = int(num_samples or (2500 if self.points else 10000))
        if self.num_samples < 2:
            raise GenlabError(f"num_samples must be >= 2, got {self.num_samples}")
        self.requested = list(metrics) if metrics else None
        if self.requested:
            unknown = [m for m in self.requested if m not in GROUPS]
            if unknown:
                raise GenlabError(f"unknown metric {unknown[0]}; choose from {', '.join(GROUPS)}")
        self.seed = int(seed)
        self.split = split
        self.heldout = "test" if split == "train" else "train"
        self.fn_cfg = dict(featurenet or {})
        self.inception_weights = inception_weights
        self.device = torch.device(device) if device is not None else data.device
        self.memorization_samples = int(memorization_samples)
        self.prdc_max, self.prdc_k = int(prdc_max), int(prdc_k)
        self.kid_subsets, self.kid_subset_size = int(kid_subsets), int(kid_subset_size)
        self.batch_size = int(batch_size)
        self.featurenet_data = featurenet_data
        self.reference_limit = reference_limit
        # The NLL of `genlab eval`: the whole test split unless bounded; k None = the model's eval_k.
        self.nll_images, self.nll_k = nll_images, nll_k
        self.use_disk_cache = cache
        self.skipped: list[str] = []
        self._nets = None
        self._caches: dict[str, ReferenceCache] = {}
        self._digests: dict = {}

    # ---- what applies -------------------------------------------------------------------------
    def groups(self, model=None) -> list[str]:
        """The metric groups that apply to this data (and model), in the requested order."""
        ok = ["fid", "kid", "prdc", "memorization"]
        labelled = not self.points and self.data.num_classes is not None
        if labelled:
            ok += ["is", "classes"]
            if model is not None and model.conditional:
                ok.append("cond_acc")
        if self.points and "centers" in self.data.info:
            ok.append("modes")
        if model is not None and model.family == "likelihood":
            ok.append("nll")
        wanted = self.requested or list(GROUPS)
        return [g for g in wanted if g in ok]

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
            cfg = dict(self.fn_cfg)
            cache = cfg.pop("cache_dir", None)
            recipe = fnet.recipe_for(fd, **cfg)
            nets.append(fnet.load_or_train(fd, recipe, cache, self.device))
        else:
            self.skipped.append("feature-network metrics: the dataset has no labels to train a classifier on")
        if self.inception_weights:
            nets.append(fnet.InceptionNet(self.inception_weights, self.device))
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
            if self.use_disk_cache and not self.points:
                from genlab.metrics import featurenet as fnet

                path = getattr(net, "path", None)
                base = Path(path).parent if path else fnet.cache_dir(self.fn_cfg.get("cache_dir"))
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
            mu, sigma = M.feature_stats(feats)
            out = {"feats": feats, "mu": mu, "sigma": sigma}
            if probs is not None:
                out["probs"] = probs
            return out

        return self._cache(net).get(f"{self.data.name}-{split}-{n}", self._key(net, split, n), compute)

    def reference(self, net) -> dict:
        """Reference-split features of one network: all of them (FID), a fixed subset (PRDC)."""
        ref = self.split_features(net, self.split, self.reference_limit)
        if "perm" not in ref:
            g = torch.Generator().manual_seed(self.seed + 7)
            ref = {**ref, "perm": torch.randperm(len(ref["feats"]), generator=g), "stats": (ref["mu"], ref["sigma"])}
        return ref

    def reference_radii(self, net, ref: dict, m: int) -> torch.Tensor:
        """k-NN radii of the PRDC reference subset (the first m of the seeded permutation), cached."""
        n = len(ref["feats"])
        key = self._key(net, self.split, n, prdc_m=int(m), prdc_k=self.prdc_k, seed=self.seed)

        def compute() -> dict:
            real = ref["feats"][ref["perm"][:m]]
            return {"radii": kth_neighbour_distance(real.to(torch.float64), self.prdc_k)}

        return self._cache(net).get(f"{self.data.name}-{self.split}-{n}-radii{m}", key, compute)["radii"]

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def samples(self, model, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n samples (CPU, float32) and, for a conditional model, the labels they were asked for."""
        n = n or self.num_samples
        dev = next(model.parameters()).device
        g = torch.Generator(dev).manual_seed(self.seed)
        labels = None
        if model.conditional and self.data.num_classes:
            labels = torch.arange(n) % int(self.data.num_classes)
        out = []
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for i in range(0, n, self.batch_size):
                m = min(self.batch_size, n - i)
                kw = {"labels": labels[i:i + m].to(dev)} if labels is not None else {}
                out.append(model.sample(m, generator=g, **kw).float().cpu())
        return torch.cat(out), labels

    # ---- scoring one set ----------------------------------------------------------------------
    def score(self, x: torch.Tensor, groups: list[str], target_labels=None, embedded=None) -> dict[str, Entry]:
        """Every metric of `groups` for the set x (samples, or held-out real data for the floor);
        embedded(net) may give x's (features, probabilities) when they are already known."""
        n = len(x)
        out: dict[str, Entry] = {}
        for net in self.nets() if any(g in groups for g in ("fid", "kid", "prdc", "is", "classes", "cond_acc")) else []:
            tag = f"[{net.name}]"
            ref = self.reference(net)
            feats, probs = embedded(net) if embedded is not None else net.embed(x)
            nref = len(ref["feats"])
            if "fid" in groups:
                fid = M.fid_from_stats(*M.feature_stats(feats), *ref["stats"])
                out["fid" + tag] = Entry(fid, n, nref, net.id)
            if "kid" in groups:
                k = M.kid(feats, ref["feats"], subsets=self.kid_subsets, subset_size=self.kid_subset_size,
                          generator=torch.Generator().manual_seed(self.seed))
                m = min(self.kid_subset_size, n, nref)
                for key in ("kid", "kid_std"):
                    out[key + tag] = Entry(k[key], n, nref, net.id, {"subsets": self.kid_subsets, "subset_size": m})
            if "prdc" in groups:
                m = min(n, self.prdc_max, nref)
                if m > self.prdc_k:
                    real = ref["feats"][ref["perm"][:m]]
                    r = M.prdc(real, feats[:m], k=self.prdc_k, real_radii=self.reference_radii(net, ref, m))
                    for key, v in r.items():
                        out[key + tag] = Entry(v, m, m, net.id, {"k": self.prdc_k})
            if probs is not None and "is" in groups:
                s = M.inception_score(probs, splits=min(10, n))
                for key in ("is", "is_std"):
                    out[key + tag] = Entry(s[key], n, None, net.id, {"splits": min(10, n)})
            if probs is not None and "classes" in groups and self.data.num_classes:
                c = M.class_coverage(probs[:, : int(self.data.num_classes)], int(self.data.num_classes))
                out["classes_covered" + tag] = Entry(c["classes_covered"], n, None, net.id,
                                                     {"num_classes": c["num_classes"]})
                out["class_kl" + tag] = Entry(c["class_kl"], n, None, net.id)
            if probs is not None and "cond_acc" in groups and target_labels is not None:
                out["cond_acc" + tag] = Entry(M.conditional_accuracy(probs, target_labels), n, None, net.id)
        if "modes" in groups:
            r = M.mode_metrics(x, self.data.info["centers"], float(self.data.info["std"]))
            out["modes"] = Entry(r["modes"], n, None, None, {"num_modes": r["num_modes"]})
            out["high_quality"] = Entry(r["high_quality"], n)
            out["reverse_kl"] = Entry(r["reverse_kl"], n)
        if "memorization" in groups:
            m = min(n, self.memorization_samples)
            train, test = self.data.train_x.cpu(), self.data.test_x.cpu()
            mt = min(m, len(test))
            r = M.memorization_ratio(x[:m], train, test[:mt])
            for key in ("nn_ratio", "closer_than_test_median"):
                out[key] = Entry(r[key], m, len(train), "pixels" if not self.points else "points",
                                 {"num_test": mt})
        return out

    # ---- the two sides of the table -----------------------------------------------------------
    def evaluate(self, model, groups: list[str] | None = None) -> tuple[dict[str, Entry], torch.Tensor]:
        """Metrics of the model's samples (and its own held-out likelihood); returns (entries, samples)."""
        groups = groups or self.groups(model)
        x, labels = self.samples(model)
        out = self.score(x, groups, labels)
        if "nll" in groups:
            from genlab.metrics.likelihood import NLLProgress
            from genlab.progress import bar

            limit = min(self.nll_images or len(self.data.raw("test")), len(self.data.raw("test")))
            k = (self.nll_k or model.eval_k()) if model.eval_k() is not None else None
            dev = next(model.parameters()).device
            device = "GPU" if dev.type == "cuda" else dev.type.upper()
            with bar(limit, "NLL", unit="img") as b:
                res = model.evaluate(self.data, limit=limit, k=self.nll_k, progress=NLLProgress(limit, k, device, b))
            # Likelihood models also return their protocol (binarisation, decoder, k, counts: anything but a
            # float): keep it with the numbers.
            protocol = {k: v for k, v in res.items() if not isinstance(v, float)}
            n = int(res.get("eval_images", len(self.data.raw("test"))))
            for k, v in res.items():
                if k not in protocol:
                    out[k] = Entry(float(v), n, None, None, {"split": "test", **protocol})
        return out, x

    def floor(self, groups: list[str]) -> dict[str, Entry]:
        """The same metrics for real held-out data (the other split) at the same sample count."""
        held = self._split_x(self.heldout)
        n = min(self.num_samples, len(held))
        g = torch.Generator().manual_seed(self.seed + 3)
        idx = torch.randperm(len(held), generator=g)[:n].to(held.device)
        x = held[idx].float().cpu()
        y = self._split_y(self.heldout)

        def embedded(net):  # rows of the cached held-out split features
            f = self.split_features(net, self.heldout)
            cpu = idx.cpu()
            return f["feats"][cpu], (f["probs"][cpu] if "probs" in f else None)

        out = self.score(x, [g_ for g_ in groups if g_ not in ("nll", "memorization")],
                         y[idx].cpu() if y is not None else None, embedded)
        if "memorization" in groups and self.heldout == "test":
            # Held-out points are fresh data: by construction about 1 and 0.5; computed, not assumed.
            m = min(n // 2, self.memorization_samples)
            if m >= 2:
                r = M.memorization_ratio(x[:m], self.data.train_x.cpu(), x[m:2 * m])
                for key in ("nn_ratio", "closer_than_test_median"):
                    out[key] = Entry(r[key], m, len(self.data.train_x))
        return out

    def nearest_grid(self, x: torch.Tensor, n: int = 24, per_row: int = 8) -> torch.Tensor | None:
        """Image grid: rows of samples, each followed by a row of their nearest training images."""
        if self.points:
            return None
        from genlab import viz

        n = min(n, len(x))
        _, idx = M.nearest_neighbours(x[:n], self.data.train_x.cpu())
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
            groups = [g for g in groups if g in CHEAP_GROUPS]
        if not groups:  # e.g. eval_metrics=[nll]: the trainer asks the model itself
            return {}
        entries, _ = self.evaluate(model, groups)
        return {k: float(e.value) for k, e in entries.items() if math.isfinite(float(e.value))}
