"""Confidence an engineer can act on: calibration, the review rule, and "none of the twelve" scores.

NumPy only, so training (which *fits* these on held-out cards) and serving (which *applies* them per
request) share one implementation and serving needs nothing new.

* Calibration — temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML
  2017): one scalar ``T`` divides the logits; fitted by minimising the negative log-likelihood on
  held-out cards (:func:`fit_temperature`). :func:`expected_calibration_error` and
  :func:`reliability_bins` report how far stated confidence is from accuracy.
* Review — :func:`choose_review_rule` picks the smallest thresholds on the top probability and on its
  margin over the runner-up such that the answers *not* sent to review reach a stated precision on
  held-out cards; :meth:`ReviewRule.needs_review` applies them.
* Open set — scores that are high for cards like the training classes and low for anything else:
  maximum softmax probability (Hendrycks & Gimpel, ICLR 2017), maximum logit (Hendrycks et al., ICML
  2022), the energy score (Liu et al., NeurIPS 2020), and the Mahalanobis distance of penultimate
  features to the nearest class mean under one shared covariance (Lee et al., NeurIPS 2018), plus
  the k-th nearest-neighbour cosine similarity of normalised features (Sun et al., ICML 2022), and
  outlier exposure's ``1 - p(other)`` of a network trained with an extra "other" class (Hendrycks et
  al., ICLR 2019). :class:`Standardiser` and :func:`combined_score` average several scores.
  :func:`threshold_for_acceptance` turns held-out in-class scores into a threshold that accepts a
  stated share of them; :class:`OpenSetRule` stores and applies it. :func:`auroc` measures separation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# --------------------------------------------------------------------------------------------
# Softmax and temperature scaling
# --------------------------------------------------------------------------------------------


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``log softmax(logits / temperature)`` along the last axis, computed stably."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities ``softmax(logits / temperature)`` along the last axis."""
    return np.exp(log_softmax(logits, temperature))


def logits_from_probabilities(probs: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """Logits (up to a per-row constant, which softmax ignores) of probabilities: ``log p``.

    Lets temperature scaling work on a model that exports probabilities only. The constant is lost,
    so scores that need true logits (max-logit, energy) cannot be recovered this way.
    """
    return np.log(np.clip(np.asarray(probs, np.float64), floor, 1.0))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``-log p(label)`` of logits scaled by ``1 / temperature``."""
    labels = np.asarray(labels, np.int64)
    return float(-log_softmax(logits, temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0),
                    tol: float = 1e-6) -> float:
    """The temperature that minimises the held-out negative log-likelihood.

    The NLL is convex in ``beta = 1 / T`` (a log-sum-exp of functions linear in beta minus a linear
    term), so a golden-section search over beta finds the global minimum.

    Args:
        logits: held-out logits ``[n, classes]`` (or ``log`` probabilities).
        labels: their true class indices ``[n]``.
        bounds: the range of temperatures searched.
        tol: stop when the beta bracket is narrower than this.

    Returns:
        ``T`` (> 1 softens an over-confident model, < 1 sharpens an under-confident one).

    Raises:
        ValueError: no cards, or logits and labels of different lengths.
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if logits.ndim != 2 or len(logits) == 0 or len(logits) != len(labels):
        raise ValueError(f"need logits [n, classes] and n labels, got {logits.shape} and {labels.shape}")
    lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0

    def loss(beta: float) -> float:
        return negative_log_likelihood(logits, labels, 1.0 / beta)

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(2.0 / (lo + hi))


# --------------------------------------------------------------------------------------------
# Calibration error
# --------------------------------------------------------------------------------------------


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Equal-width bins of top probability: per bin the count, mean confidence and accuracy.

    Returns:
        One dict per bin (empty bins included, with ``confidence``/``accuracy`` None): ``lo``, ``hi``,
        ``count``, ``confidence``, ``accuracy`` — the data of a reliability diagram.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin k holds (edges[k], edges[k+1]]; a confidence of exactly 0 goes to the first bin.
    index = np.clip(np.searchsorted(edges, top, side="left") - 1, 0, bins - 1)
    out = []
    for k in range(bins):
        inside = index == k
        n = int(inside.sum())
        out.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), "count": n,
                    "confidence": float(top[inside].mean()) if n else None,
                    "accuracy": float(correct[inside].mean()) if n else None})
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the card-weighted mean gap between confidence and accuracy over :func:`reliability_bins`."""
    table = reliability_bins(probs, labels, bins)
    n = sum(b["count"] for b in table)
    if n == 0:
        raise ValueError("expected_calibration_error needs at least one card")
    return float(sum(b["count"] * abs(b["confidence"] - b["accuracy"]) for b in table if b["count"]) / n)


# --------------------------------------------------------------------------------------------
# Review rule
# --------------------------------------------------------------------------------------------


def top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top probability, margin over the second) per row."""
    p = np.sort(np.asarray(probs, np.float64), axis=1)
    return p[:, -1], p[:, -1] - p[:, -2]


@dataclass(frozen=True)
class ReviewRule:
    """Send an answer to a person when its top probability or its margin to the runner-up is low.

    ``min_top``/``min_margin``: the thresholds; ``target_precision``: what they were chosen for;
    ``precision``/``coverage``: what they achieved on the held-out cards they were chosen on
    (precision of the answers not sent to review, share of cards not sent); ``cards``: how many.
    """

    min_top: float
    min_margin: float
    target_precision: float
    precision: float
    coverage: float
    cards: int

    def needs_review(self, probs: np.ndarray) -> np.ndarray:
        """Boolean per row of (calibrated) probabilities: True when a person should look."""
        top, margin = top_two(np.atleast_2d(probs))
        return (top < self.min_top) | (margin < self.min_margin)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ReviewRule":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def choose_review_rule(probs: np.ndarray, labels: np.ndarray, target_precision: float = 0.95,
                       candidates: int = 41) -> ReviewRule:
    """Thresholds on top probability and margin that keep the most cards while the kept answers reach a precision.

    Every pair of thresholds from ``candidates`` quantiles of each score (plus 0) is tried; among the
    pairs whose kept answers are at least ``target_precision`` correct, the one keeping the most cards
    wins (ties: the lower thresholds). If no pair reaches the target, the pair with the best precision
    is returned (its ``precision`` says so).

    Args:
        probs: held-out (calibrated) probabilities ``[n, classes]``.
        labels: true classes ``[n]``.
        target_precision: wanted precision of the answers not sent to review.
        candidates: quantiles tried per threshold.

    Raises:
        ValueError: no cards.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    if len(probs) == 0:
        raise ValueError("choose_review_rule needs held-out cards")
    top, margin = top_two(probs)
    correct = probs.argmax(axis=1) == labels
    qs = np.linspace(0.0, 1.0, candidates)
    best = None
    for t in np.unique(np.concatenate([[0.0], np.quantile(top, qs)])):
        for m in np.unique(np.concatenate([[0.0], np.quantile(margin, qs)])):
            keep = (top >= t) & (margin >= m)
            kept = int(keep.sum())
            precision = float(correct[keep].mean()) if kept else 0.0
            key = (precision >= target_precision, kept if precision >= target_precision else precision, -t - m)
            if best is None or key > best[0]:
                best = (key, float(t), float(m), precision, kept / len(top))
    _, t, m, precision, coverage = best
    return ReviewRule(min_top=t, min_margin=m, target_precision=float(target_precision), precision=precision,
                      coverage=coverage, cards=int(len(top)))


# --------------------------------------------------------------------------------------------
# Open-set scores (higher = more like the training classes)
# --------------------------------------------------------------------------------------------


def max_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Maximum softmax probability per row."""
    return softmax(logits, temperature).max(axis=1)


def max_logit(logits: np.ndarray) -> np.ndarray:
    """Maximum logit per row."""
    return np.asarray(logits, np.float64).max(axis=1)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T · logsumexp(logits / T)`` per row."""
    z = np.asarray(logits, np.float64) / float(temperature)
    peak = z.max(axis=1)
    return float(temperature) * (peak + np.log(np.exp(z - peak[:, None]).sum(axis=1)))


@dataclass(frozen=True)
class MahalanobisModel:
    """Class means of penultimate features and the precision (inverse) of their shared covariance."""

    means: np.ndarray  # [classes, features]
    precision: np.ndarray  # [features, features]

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row to each class mean ``[n, classes]``."""
        x = np.asarray(features, np.float64)
        diff = x[:, None, :] - self.means[None, :, :]
        return np.einsum("ncd,de,nce->nc", diff, self.precision, diff)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Open-set score: minus the squared distance to the nearest class mean."""
        return -self.distances(features).min(axis=1)

    def to_dict(self) -> dict[str, list]:
        return {"means": self.means.tolist(), "precision": self.precision.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "MahalanobisModel":
        return cls(np.asarray(data["means"], np.float64), np.asarray(data["precision"], np.float64))


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray, shrinkage: float = 0.01) -> MahalanobisModel:
    """Class means and a shared (tied) covariance of features, for :meth:`MahalanobisModel.score`.

    Args:
        features: penultimate-layer features of training cards ``[n, d]``.
        labels: their classes ``[n]``; classes without cards are left out.
        shrinkage: share of the mean variance added to the diagonal, so the covariance inverts
            even with fewer cards than features.

    Raises:
        ValueError: fewer than two cards.
    """
    x, labels = np.asarray(features, np.float64), np.asarray(labels, np.int64)
    if len(x) < 2 or len(x) != len(labels):
        raise ValueError(f"need at least two cards with labels, got {x.shape} and {labels.shape}")
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / len(x)
    cov += shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return MahalanobisModel(means=means, precision=np.linalg.inv(cov))


def other_class_score(logits: np.ndarray, other_index: int) -> np.ndarray:
    """Outlier-exposure score of a network trained with an extra "other" class: ``1 - p(other)``."""
    return 1.0 - softmax(logits)[:, other_index]


def knn_score(features: np.ndarray, bank: np.ndarray, k: int = 10) -> np.ndarray:
    """Cosine similarity of each (L2-normalised) row to its k-th nearest neighbour in ``bank``."""
    def unit(a):
        a = np.asarray(a, np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    sims = unit(features) @ unit(bank).T
    k = min(k, sims.shape[1])
    return np.sort(sims, axis=1)[:, -k]


@dataclass(frozen=True)
class Standardiser:
    """Puts one open-set score on a common scale: ``(score - median) / interquartile range`` of held-out in-class cards."""

    median: float
    scale: float

    @classmethod
    def fit(cls, reference: np.ndarray) -> "Standardiser":
        q75, q25 = np.percentile(np.asarray(reference, np.float64), [75, 25])
        return cls(float(np.median(reference)), float(q75 - q25) if q75 > q25 else 1.0)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, np.float64) - self.median) / self.scale

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Standardiser":
        return cls(float(data["median"]), float(data["scale"]))


def combined_score(scores: list[np.ndarray], standardisers: list[Standardiser]) -> np.ndarray:
    """Mean of several open-set scores, each standardised by its :class:`Standardiser`."""
    if not scores or len(scores) != len(standardisers):
        raise ValueError("combined_score needs one standardiser per score")
    return np.mean([st.apply(s) for s, st in zip(scores, standardisers)], axis=0)


# --------------------------------------------------------------------------------------------
# Thresholds and separation
# --------------------------------------------------------------------------------------------


def threshold_for_acceptance(in_scores: np.ndarray, accept_rate: float = 0.95) -> float:
    """The score threshold that accepts ``accept_rate`` of held-out in-class cards (score >= threshold)."""
    scores = np.asarray(in_scores, np.float64)
    if not scores.size:
        raise ValueError("threshold_for_acceptance needs held-out in-class scores")
    return float(np.quantile(scores, 1.0 - accept_rate, method="lower"))


@dataclass(frozen=True)
class OpenSetRule:
    """Answer "unknown" when a card's open-set score is below ``threshold``.

    ``method`` names the score (``max_softmax``, ``energy``, ``max_logit``, ``mahalanobis``, ``knn``);
    ``accept_rate`` is the share of held-out in-class cards the threshold accepted when it was chosen.
    """

    method: str
    threshold: float
    accept_rate: float

    def is_unknown(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, np.float64) < self.threshold

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "OpenSetRule":
        return cls(str(data["method"]), float(data["threshold"]), float(data["accept_rate"]))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling in-class (high score) from unknown (low score); ties count half.

    Equals the probability that a random in-class card scores above a random unknown one
    (Mann–Whitney U / (n_in · n_out)).
    """
    a, b = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    if not a.size or not b.size:
        raise ValueError("auroc needs in-class and unknown scores")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # Average ranks over ties.
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(both)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + e - 1) + 1.0
    u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def rate_below(scores: np.ndarray, threshold: float) -> float:
    """Share of ``scores`` below ``threshold`` (called unknown)."""
    s = np.asarray(scores, np.float64)
    return float((s < threshold).mean()) if s.size else float("nan")
