"""From a model's scores to the columns a scan records for each image.

Scores are logits (softmax over the classes), a single logit (its sigmoid is
the probability of class 1), or already probabilities: rows of non-negative
numbers that sum to 1 (a softmax output layer) are used as they are.
"""

from __future__ import annotations

import numpy as np

TOP = 5
COLUMNS = ("label", "label_name", "predicted", "predicted_name", "probability", "top5_classes",
           "top5_probabilities", "correct", "finite", "loss", "margin", "entropy")
NOT_FINITE = -1  # the `predicted` of an image whose scores hold NaN or infinity: no class was predicted


def are_probabilities(scores: np.ndarray) -> bool:
    """Whether every row is already a probability distribution (a softmax output layer)."""
    return (scores.shape[1] > 1 and bool((scores >= 0).all())
            and bool(np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)))


def probabilities(scores: np.ndarray, already: bool) -> np.ndarray:
    """(n, K) class probabilities; a single logit becomes (n, 2): [1 - sigmoid, sigmoid]."""
    scores = np.asarray(scores, np.float64)
    if scores.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    if already:
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def columns(scores: np.ndarray, labels: np.ndarray, already: bool) -> dict[str, np.ndarray]:
    """Every numeric column for a block of rows (names are filled in by the scan).

    An image whose scores hold NaN or infinity has ``finite`` False, ``predicted`` -1, NaN probabilities,
    loss, margin and entropy, and is never ``correct``.
    """
    finite = np.isfinite(scores).all(axis=1)
    scores = np.where(finite[:, None], scores, np.nan)  # an infinity's softmax would look like a prediction
    p = probabilities(scores, already)
    order = np.argsort(-p, axis=1, kind="stable")
    top = order[:, :TOP]
    top_p = np.take_along_axis(p, top, axis=1)
    predicted = np.where(finite, order[:, 0], NOT_FINITE)
    best = top_p[:, 0]
    second = top_p[:, 1] if p.shape[1] > 1 else np.zeros(len(p))
    known = labels >= 0
    in_range = known & (labels < p.shape[1])
    picked = np.take_along_axis(p, np.where(in_range, labels, 0)[:, None], axis=1)[:, 0]
    loss = np.where(in_range, -np.log(np.clip(picked, 1e-12, 1.0)), np.nan)
    entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return {
        "label": labels.astype(np.int64),
        "predicted": predicted.astype(np.int64),
        "probability": best.astype(np.float32),
        "top5_classes": top.astype(np.int64),
        "top5_probabilities": top_p.astype(np.float32),
        # False where the label is unknown (label -1): a plain boolean column queries simply ("not correct
        # and label >= 0"); accuracy counts known labels only
        "correct": known & finite & (predicted == labels),
        "finite": finite,
        "loss": loss.astype(np.float32),
        "margin": (best - second).astype(np.float32),
        "entropy": entropy.astype(np.float32),
    }
