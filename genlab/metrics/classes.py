"""Class coverage and conditional accuracy of samples judged by a pretrained classifier."""

from __future__ import annotations

import torch

from genlab.metrics.records import Entry, Scoring


def _labels(probs_or_labels: torch.Tensor) -> torch.Tensor:
    # (N, K) scores or probabilities become argmax labels; (N,) integer labels pass through.
    if probs_or_labels.dim() == 2:
        return probs_or_labels.argmax(1)
    if probs_or_labels.dim() == 1:
        return probs_or_labels.long()
    raise ValueError(f"expected (N, K) probabilities or (N,) labels, "
                     f"got {tuple(probs_or_labels.shape)}")


def class_coverage(probs_or_labels: torch.Tensor, num_classes: int,
                   min_share: float = 0.1) -> dict[str, float]:
    """Classes covered and KL(class histogram || uniform) of samples' predicted classes.

    A class counts as covered when it receives at least `min_share` of its fair share N/K of the
    samples (default 10%): a classifier's few errors then cannot make a dropped class look present,
    while a class the model still produces, even at a tenth of the right rate, counts.
    """
    labels = _labels(probs_or_labels)
    n = labels.shape[0]
    if n == 0:
        raise ValueError("class_coverage needs at least one sample")
    counts = torch.bincount(labels.cpu(), minlength=num_classes).double()
    if counts.shape[0] > num_classes:
        raise ValueError(f"labels go up to {counts.shape[0] - 1} but num_classes={num_classes}")
    q = counts / n
    return {
        "classes_covered": int((counts >= min_share * n / num_classes).sum()),
        "num_classes": num_classes,
        # KL(q || 1/K) = sum q log(q K); 0 when balanced, log K when all samples are one class.
        "class_kl": float(torch.special.xlogy(q, q * num_classes).sum()),
    }


def conditional_accuracy(pred_labels: torch.Tensor, target_labels: torch.Tensor) -> float:
    """Fraction of class-conditional samples classified as the class they were generated for."""
    pred = _labels(pred_labels)
    target = target_labels.to(pred.device).long()
    if pred.shape != target.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {target.shape[0]} targets")
    return float((pred == target).double().mean())


def score_coverage(s: Scoring) -> dict[str, Entry]:
    """Classes covered and KL(class histogram || uniform) of the set under the feature network."""
    k = int(s.ev.data.num_classes)
    if s.probs is None:
        return {}
    c = class_coverage(s.probs[:, :k], k)
    return {"classes_covered": Entry(c["classes_covered"], len(s.x), extra={"num_classes": c["num_classes"]}),
            "class_kl": Entry(c["class_kl"], len(s.x))}


def score_conditional(s: Scoring) -> dict[str, Entry]:
    """How often the feature network recognises the class each sample was asked for."""
    if s.probs is None or s.labels is None:
        return {}
    return {"cond_acc": Entry(conditional_accuracy(s.probs, s.labels), len(s.x))}
