"""What an answer's confidence and its "none of the twelve" rest on, fitted on held-out real cards.

:func:`fit_answer_rules` takes the raw outputs of held-out cards -- the out-of-fold outputs of
``--folds K`` (every card scored by a network that never saw it), else a run's holdout -- and fits the
three rules a model folder carries in ``meta.json`` (the contract ``shared.model_outputs.interpret`` reads):

* ``confidence.temperature`` ``T``: temperature scaling (Guo et al., ICML 2017) of the first twelve outputs,
  fitted on the cards of the twelve conditions (:func:`shared.confidence.fit_temperature`). Its effect is
  measured **cross-fitted**: the cards are split in two halves (stratified by class, seeded), ``T`` fitted on
  one half scales the other and vice versa, and the expected calibration error (ECE, 15 equal-width bins of
  top probability) of those probabilities is ``ece_after``; ``ece_before`` is the same cards at ``T = 1``.
  The reliability diagram (``confidence.reliability``, and a PNG: :func:`reliability_png`) shows both.
* ``confidence.review``: ``min_top``/``min_margin`` (:func:`shared.confidence.choose_review_rule`) such that
  the answers *not* sent to review reach ``target_precision`` on the cards of the twelve conditions; its
  ``coverage`` (share of answers without review) and precision are also given cross-fitted (rule chosen
  on one half, applied to the other).
* ``open_set`` (a network with the 13th "other" output): ``threshold`` on ``p(other)`` (the 13th of a
  softmax over all 13 outputs, ``T = 1``): a card is unknown when ``p(other) >= threshold``, chosen to accept
  ``accept_rate`` (95 %) of the cards of the twelve conditions. ``auroc``: how well ``p(other)`` tells the
  held-out cards of other conditions from those of the twelve. With ``--folds`` that figure is
  **cross-validated with the other conditions seen in the training folds** (other cards of the same five
  conditions trained the scoring network); the figure for a condition never seen in training is the
  leave-one-condition-out AUROC of ``scripts/open_set_study.py`` (0.756 image, 0.743 series): do not mix them.

Every rule is fitted on real cards when there are enough (``fitted_on`` says on which); fitted on simulated
cards a threshold calls 40-77 % of real cards unknown (the study), so such a fit carries a ``warning``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from shared import confidence as C
from shared.labels import CODES
from training.classes import OTHER
from training.metrics import in_class, other_probability
from training.other_class import condition_of

ECE_BINS = 15
ACCEPT_RATE = 0.95
REVIEW_PRECISION = 0.9
REVIEW_TABLE = (0.8, 0.85, 0.9, 0.95)  # precision targets whose coverage the report lists, to choose another
MIN_FIT_CARDS = 20  # fewer held-out cards of the twelve conditions than this: nothing is fitted
MIN_REAL_CARDS = 100  # a plain run fits on its real holdout from this many cards of the twelve, else on sim's
SIM_WARNING = ("fitted on simulated held-out cards: thresholds fitted on simulated cards call 40-77 % of real cards "
               "unknown (scripts/open_set_study.py); fit them on real cards: --folds K --export")
AUROC_NOTE_CV = ("cross-validated: each card scored by a network trained without it, but with cards of the same other "
                 "conditions in its training folds; for a condition never seen in training see the leave-one-condition-"
                 "out AUROC of scripts/open_set_study.py (0.756 image, 0.743 series)")
AUROC_NOTE_HOLDOUT = ("holdout: cards of other conditions whose siblings (the same conditions) were in training; for a "
                      "condition never seen in training see scripts/open_set_study.py")


@dataclass
class AnswerRules:
    """The fitted rules as ``meta.json`` holds them (``confidence``, ``open_set``) and the figures behind them."""

    confidence: dict[str, Any]
    open_set: dict[str, Any] | None
    report: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """The ``meta.json`` entries: ``confidence`` and, with the "other" output, ``open_set``."""
        return {"confidence": self.confidence, **({"open_set": self.open_set} if self.open_set else {})}


def halves(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """0 or 1 per card: two halves, each class dealt alternately from a seeded permutation."""
    labels = np.asarray(labels)
    half = np.zeros(len(labels), np.int64)
    rng = np.random.default_rng(np.random.SeedSequence((seed, 5000)))
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        half[idx] = (start + np.arange(len(idx))) % 2
        start = (start + len(idx)) % 2
    return half


def open_set_threshold(p_in: np.ndarray, accept_rate: float = ACCEPT_RATE) -> float:
    """The ``p(other)`` threshold (unknown when ``p(other) >= threshold``) that accepts ``accept_rate`` of ``p_in``.

    Midway between the highest accepted and the lowest refused held-out in-class score, so the rule does
    not sit on a card's own value.

    Raises:
        ValueError: no scores.
    """
    p = np.sort(np.asarray(p_in, np.float64))
    if not p.size:
        raise ValueError("open_set_threshold needs held-out in-class scores")
    accepted = int(np.ceil(accept_rate * len(p) - 1e-9))
    if accepted >= len(p):
        return float(min(1.0, np.nextafter(p[-1], np.inf)))
    if accepted <= 0:
        return float(p[0])
    return float((p[accepted - 1] + p[accepted]) / 2.0)


def _share(mask: np.ndarray) -> float | None:
    return round(float(np.mean(mask)), 4) if np.size(mask) else None


def _calibration(z: np.ndarray, y: np.ndarray, half: np.ndarray) -> tuple[float, dict[str, Any], np.ndarray]:
    """(T on all cards, figures, cross-fitted probabilities) of the twelve outputs ``z`` of in-class cards."""
    t_all = C.fit_temperature(z, y)
    t_half = [C.fit_temperature(z[half == k], y[half == k]) for k in (0, 1)]
    crossed = np.empty_like(z, dtype=np.float64)
    for k in (0, 1):  # each half scaled by the temperature of the other
        crossed[half != k] = C.softmax(z[half != k], t_half[k])
    before = C.softmax(z)
    figures = {
        "ece_before": round(C.expected_calibration_error(before, y, ECE_BINS), 4),
        "ece_after": round(C.expected_calibration_error(crossed, y, ECE_BINS), 4),
        "ece_after_in_sample": round(C.expected_calibration_error(C.softmax(z, t_all), y, ECE_BINS), 4),
        "nll_before": round(C.negative_log_likelihood(z, y), 4),
        "nll_after": round(float(-np.mean(np.log(np.clip(crossed[np.arange(len(y)), y], 1e-12, 1.0)))), 4),
        "temperature_halves": [round(t, 4) for t in t_half],
        "reliability": {"bins": ECE_BINS, "before": C.reliability_bins(before, y, ECE_BINS),
                        "after": C.reliability_bins(crossed, y, ECE_BINS)},
    }
    return t_all, figures, crossed


def _review(z: np.ndarray, y: np.ndarray, half: np.ndarray, temperature: float, t_halves: list[float],
            target: float) -> tuple[C.ReviewRule, dict[str, Any]]:
    """The review rule on all cards, and its coverage/precision cross-fitted between the halves."""
    probs = C.softmax(z, temperature)
    rule = C.choose_review_rule(probs, y, target)
    kept = np.zeros(len(y), bool)
    for k in (0, 1):
        fit = half == k
        r = C.choose_review_rule(C.softmax(z[fit], t_halves[k]), y[fit], target)
        kept[~fit] = ~r.needs_review(C.softmax(z[~fit], t_halves[k]))
    correct = probs.argmax(axis=1) == y
    figures = {"coverage_crossfit": _share(kept), "precision_crossfit": _share(correct[kept]) if kept.any() else None,
               "accuracy_all": _share(correct)}
    return rule, figures


def _open_set(outputs: np.ndarray, labels: np.ndarray, names: list[str] | None, half_in: np.ndarray,
              accept_rate: float, seed: int, cv: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The open-set rule (threshold on ``p(other)``) and its figures: AUROC, caught, false-unknown (cross-fitted)."""
    p_other = other_probability(outputs)
    inside, other = in_class(labels), labels == OTHER
    p_in, p_out = p_other[inside], p_other[other]
    threshold = open_set_threshold(p_in, accept_rate)
    auroc = round(C.auroc(1.0 - p_in, 1.0 - p_out), 4) if p_out.size else None
    half_out = halves(np.zeros(int(other.sum())), seed + 1)
    false_unknown, caught = np.zeros(len(p_in), bool), np.zeros(len(p_out), bool)
    for k in (0, 1):  # threshold from one half of the in-class cards, applied to the other half (and other cards)
        t_k = open_set_threshold(p_in[half_in == k], accept_rate)
        false_unknown[half_in != k] = p_in[half_in != k] >= t_k
        caught[half_out != k] = p_out[half_out != k] >= t_k
    by_condition = {}
    if names is not None and p_out.size:
        conditions = np.asarray([condition_of(n) for n, o in zip(names, other) if o])
        for cond in sorted(set(conditions)):
            mine = conditions == cond
            by_condition[cond] = {"cards": int(mine.sum()), "auroc": round(C.auroc(1.0 - p_in, 1.0 - p_out[mine]), 4),
                                  "called_unknown": _share(p_out[mine] >= threshold)}
    rule = {"method": "outlier_exposure", "threshold": round(threshold, 6), "accept_rate": accept_rate,
            "auroc": auroc, "auroc_note": AUROC_NOTE_CV if cv else AUROC_NOTE_HOLDOUT,
            "false_unknown_crossfit": _share(false_unknown),
            "other_called_unknown": _share(p_out >= threshold) if p_out.size else None}
    figures = {"in_class_cards": int(len(p_in)), "other_cards": int(len(p_out)),
               "false_unknown_in_sample": _share(p_in >= threshold), "false_unknown_crossfit": _share(false_unknown),
               "other_called_unknown": rule["other_called_unknown"],
               "other_called_unknown_crossfit": _share(caught) if p_out.size else None, "auroc": auroc,
               "by_condition": by_condition}
    return rule, figures


def fit_answer_rules(outputs: np.ndarray, labels: np.ndarray, fitted_on: str, names: list[str] | None = None,
                     review_precision: float = REVIEW_PRECISION, accept_rate: float = ACCEPT_RATE, seed: int = 0,
                     warning: str | None = None, cv: bool = False) -> AnswerRules:
    """Fit temperature, review rule and (with a 13th output) the open-set threshold on held-out cards.

    Args:
        outputs: the raw outputs ``[n, 12 | 13]`` of held-out cards (logits; log-probabilities for late fusion).
        labels: their labels (0-11 the twelve conditions, 12 "other"; -1 cards are ignored).
        fitted_on: what the cards are, in words (recorded as ``fitted_on``).
        names: the cards' names (an "other" card's condition is its folder: figures per condition).
        review_precision: the precision the answers without review must reach.
        accept_rate: the share of in-class cards the open-set threshold accepts.
        seed: the halves of the cross-fitting.
        warning: recorded with the rules (e.g. fitted on simulated cards).
        cv: the outputs are out-of-fold outputs of cross-validation (how the AUROC is described).

    Returns:
        :class:`AnswerRules`.

    Raises:
        ValueError: fewer than :data:`MIN_FIT_CARDS` cards of the twelve conditions.
    """
    outputs, labels = np.asarray(outputs, np.float64), np.asarray(labels, np.int64)
    inside = in_class(labels)
    if inside.sum() < MIN_FIT_CARDS:
        raise ValueError(f"{int(inside.sum())} held-out cards of the twelve conditions: too few to fit a temperature, "
                         f"a review rule or a threshold (at least {MIN_FIT_CARDS})")
    z, y = outputs[inside][:, : len(CODES)], labels[inside]
    half = halves(y, seed)
    temperature, calibration, _ = _calibration(z, y, half)
    rule, review = _review(z, y, half, temperature, calibration["temperature_halves"], review_precision)
    note = ("cross-fitted: the cards split in two halves (stratified by class), each half scaled by the temperature "
            f"fitted on the other; ECE over {ECE_BINS} equal-width bins of top probability")
    confidence = {
        "temperature": round(temperature, 6),
        "review": {"min_top": round(rule.min_top, 6), "min_margin": round(rule.min_margin, 6),
                   "target_precision": review_precision, "fitted_on": fitted_on,
                   "precision": round(rule.precision, 4), "coverage": round(rule.coverage, 4),
                   "coverage_crossfit": review["coverage_crossfit"], "precision_crossfit": review["precision_crossfit"],
                   "cards": rule.cards},
        "ece_before": calibration["ece_before"], "ece_after": calibration["ece_after"], "ece_note": note,
        "reliability": calibration["reliability"],
        "fitted_on": fitted_on, "cards": int(inside.sum()),
        **({"warning": warning} if warning else {}),
    }
    open_set, open_figures = None, None
    if outputs.shape[1] > len(CODES):
        open_set, open_figures = _open_set(outputs, labels, names, half, accept_rate, seed, cv)
        open_set["fitted_on"] = fitted_on
        if warning:
            open_set["warning"] = warning
    table = {}
    for target in REVIEW_TABLE:  # what other precision targets would leave without review
        r_t, f_t = _review(z, y, half, temperature, calibration["temperature_halves"], target)
        table[f"{target:g}"] = {"coverage": round(r_t.coverage, 4), "precision": round(r_t.precision, 4),
                                "coverage_crossfit": f_t["coverage_crossfit"],
                                "precision_crossfit": f_t["precision_crossfit"]}
    report = {"fitted_on": fitted_on, **({"warning": warning} if warning else {}), "cards": int(inside.sum()),
              "temperature": confidence["temperature"], "calibration": calibration, "review": confidence["review"],
              "review_figures": review, "review_by_target": table,
              **({"open_set": open_figures} if open_figures else {})}
    return AnswerRules(confidence, open_set, report)


def format_answer_rules(rules: AnswerRules) -> str:
    """The fitted rules and their figures, a few lines for the console."""
    c, r = rules.confidence, rules.confidence["review"]
    lines = [f"answer rules fitted on {c['fitted_on']}"]
    if c.get("warning"):
        lines.append(f"  warning: {c['warning']}")
    lines.append(f"  temperature {c['temperature']:.3f}; ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f} "
                 f"(cross-fitted, {ECE_BINS} bins)")
    lines.append(f"  review when top < {r['min_top']:.3f} or margin < {r['min_margin']:.3f} (precision target "
                 f"{r['target_precision']:.2f}): {r['coverage']:.1%} answered without review at precision "
                 f"{r['precision']:.3f}; cross-fitted {_pct(r['coverage_crossfit'])} at {_num(r['precision_crossfit'])}")
    table = rules.report.get("review_by_target", {})
    if table:
        lines.append("    other targets, cross-fitted coverage at precision: " + "; ".join(
            f"{t}: {_pct(v['coverage_crossfit'])} at {_num(v['precision_crossfit'])}" for t, v in table.items()))
    if rules.open_set:
        o, f = rules.open_set, rules.report["open_set"]
        lines.append(f"  unknown when p(other) >= {o['threshold']:.4f} (accepts {o['accept_rate']:.0%} of the cards "
                     f"of the twelve): false-unknown {_pct(f['false_unknown_crossfit'])} cross-fitted; other-condition "
                     f"cards called unknown {_pct(f['other_called_unknown'])} ({f['other_cards']} cards); AUROC "
                     f"{_num(f['auroc'])}")
        for cond, v in f["by_condition"].items():
            lines.append(f"    {cond:<26} {v['cards']:4d} cards  AUROC {v['auroc']:.3f}  called unknown "
                         f"{_pct(v['called_unknown'])}")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def reliability_png(reliability: dict[str, Any], title: str, ece: tuple[float, float] | None = None) -> bytes:
    """A reliability diagram as PNG bytes: per bin of top probability, accuracy against confidence, before
    (``T = 1``, grey outline) and after temperature scaling (blue), with the diagonal of perfect calibration
    and the cards per bin.

    Args:
        reliability: ``{"before": bins, "after": bins}`` (:func:`shared.confidence.reliability_bins`).
        title: the line above the chart.
        ece: (before, after) to print in the legend.
    """
    w, h, left, top, size = 560, 574, 60, 72, 400
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def xy(conf: float, acc: float) -> tuple[int, int]:
        return int(left + conf * size), int(top + (1 - acc) * size)

    cv2.rectangle(img, xy(0, 1), xy(1, 0), (0, 0, 0), 1)
    for v in np.linspace(0, 1, 6):
        cv2.putText(img, f"{v:.1f}", (xy(v, 0)[0] - 10, top + size + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{v:.1f}", (left - 32, xy(0, v)[1] + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.line(img, xy(0, 0), xy(1, 1), (160, 160, 160), 1, cv2.LINE_AA)
    after, before = reliability["after"], reliability["before"]
    most = max([b["count"] for b in after + before] + [1])
    for b in after:
        if b["count"]:
            cv2.rectangle(img, xy(b["lo"], b["accuracy"]), xy(b["hi"], 0), (200, 120, 40), -1)
    for b in before:
        if b["count"]:
            cv2.rectangle(img, xy(b["lo"], b["accuracy"]), xy(b["hi"], 0), (90, 90, 90), 2)
    for bins, colour, row in ((before, (90, 90, 90), 0), (after, (200, 120, 40), 1)):
        for b in bins:  # cards per bin: a thin bar under the chart
            if b["count"]:
                bar = int(20 * b["count"] / most)
                x0, x1 = xy(b["lo"], 0)[0], xy(b["hi"], 0)[0]
                y = top + size + 50 + row * 24
                cv2.rectangle(img, (x0 + 1, y - bar), (x1 - 1, y), colour, -1)
    cv2.putText(img, title[:70], (10, 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    legend = ["grey: before (T = 1)", "blue: after temperature scaling (cross-fitted)"]
    if ece is not None:
        legend = [f"grey: before, ECE {ece[0]:.3f}", f"blue: after (cross-fitted), ECE {ece[1]:.3f}"]
    for k, text in enumerate(legend):
        cv2.putText(img, text, (left, 40 + 16 * k), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "x: top probability (confidence)   y: accuracy   bars below: cards per bin",
                (10, h - 4), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - cv2 only fails on an impossible image
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()
