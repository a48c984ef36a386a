"""The metric table: one record per metric (see records.Metric). A new metric is one file with its
score function and one row here; `genlab eval metrics=[...]`, the trainer's periodic evaluation, the
floor column, best.pt / objectives and `genlab report` all read it.
"""

from __future__ import annotations

from genlab.metrics.records import Metric


# ---- where a metric applies: (data, model) -> bool; model None = regardless of the model ---------------
def anywhere(data, model) -> bool:
    return True


def labelled_images(data, model) -> bool:
    return data.kind == "image" and data.num_classes is not None


def conditional_images(data, model) -> bool:
    return labelled_images(data, model) and model is not None and model.conditional


def toy_mixture(data, model) -> bool:
    return data.kind == "points" and "centers" in data.info


def stacked_images(data, model) -> bool:
    return data.kind == "image" and "stacked_base" in data.info


def likelihood_model(data, model) -> bool:
    return model is not None and model.family == "likelihood"


METRICS: tuple[Metric, ...] = (
    Metric("fid", {"fid": "lower"}, "cheap", anywhere, "genlab.metrics.frechet:score", per_network=True),
    Metric("kid", {"kid": "lower", "kid_std": ""}, "cheap", anywhere, "genlab.metrics.kid:score",
           per_network=True, settings=("kid_subsets", "kid_subset_size")),
    Metric("prdc", {"precision": "higher", "recall": "higher", "density": "higher", "coverage": "higher"},
           "costly", anywhere, "genlab.metrics.prdc:score", per_network=True, settings=("prdc_max", "prdc_k")),
    Metric("is", {"is": "higher", "is_std": ""}, "cheap", labelled_images, "genlab.metrics.inception_score:score",
           per_network=True),
    Metric("classes", {"classes_covered": "higher", "class_kl": "lower"}, "cheap", labelled_images,
           "genlab.metrics.classes:score_coverage", per_network=True),
    Metric("cond_acc", {"cond_acc": "higher"}, "cheap", conditional_images,
           "genlab.metrics.classes:score_conditional", per_network=True),
    Metric("intra_fid", {"intra_fid": "lower"}, "cheap", conditional_images, "genlab.metrics.intra_fid:score",
           per_network=True),
    Metric("cas", {"cas": "higher"}, "costly", conditional_images, "genlab.metrics.cas:score",
           settings=("featurenet",)),
    Metric("modes", {"modes": "higher", "high_quality": "higher", "reverse_kl": "lower"}, "cheap", toy_mixture,
           "genlab.metrics.toy:score"),
    Metric("stacked", {"stacked_modes": "higher", "stacked_kl": "lower"}, "cheap", stacked_images,
           "genlab.metrics.stacked:score"),
    Metric("memorization", {"nn_ratio": "~1", "closer_than_test_median": "~0.5"}, "costly", anywhere,
           "genlab.metrics.memorization:score", settings=("memorization_samples",)),
    Metric("nll", {"test_nll_nats": "lower", "test_bits_per_dim": "lower", "test_neg_elbo_nats": "lower",
                   "test_elbo_bits_per_dim": "lower", "test_kl_nats": ""}, "cheap", likelihood_model,
           "genlab.metrics.likelihood:score", floor=False, settings=("nll_images", "nll_k"),
           uses_samples=False),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def base_name(key: str) -> str:
    """fid[lenet-mnist] -> fid."""
    return key.split("[", 1)[0]


def better(key: str) -> str:
    """'lower', 'higher', '~1', '~0.5' or '' (not a score, or not a metric) for a metric key."""
    b = base_name(key)
    return next((m.keys[b] for m in BY_NAME.values() if b in m.keys), "")


def metric(name: str) -> Metric:
    """The row of a metric name; an unknown name is a one-line error listing the known ones."""
    from genlab.errors import GenlabError

    if name not in BY_NAME:
        raise GenlabError(f"unknown metric {name}; choose from {', '.join(BY_NAME)}")
    return BY_NAME[name]

