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


def top_classes(p: np.ndarray, k: int) -> np.ndarray:
    """(n, min(k, K)) the classes of the ``k`` largest values of each row, largest first, ties in class order:
    what a stable sort of ``-p`` gives, without sorting every class (a partition finds the rows' k-th value;
    only rows where more than k values reach it, or NaN rows, are sorted whole)."""
    n, classes = p.shape
    if classes <= k:
        return np.argsort(-p, axis=1, kind="stable")
    negated = -p
    kth = np.partition(negated, k - 1, axis=1)[:, k - 1 : k]
    reached = negated <= kth  # False everywhere in a NaN row
    simple = reached.sum(axis=1) == k
    top = np.empty((n, k), np.intp)
    if simple.any():
        candidates = np.nonzero(reached[simple])[1].reshape(-1, k)  # each row's k classes, in class order
        order = np.argsort(np.take_along_axis(negated[simple], candidates, axis=1), axis=1, kind="stable")
        top[simple] = np.take_along_axis(candidates, order, axis=1)
    if not simple.all():
        top[~simple] = np.argsort(negated[~simple], axis=1, kind="stable")[:, :k]
    return top


def columns(scores: np.ndarray, labels: np.ndarray, already: bool) -> dict[str, np.ndarray]:
    """Every numeric column for a block of rows (names are filled in by the scan).

    An image whose scores hold NaN or infinity has ``finite`` False, ``predicted`` -1, NaN probabilities,
    loss, margin and entropy, and is never ``correct``.
    """
    finite = np.isfinite(scores).all(axis=1)
    scores = np.where(finite[:, None], scores, np.nan)  # an infinity's softmax would look like a prediction
    p = probabilities(scores, already)
    top = top_classes(p, TOP)
    top_p = np.take_along_axis(p, top, axis=1)
    predicted = np.where(finite, top[:, 0], NOT_FINITE)
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


def columns_in_framework(scores, labels: np.ndarray, already: bool) -> dict[str, np.ndarray]:
    """:func:`columns` computed where ``scores`` are: a torch tensor on an accelerator in a few operations per
    block (in float64), only the (n, 5)-sized results crossing to the host; scores in host memory (numpy, or
    a CPU tensor: numpy's sort is several times faster there than torch's stable sort) by :func:`columns`.
    Ties are ordered as a stable sort orders them (the lower class first)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not isinstance(scores, torch.Tensor) or scores.device.type == "cpu":
        return columns(np.asarray(scores.cpu() if hasattr(scores, "cpu") else scores, np.float32), labels, already)
    return columns_torch(scores, labels, already)


def columns_torch(scores, labels: np.ndarray, already: bool) -> dict[str, np.ndarray]:
    """:func:`columns` in torch, on the tensor's device (see :func:`columns_in_framework`)."""
    import torch

    with torch.no_grad():
        s = scores.detach().double()
        finite = torch.isfinite(s).all(dim=1)
        s = torch.where(finite[:, None], s, torch.full_like(s, float("nan")))
        if s.shape[1] == 1:
            p1 = torch.sigmoid(s[:, 0])
            p = torch.stack([1.0 - p1, p1], dim=1)
        else:
            p = s if already else torch.softmax(s, dim=1)
        top_p, top = torch.sort(p, dim=1, descending=True, stable=True)
        top_p, top = top_p[:, :TOP], top[:, :TOP]
        known = torch.as_tensor(labels, device=s.device)
        in_range = (known >= 0) & (known < p.shape[1])
        picked = p.gather(1, torch.where(in_range, known, 0)[:, None])[:, 0]
        loss = torch.where(in_range, -torch.log(picked.clamp(1e-12, 1.0)), torch.full_like(picked, float("nan")))
        entropy = -(p * torch.log(p.clamp(1e-12, 1.0))).sum(dim=1)
        second = top_p[:, 1] if p.shape[1] > 1 else torch.zeros_like(top_p[:, 0])
        predicted = torch.where(finite, top[:, 0], torch.full_like(top[:, 0], NOT_FINITE))
        found = dict(predicted=predicted, probability=top_p[:, 0], top=top, top_p=top_p, loss=loss,
                     margin=top_p[:, 0] - second, entropy=entropy, finite=finite)
        found = {k: v.cpu().numpy() for k, v in found.items()}
    known = labels >= 0
    # NaN rows sort first in torch (NaN is largest): their top-5 is meaningless either way, as in numpy's
    return {
        "label": labels.astype(np.int64),
        "predicted": found["predicted"].astype(np.int64),
        "probability": found["probability"].astype(np.float32),
        "top5_classes": found["top"].astype(np.int64),
        "top5_probabilities": found["top_p"].astype(np.float32),
        "correct": known & found["finite"] & (found["predicted"] == labels),
        "finite": found["finite"],
        "loss": found["loss"].astype(np.float32),
        "margin": found["margin"].astype(np.float32),
        "entropy": found["entropy"].astype(np.float32),
    }
