"""What a model's raw output means: the one reading of a network's first output that every consumer shares.

The service's answers, the batch scorer's CSV rows and training's evaluation report all turn the exported
network's first output into the same four things with :func:`interpret` (or :meth:`OutputContract.interpret`
on a contract read once from ``meta.json``):

* ``probabilities`` ``[N, 12]``: the calibrated class probabilities, in label order;
* ``other`` ``[N]`` or None: the probability of "none of the twelve" from a 13th output (outlier exposure);
* ``review`` ``[N]`` bool: a person should check the answer;
* ``open_set_unknown`` ``[N]`` bool: the model itself says the card is none of the twelve.

Two output formats, told apart by ``meta["output"]``:

``"probabilities"`` (the model folders shipped before issue #14)
    The network ends in a softmax: ``[N, 12]`` probabilities. They are used unchanged; ``review`` falls back
    to the low-confidence rule (top probability below :data:`LOW_CONFIDENCE`, or the caller's threshold);
    there is no open-set output, so ``open_set_unknown`` is all False (the structural card check,
    :mod:`shared.card_check`, is then the only "unknown" evidence -- the caller's).

``"logits"``
    The network's first output is logits ``[N, C]``: ``C = 13`` when ``meta["other_class"]`` is true (index
    12 is "none of the twelve", trained by outlier exposure), else 12. A late-fusion dual model exports
    log-probabilities here, which softmax reads the same way. Then

    - ``probabilities = softmax(logits[:, :12] / T)`` with ``T = meta["confidence"]["temperature"]``
      (temperature scaling, fitted on held-out cards; 1 when absent);
    - ``other = softmax(logits)[:, 12]`` over all 13 outputs at temperature 1;
    - ``review`` from ``meta["confidence"]["review"]`` (``min_top``, ``min_margin``: the top calibrated
      probability or its margin over the runner-up below them), else the low-confidence fallback;
    - ``open_set_unknown = other >= meta["open_set"]["threshold"]`` when ``meta["open_set"]["method"]`` is
      ``outlier_exposure`` (the only method a folder can carry: the others need the network's features).

Any of ``confidence``, ``confidence.temperature``, ``confidence.review`` and ``open_set`` may be absent: that
part is skipped. A contract that is present but unusable (an unknown output format, a temperature of 0, an
open-set rule without a 13th output) raises ``ValueError`` when it is read, so a service refuses the folder
at start-up rather than answering wrongly. NumPy only (no Paddle): the batch scorer's and training's
processes import it as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from shared.confidence import softmax, top_two

# The fallback review rule of models without a fitted one: answers less sure than this go to a person.
LOW_CONFIDENCE = 0.5
OUTPUT_FORMATS = ("probabilities", "logits")
OPEN_SET_METHODS = ("outlier_exposure",)


@dataclass(frozen=True)
class Interpretation:
    """A batch of raw outputs read through a model's :class:`OutputContract` (one row per card).

    Attributes:
        probabilities: ``float64 [N, classes]`` calibrated class probabilities, in label order.
        other: ``float64 [N]`` probability of "none of the twelve" (13th output), or None without one.
        review: ``bool [N]`` a person should check the answer (``review_rule`` says by which rule).
        open_set_unknown: ``bool [N]`` the model's open-set rule calls the card none of the twelve.
        review_rule: ``"meta"`` (the thresholds of ``meta.json`` ``confidence.review``) or ``"low_confidence"``
            (the fallback: top probability below a threshold).
    """

    probabilities: np.ndarray
    other: np.ndarray | None
    review: np.ndarray
    open_set_unknown: np.ndarray
    review_rule: str


@dataclass(frozen=True)
class OutputContract:
    """How to read one model's raw first output, from its ``meta.json`` (:meth:`from_meta`).

    Attributes:
        classes: the number of labels (12).
        output: ``"probabilities"`` or ``"logits"``.
        other_class: the network has a 13th "none of the twelve" output after the labels.
        temperature: the calibration temperature (1: none).
        min_top, min_margin: the fitted review rule's thresholds, or None without one.
        review: the fitted review rule as ``meta.json`` holds it (None without one).
        open_set: the open-set rule as ``meta.json`` holds it (None without one).
        open_set_threshold: its threshold on ``other`` (None without one).
    """

    classes: int
    output: str = "probabilities"
    other_class: bool = False
    temperature: float = 1.0
    min_top: float | None = None
    min_margin: float | None = None
    review: Mapping[str, Any] | None = None
    open_set: Mapping[str, Any] | None = None
    open_set_threshold: float | None = None

    @property
    def width(self) -> int:
        """Columns of the network's first output: the labels, plus one for "none of the twelve"."""
        return self.classes + int(self.other_class)

    @property
    def passthrough(self) -> bool:
        """The raw output already is the answer's probabilities (an old softmax model, nothing to apply)."""
        return self.output == "probabilities" and not self.other_class and self.temperature == 1.0

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "OutputContract":
        """Read the output contract of a model folder's ``meta.json``.

        Raises:
            ValueError: the contract is present but unusable (the message names the key and the fix).
        """
        labels = meta.get("labels")
        classes = len(labels) if isinstance(labels, list) and labels else 12
        output = meta.get("output", "probabilities")
        if output not in OUTPUT_FORMATS:
            raise ValueError(f"meta.json output {output!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        other_class = meta.get("other_class", False)
        if not isinstance(other_class, bool):
            raise ValueError(f"meta.json other_class must be true or false, not {other_class!r}")
        confidence = _section(meta, "confidence")
        temperature = _number(confidence.get("temperature", 1.0), "confidence.temperature", low=0.0, open_low=True)
        review = confidence.get("review")
        min_top = min_margin = None
        if review is not None:
            if not isinstance(review, Mapping) or not ({"min_top", "min_margin"} & review.keys()):
                raise ValueError("meta.json confidence.review needs min_top and/or min_margin")
            min_top = _number(review.get("min_top", 0.0), "confidence.review.min_top", low=0.0, high=1.0)
            min_margin = _number(review.get("min_margin", 0.0), "confidence.review.min_margin", low=0.0, high=1.0)
        open_set = meta.get("open_set")
        threshold = None
        if open_set is not None:
            if not isinstance(open_set, Mapping):
                raise ValueError("meta.json open_set must be an object {method, threshold, ...}")
            if open_set.get("method") not in OPEN_SET_METHODS:
                raise ValueError(f"meta.json open_set.method {open_set.get('method')!r} cannot be applied from a "
                                 f"model folder; supported: {', '.join(OPEN_SET_METHODS)}")
            if not other_class:
                raise ValueError("meta.json open_set (outlier_exposure) needs other_class: true (a 13th output)")
            threshold = _number(open_set.get("threshold"), "open_set.threshold", low=0.0, high=1.0)
        return cls(classes=classes, output=output, other_class=other_class, temperature=temperature,
                   min_top=min_top, min_margin=min_margin, review=dict(review) if review is not None else None,
                   open_set=dict(open_set) if open_set is not None else None, open_set_threshold=threshold)

    def check_raw(self, raw: np.ndarray) -> np.ndarray:
        """The raw output as ``float64 [N, width]``, checked.

        Raises:
            ValueError: wrong shape, non-finite values, or (``probabilities``) rows that are not probabilities.
        """
        raw = np.asarray(raw, np.float64)
        if raw.ndim != 2 or raw.shape[1] != self.width:
            raise ValueError(f"the network returns shape {list(raw.shape)}, expected [N, {self.width}] "
                             f"({self.classes} labels{' + none of the twelve' if self.other_class else ''})")
        if not np.all(np.isfinite(raw)):
            raise ValueError("the network returns values that are not finite")
        if self.output == "probabilities" and raw.size and (
                not np.allclose(raw.sum(axis=1), 1.0, atol=1e-3) or raw.min() < -1e-6):
            raise ValueError(f"meta.json says output 'probabilities' but the rows sum to "
                             f"{raw.sum(axis=1)[:3].round(4).tolist()}; export a softmax head or say 'logits'")
        return raw

    def interpret(self, raw: np.ndarray, low_confidence: float = LOW_CONFIDENCE) -> Interpretation:
        """Read a batch of the network's first output.

        Args:
            raw: ``[N, width]`` (:attr:`width`): probabilities or logits as :attr:`output` says.
            low_confidence: the fallback review threshold on the top probability, for a model without a
                fitted review rule.

        Returns:
            :class:`Interpretation`.

        Raises:
            ValueError: the output does not have the contract's shape or kind (:meth:`check_raw`).
        """
        raw = self.check_raw(raw)
        if self.passthrough:
            probs, other = raw, None
        else:
            # Logits (or log-probabilities of an old softmax head), so one path serves both formats.
            logits = raw if self.output == "logits" else np.log(np.clip(raw, 1e-12, 1.0))
            probs = softmax(logits[:, : self.classes], self.temperature)
            other = softmax(logits)[:, self.classes] if self.other_class else None
        if self.min_top is not None:
            top, margin = top_two(probs)
            review, rule = (top < self.min_top) | (margin < self.min_margin), "meta"
        else:
            review, rule = probs.max(axis=1, initial=0.0) < low_confidence, "low_confidence"
        unknown = (other >= self.open_set_threshold) if self.open_set_threshold is not None \
            else np.zeros(len(probs), bool)
        return Interpretation(probabilities=probs, other=other, review=review, open_set_unknown=unknown,
                              review_rule=rule)

    def describe(self, low_confidence: float = LOW_CONFIDENCE) -> dict[str, Any]:
        """JSON-ready: how answers of this model are read (``GET /model``; each answer's rules)."""
        return {"output": self.output, "other_class": self.other_class, "temperature": self.temperature,
                "review": self.review_rule(low_confidence), "open_set": self.open_set_rule()}

    def review_rule(self, low_confidence: float = LOW_CONFIDENCE) -> dict[str, Any]:
        """The review rule this model's answers follow, JSON-ready (``rule``: ``meta`` or ``low_confidence``)."""
        if self.min_top is None:
            return {"rule": "low_confidence", "min_top": float(low_confidence),
                    "note": "the model's meta.json has no fitted review rule: answers below this confidence"}
        fitted = {k: v for k, v in (self.review or {}).items() if k not in ("min_top", "min_margin")}
        return {"rule": "meta", "min_top": self.min_top, "min_margin": self.min_margin, **fitted}

    def open_set_rule(self) -> dict[str, Any] | None:
        """The model's open-set rule, JSON-ready, or None (an old model: no "none of the twelve" output)."""
        if self.open_set is None:
            return None
        return {**self.open_set, "threshold": self.open_set_threshold}


def interpret(raw: np.ndarray, meta: Mapping[str, Any], low_confidence: float = LOW_CONFIDENCE) -> Interpretation:
    """Read a batch of a model's first output by its ``meta.json`` (see the module docstring).

    Args:
        raw: the network's first output ``[N, C]``.
        meta: the model folder's ``meta.json``.
        low_confidence: the fallback review threshold (models without ``confidence.review``).

    Returns:
        :class:`Interpretation`.

    Raises:
        ValueError: an unusable contract in ``meta`` or an output that does not match it.
    """
    return OutputContract.from_meta(meta).interpret(raw, low_confidence)


def _section(meta: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"meta.json {key} must be an object")
    return value


def _number(value: Any, name: str, low: float | None = None, high: float | None = None,
            open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"meta.json {name} must be a number, not {value!r}")
    value = float(value)
    if low is not None and (value <= low if open_low else value < low):
        raise ValueError(f"meta.json {name} = {value} must be {'above' if open_low else 'at least'} {low}")
    if high is not None and value > high:
        raise ValueError(f"meta.json {name} = {value} must be at most {high}")
    return value
