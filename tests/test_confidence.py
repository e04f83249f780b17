"""Calibration, review rule and open-set scores (``shared.confidence``) on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from shared.confidence import (
    MahalanobisModel,
    OpenSetRule,
    ReviewRule,
    Standardiser,
    auroc,
    choose_review_rule,
    combined_score,
    energy_score,
    expected_calibration_error,
    fit_mahalanobis,
    fit_temperature,
    knn_score,
    log_softmax,
    logits_from_probabilities,
    max_logit,
    max_softmax,
    negative_log_likelihood,
    other_class_score,
    rate_below,
    reliability_bins,
    softmax,
    threshold_for_acceptance,
)


def _calibrated_draw(n: int, classes: int = 12, scale: float = 3.0, seed: int = 0):
    """Logits ``a`` and labels drawn from softmax(a): a perfectly calibrated model by construction."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, scale, size=(n, classes))
    p = softmax(a)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return a, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_temperature_is_recovered_from_logits_generated_at_a_known_temperature(true_t):
    a, labels = _calibrated_draw(20000, seed=int(true_t * 10))
    # The model's logits are a * T: its softmax(logits / T) is the true distribution.
    assert fit_temperature(a * true_t, labels) == pytest.approx(true_t, rel=0.05)


def test_temperature_scaling_lowers_nll_and_ece_of_an_overconfident_model():
    a, labels = _calibrated_draw(8000, seed=3)
    logits = 3.0 * a  # over-confident by a factor of 3
    t = fit_temperature(logits, labels)
    assert negative_log_likelihood(logits, labels, t) < negative_log_likelihood(logits, labels)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, t), labels)
    assert before > 0.1 and after < 0.03


def test_temperature_works_on_log_probabilities_of_a_probability_only_model():
    a, labels = _calibrated_draw(8000, seed=4)
    probs = softmax(2.0 * a)
    assert fit_temperature(logits_from_probabilities(probs), labels) == pytest.approx(2.0, rel=0.06)


def test_fit_temperature_refuses_bad_shapes():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 12)), np.zeros(0, int))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 12)), np.zeros(2, int))


def test_softmax_is_stable_and_normalised():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    p = softmax(logits)
    assert np.allclose(p.sum(axis=1), 1.0) and p[0, 0] == pytest.approx(1.0) and np.allclose(p[1], 1 / 3)
    assert np.allclose(np.exp(log_softmax(logits, 2.0)), softmax(logits / 2.0))


def test_ece_and_reliability_bins_on_a_hand_computed_example():
    # Two cards at 0.9 confidence (one right), two at 0.6 (both right): bins hold gaps 0.4 and 0.4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    bins = reliability_bins(probs, labels, bins=10)
    filled = [b for b in bins if b["count"]]
    assert [(b["count"], b["confidence"], b["accuracy"]) for b in filled] == [(2, 0.6, 1.0), (2, 0.9, 0.5)]
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.4)
    assert len(bins) == 10 and bins[0]["confidence"] is None


def test_ece_of_a_calibrated_model_is_small():
    a, labels = _calibrated_draw(20000, seed=5)
    assert expected_calibration_error(softmax(a), labels) < 0.02


def test_review_rule_reaches_its_precision_on_fresh_cards():
    a, labels = _calibrated_draw(6000, seed=6)
    probs = softmax(a)
    rule = choose_review_rule(probs[:3000], labels[:3000], target_precision=0.9)
    assert rule.precision >= 0.9 and 0.0 < rule.coverage < 1.0
    fresh, fresh_labels = probs[3000:], labels[3000:]
    kept = ~rule.needs_review(fresh)
    precision = (fresh[kept].argmax(axis=1) == fresh_labels[kept]).mean()
    assert precision >= 0.87  # held-out precision close to the target (sampling noise on ~1,000 cards)
    # Looser target: fewer cards to review.
    assert choose_review_rule(probs[:3000], labels[:3000], 0.7).coverage > rule.coverage


def test_review_rule_round_trips_and_reports_an_unreachable_target():
    probs = np.full((10, 3), 1 / 3)
    labels = np.arange(10) % 3
    rule = choose_review_rule(probs, labels, target_precision=0.99)
    assert rule.precision < 0.99  # no threshold can make a coin toss precise, and it says so
    assert ReviewRule.from_dict(rule.to_dict()) == rule


def test_open_set_scores_rank_confident_above_flat_logits():
    confident = np.array([[8.0, 0.0, 0.0]])
    flat = np.array([[0.1, 0.0, 0.0]])
    for score in (max_softmax, max_logit, energy_score):
        assert score(confident)[0] > score(flat)[0]
    assert energy_score(np.zeros((1, 4)))[0] == pytest.approx(np.log(4.0))


def test_mahalanobis_separates_far_points_and_uses_the_shared_covariance():
    rng = np.random.default_rng(0)
    cov = np.array([[4.0, 0.0], [0.0, 0.25]])  # wide in x, narrow in y
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    labels = np.repeat([0, 1], 2000)
    x = means[labels] + rng.multivariate_normal([0, 0], cov, size=len(labels))
    model = fit_mahalanobis(x, labels)
    assert np.allclose(model.means, means, atol=0.15)
    assert np.allclose(np.linalg.inv(model.precision), cov, rtol=0.1, atol=0.05)
    # 2 units off a mean along the wide axis is ordinary; along the narrow one it is far.
    wide, narrow = model.score(np.array([[2.0, 0.0]]))[0], model.score(np.array([[0.0, 2.0]]))[0]
    assert wide > narrow
    outliers = rng.normal([5.0, 6.0], 1.0, size=(500, 2))
    assert auroc(model.score(x), model.score(outliers)) > 0.99
    assert np.allclose(MahalanobisModel.from_dict(model.to_dict()).score(outliers), model.score(outliers))


def test_knn_score_prefers_points_near_the_bank():
    rng = np.random.default_rng(1)
    bank = rng.normal([1.0, 0.0, 0.0], 0.1, size=(200, 3))
    near, far = knn_score(bank[:5] + 0.01, bank), knn_score(np.array([[0.0, 1.0, 0.0]]), bank)
    assert near.min() > far.max()


def test_auroc_matches_the_pairwise_count_with_ties():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairs = (a[:, None] > b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean()
    assert auroc(a, b) == pytest.approx(pairs)
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0 and auroc([0.0], [1.0]) == 0.0


def test_threshold_accepts_the_stated_share_and_the_rule_applies_it():
    scores = np.arange(1000, dtype=float)
    threshold = threshold_for_acceptance(scores, 0.95)
    assert 1.0 - rate_below(scores, threshold) == pytest.approx(0.95, abs=0.002)
    rule = OpenSetRule("energy", threshold, 0.95)
    assert rule.is_unknown(np.array([threshold - 1.0, threshold])).tolist() == [True, False]
    assert OpenSetRule.from_dict(rule.to_dict()) == rule


def test_other_class_score_is_one_minus_the_other_probability():
    logits = np.array([[2.0, 0.0, 5.0], [2.0, 0.0, -5.0]])  # class 2 is "other"
    s = other_class_score(logits, 2)
    assert s[0] < 0.1 < 0.9 < s[1]
    assert s == pytest.approx(1.0 - softmax(logits)[:, 2])


def test_combined_score_averages_standardised_scores():
    rng = np.random.default_rng(3)
    a_in, b_in = rng.normal(10.0, 2.0, 500), rng.normal(-3.0, 0.1, 500)  # very different scales
    sa, sb = Standardiser.fit(a_in), Standardiser.fit(b_in)
    assert sa.apply(np.array([sa.median]))[0] == 0.0 and sa.scale == pytest.approx(2.7, rel=0.15)
    # A card low on the narrow score alone is pulled down as much as one low on the wide score alone.
    low_a = combined_score([np.array([10.0 - 4 * 2.0]), np.array([-3.0])], [sa, sb])
    low_b = combined_score([np.array([10.0]), np.array([-3.0 - 4 * 0.1])], [sa, sb])
    assert low_a[0] == pytest.approx(low_b[0], rel=0.3) and low_a[0] < -1.0
    assert Standardiser.from_dict(sa.to_dict()) == sa
    assert Standardiser.fit(np.ones(10)).scale == 1.0  # a constant reference does not divide by zero
    with pytest.raises(ValueError):
        combined_score([a_in], [])
