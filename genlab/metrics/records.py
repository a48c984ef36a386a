"""The records of evaluation: a metric's value (Entry), what a score function is given (Scoring),
one row of the metric table (Metric), the evaluation settings (EvalSettings) and the feature-network
protocol (FeatureNet). No torch import: the config checks read the table before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

DIRECTIONS = ("lower", "higher", "~1", "~0.5", "")  # "": reported, not a score (e.g. a standard deviation)
COSTS = ("cheap", "costly")  # the trainer's periodic evaluation runs the cheap ones unless told otherwise


@dataclass
class Entry:
    """One metric value with the counts it was computed from."""

    value: float
    num_samples: int
    num_reference: int | None = None
    feature_network: str | None = None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class FeatureNet(Protocol):
    """What a feature extractor offers the evaluator (the domain LeNet, Inception, the points themselves)."""

    name: str  # the tag metric keys carry: fid[<name>]
    id: str  # the cache id (recipe hash included)
    test_accuracy: float | None  # its accuracy on the test split (None when not a classifier of this data)
    path: Any  # where its weights live (reference caches sit beside them); None = not on disk

    def embed(self, x: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """(features (N, D) float32 on CPU, class probabilities (N, K) or None) of x in data space."""

    def digest(self) -> str:
        """A hash of the weights: reference caches are keyed by it."""


@dataclass
class Scoring:
    """What a score function sees: one set (samples, or held-out real data for the floor) and its context.

    Per-network metrics also get net, feats/probs (x embedded by net) and ref (the reference split's
    features, stats, a seeded permutation); ev is the Evaluator (data, settings, reference caches)."""

    ev: Any
    x: "torch.Tensor"
    labels: "torch.Tensor | None" = None  # the classes samples were asked for / the held-out labels
    model: Any = None  # None when scoring the real-data floor
    net: Optional[FeatureNet] = None
    feats: "torch.Tensor | None" = None
    probs: "torch.Tensor | None" = None
    ref: dict | None = None

    @property
    def floor(self) -> bool:
        """Whether this set is held-out real data (the floor column) rather than samples."""
        return self.model is None


@dataclass(frozen=True)
class Metric:
    """One row of the metric table: a name users select, the scalars it writes and how it is scored.

    keys: scalar name -> direction (one of DIRECTIONS); cost: one of COSTS; applies(data, model): whether it
    makes sense here (model None: whatever the model); score: "module:function" taking a Scoring and
    returning {key: Entry}; per_network: scored once per feature network, keys tagged [net.name];
    floor: held-out real data is scored the same way for the floor column; uses_samples: it reads the
    model's samples (else none are drawn for it: a PixelCNN's NLL needs no ancestral sampling)."""

    name: str
    keys: dict
    cost: str
    applies: Callable[[Any, Any], bool]
    score: str
    per_network: bool = False
    floor: bool = True
    settings: tuple = ()  # the EvalSettings fields it reads (documentation and eval.yaml)
    #: whether it scores the model's samples; a model's own likelihood does not, so metrics=[nll] draws none
    uses_samples: bool = True


@dataclass
class EvalSettings:
    """Every setting of an evaluation, as one object (eval.yaml, or the trainer's eval_* options)."""

    num_samples: Optional[int] = None  # None = 10000 for images, 2500 for toy points
    seed: int = 0
    split: str = "train"  # the reference split samples are compared with; the floor uses the other one
    batch_size: int = 500  # samples drawn per model.sample call
    reference_limit: Optional[int] = None  # reference images used (None = the whole split)
    memorization_samples: int = 1000
    prdc_max: int = 5000
    prdc_k: int = 5
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    inception_weights: Optional[str] = None
    nll_images: Optional[int] = None  # test images of a likelihood model's NLL (None = the whole test split)
    nll_k: Optional[int] = None  # importance samples of an estimated NLL (None = the model's own)
    featurenet: dict = field(default_factory=dict)  # the feature network's recipe overrides, cache_dir
    cache: bool = True  # keep reference features on disk next to the feature network
    sampling: dict = field(default_factory=dict)  # the sampler's settings for model.sample (diffusion: steps, eta, guidance)
