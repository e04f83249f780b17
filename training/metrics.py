"""Classification figures from probabilities and labels: accuracy, log loss, confusion, per-class P/R/F1.

Plain numpy, shared by the training loop's holdout evaluation (:func:`training.train.evaluate`), late
fusion's weight choice and the evaluation of an exported model (:mod:`training.evaluate_exported`).
"""

from __future__ import annotations

import numpy as np

from shared.labels import CODES


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
