"""``shared.model_outputs``: the one reading of a network's first output, on hand-made outputs of both formats
(old softmax probabilities, new logits with a 13th "none of the twelve" output), whose answers are worked out
here by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.labels import labels_as_dicts
from shared.model_outputs import LOW_CONFIDENCE, OutputContract, interpret

LABELS = labels_as_dicts()
OLD = {"labels": LABELS, "output": "probabilities"}
NEW = {
    "labels": LABELS, "output": "logits", "other_class": True,
    "confidence": {"temperature": 2.0, "review": {"min_top": 0.6, "min_margin": 0.2, "target_precision": 0.9,
                                                  "fitted_on": "held-out cards"},
                   "ece_before": 0.1, "ece_after": 0.03},
    "open_set": {"method": "outlier_exposure", "threshold": 0.5, "accept_rate": 0.95, "fitted_on": "field folds"},
}


def _probs(rows: list[dict[int, float]]) -> np.ndarray:
    """Rows of 12 probabilities: the given ones, the rest shared equally."""
    out = np.zeros((len(rows), 12))
    for r, given in enumerate(rows):
        rest = (1.0 - sum(given.values())) / (12 - len(given))
        out[r] = rest
        for k, v in given.items():
            out[r, k] = v
    return out


def test_old_probabilities_are_used_unchanged_and_review_is_the_low_confidence_rule():
    raw = _probs([{0: 0.9}, {3: 0.45, 4: 0.44}, {7: 0.5}]).astype(np.float32)
    got = interpret(raw, OLD)
    assert np.array_equal(got.probabilities, raw.astype(np.float64))  # bit for bit
    assert got.other is None
    assert got.review.tolist() == [False, True, False]  # 0.45 < 0.5; 0.5 is not below
    assert got.review_rule == "low_confidence"
    assert got.open_set_unknown.tolist() == [False, False, False]
    assert interpret(raw, OLD, low_confidence=0.95).review.tolist() == [True, True, True]
    # a folder without "output" at all is an old softmax model
    assert np.array_equal(interpret(raw, {"labels": LABELS}).probabilities, got.probabilities)


def test_new_logits_temperature_other_class_review_and_open_set():
    logits = np.zeros((3, 13))
    logits[0, 2] = 6.0  # sure of A03: softmax(6/2 = 3 vs 0s)
    logits[1, 5], logits[1, 6] = 4.0, 3.6  # A06 by a hair
    logits[2, 12], logits[2, 0] = 5.0, 2.0  # "none of the twelve" dominates
    got = interpret(logits, NEW)
    # calibrated in-class probabilities: softmax(logits[:, :12] / 2), by hand
    e3 = math.exp(3.0)
    assert got.probabilities[0, 2] == pytest.approx(e3 / (e3 + 11))
    assert got.probabilities.sum(axis=1) == pytest.approx(np.ones(3))
    e2, e18 = math.exp(2.0), math.exp(1.8)
    assert got.probabilities[1, 5] == pytest.approx(e2 / (e2 + e18 + 10))
    # p(other): softmax over all 13 at temperature 1
    assert got.other[2] == pytest.approx(math.exp(5) / (math.exp(5) + math.exp(2) + 11))
    assert got.other[0] == pytest.approx(1 / (math.exp(6) + 12))
    assert got.open_set_unknown.tolist() == [False, False, True]
    # review: top < 0.6 or margin < 0.2 on the calibrated probabilities
    assert e3 / (e3 + 11) == pytest.approx(0.646, abs=1e-3)  # >= 0.6 and a margin of 0.61: no review
    assert got.review.tolist() == [False, True, True] and got.review_rule == "meta"
    softer = interpret(logits, {**NEW, "confidence": {**NEW["confidence"], "temperature": 3.0}})
    assert softer.review.tolist()[0] is True  # 6 / 3 = 2: top e^2 / (e^2 + 11) = 0.40 < 0.6


def test_each_part_of_the_contract_may_be_absent():
    logits = np.zeros((2, 12))
    logits[0, 1] = 3.0
    plain = interpret(logits, {"labels": LABELS, "output": "logits"})
    assert plain.probabilities[0, 1] == pytest.approx(math.exp(3) / (math.exp(3) + 11))
    assert plain.other is None and not plain.open_set_unknown.any()
    assert plain.review_rule == "low_confidence" and plain.review.tolist() == [False, True]
    # a 13th output without an open-set rule: p(other) is reported, nothing is called unknown by it
    thirteen = np.concatenate([logits, [[9.0], [0.0]]], axis=1)
    only_other = interpret(thirteen, {"labels": LABELS, "output": "logits", "other_class": True})
    assert only_other.other[0] > 0.99 and not only_other.open_set_unknown.any()
    # the in-class probabilities ignore the 13th output
    assert np.allclose(only_other.probabilities, plain.probabilities)


def test_a_late_fusion_dual_models_log_probabilities_read_as_logits():
    p = _probs([{4: 0.7, 5: 0.2}])
    got = interpret(np.log(p), {"labels": LABELS, "output": "logits"})
    assert np.allclose(got.probabilities, p)


def test_unusable_contracts_are_refused_when_read():
    for bad, words in (({"output": "scores"}, "output"),
                       ({"output": "logits", "confidence": {"temperature": 0}}, "temperature"),
                       ({"output": "logits", "confidence": {"temperature": "hot"}}, "temperature"),
                       ({"output": "logits", "confidence": {"review": {"target_precision": 0.9}}}, "min_top"),
                       ({"output": "logits", "confidence": {"review": {"min_top": 1.5}}}, "min_top"),
                       ({"output": "logits", "open_set": {"method": "outlier_exposure", "threshold": 0.5}},
                        "other_class"),
                       ({"output": "logits", "other_class": True, "open_set": {"method": "energy", "threshold": 1}},
                        "energy"),
                       ({"output": "logits", "other_class": "yes"}, "other_class")):
        with pytest.raises(ValueError, match=words):
            OutputContract.from_meta({"labels": LABELS, **bad})


def test_outputs_that_do_not_match_the_contract_are_refused():
    with pytest.raises(ValueError, match=r"expected \[N, 13\]"):
        interpret(np.zeros((2, 12)), NEW)
    with pytest.raises(ValueError, match="sum to"):
        interpret(np.full((1, 12), 0.5), OLD)
    with pytest.raises(ValueError, match="not finite"):
        interpret(np.full((1, 13), np.nan), NEW)


def test_the_contract_describes_its_rules():
    new = OutputContract.from_meta(NEW)
    assert new.width == 13
    d = new.describe()
    assert d["review"] == {"rule": "meta", "min_top": 0.6, "min_margin": 0.2, "target_precision": 0.9,
                           "fitted_on": "held-out cards"}
    assert d["open_set"]["method"] == "outlier_exposure" and d["open_set"]["threshold"] == 0.5
    old = OutputContract.from_meta(OLD)
    assert old.width == 12 and old.open_set_rule() is None
    assert old.review_rule()["rule"] == "low_confidence" and old.review_rule()["min_top"] == LOW_CONFIDENCE
