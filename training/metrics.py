"""Classification figures from network outputs and labels: accuracy, log loss, confusion, per-class P/R/F1.

Plain numpy, shared by the training loop's holdout evaluation (:func:`training.train.evaluate`), late
fusion's weight choice, cross-validation and the evaluation of an exported model
(:mod:`training.evaluate_exported`).

A network's raw outputs are logits ``[n, 12]``, or ``[n, 13]`` with the "other" output of a run with
``--other-class`` (a late-fusion dual model: log-probabilities, which read the same way). The twelve
labels' figures are always over the twelve: :func:`class_probabilities` is the softmax of the first twelve
outputs (what an answer's label and probabilities are, before calibration), taken on the cards of the
twelve conditions only (:func:`in_class`); "other" has its own figures (:func:`other_figures`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.confidence import softmax
from shared.labels import CODES
from training.classes import OTHER


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Probabilities ``[n, 12]`` of the twelve conditions: softmax of the first twelve outputs."""
    outputs = np.asarray(outputs)
    if not len(outputs):
        return np.zeros((0, len(CODES)))
    return softmax(outputs[:, : len(CODES)])


def other_probability(outputs: np.ndarray) -> np.ndarray | None:
    """``p(other)`` ``[n]``: the 13th of the softmax over all outputs; None for a twelve-output network."""
    outputs = np.asarray(outputs)
    if outputs.ndim != 2 or outputs.shape[1] <= len(CODES):
        return None
    return softmax(outputs)[:, OTHER] if len(outputs) else np.zeros(0)


def in_class(labels: np.ndarray) -> np.ndarray:
    """Which cards are of one of the twelve conditions (not "other", not unlabelled)."""
    labels = np.asarray(labels)
    return (labels >= 0) & (labels < len(CODES))


def accuracy_and_loss(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of class probabilities ``[n, classes]``; NaNs for no cards."""
    if not len(labels):
        return float("nan"), float("nan")
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))
    return float((probs.argmax(axis=1) == labels).mean()), loss


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n: int = len(CODES)) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (np.asarray(y, np.int64), np.asarray(pred, np.int64)), 1)
    return cm


def per_class_report(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    out = {}
    for i, code in enumerate(CODES):
        tp = cm[i, i]
        p = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        r = tp / cm[i].sum() if cm[i].sum() else 0.0
        out[code] = {"precision": round(float(p), 4), "recall": round(float(r), 4),
                     "f1": round(float(2 * p * r / (p + r)) if p + r else 0.0, 4), "support": int(cm[i].sum())}
    return out


def twelve_way(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The twelve labels' figures of raw outputs on the cards of the twelve conditions.

    Returns:
        ``acc``, ``loss`` (NaN without such cards), ``probs`` ``[n, 12]`` of *all* cards, ``pred`` (their
        label among the twelve), ``mask`` (which cards are in-class) and ``confusion`` (12 x 12, in-class cards).
    """
    labels = np.asarray(labels, np.int64)
    probs = class_probabilities(outputs)
    mask = in_class(labels)
    acc, loss = accuracy_and_loss(probs[mask], labels[mask])
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    return {"acc": acc, "loss": loss, "probs": probs, "pred": pred, "mask": mask,
            "confusion": confusion_matrix(labels[mask], pred[mask])}


def other_figures(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
    """What the "other" output does, before any threshold is fitted: cards whose largest of all 13 outputs is "other".

    Returns:
        None for a twelve-output network; else ``other_cards`` and ``other_recall`` (share of the "other"
        cards called other; None without such cards), ``in_class_cards`` and ``in_class_called_other``.
    """
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if outputs.ndim != 2 or outputs.shape[1] <= len(CODES):
        return None
    called = outputs.argmax(axis=1) == OTHER if len(outputs) else np.zeros(0, bool)
    other, inside = labels == OTHER, in_class(labels)

    def share(mask: np.ndarray) -> float | None:
        return round(float(called[mask].mean()), 4) if mask.any() else None

    return {"other_cards": int(other.sum()), "other_recall": share(other), "in_class_cards": int(inside.sum()),
            "in_class_called_other": share(inside), "rule": "largest of the 13 outputs is other (no threshold)"}
