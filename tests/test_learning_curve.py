"""``run.py learning-curve``: nested per-class samples, train and test cards apart, a table and its JSON.
A tiny exported ``cardnet`` as the base, the vendored field cards, one epoch per run."""

from __future__ import annotations

import json

import numpy as np


def test_samples_are_nested_per_class_and_seeded():
    from training.learning_curve import nested_sample

    labels = np.repeat(np.arange(7), 12)
    picks = nested_sample(labels, [3, 5, 10], seed=0)
    for k, idx in picks.items():
        assert np.bincount(labels[idx], minlength=7).tolist() == [k] * 7
    assert set(picks[3]) <= set(picks[5]) <= set(picks[10])
    assert np.array_equal(picks[5], nested_sample(labels, [3, 5, 10], seed=0)[5])
    assert not np.array_equal(picks[5], nested_sample(labels, [3, 5, 10], seed=1)[5])


def test_learning_curve_trains_on_k_per_class_and_tests_on_the_rest(tiny_cardnet, training_cache, tmp_path, capsys):
    from training import run

    out = tmp_path / "lc.json"
    assert run.main(["learning-curve", "--base", str(tiny_cardnet), "--ks", "1", "2", "--splits", "1",
                     "--arm", "ft=--init {base} --epochs 1", "--arm", "scratch=--input {kind} --epochs 1",
                     "--out", str(out), "--runs-dir", str(tmp_path), "--cache-dir", str(training_cache)]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["base"]["model"] == "tiny-cardnet" and doc["arms"]["ft"].startswith("--init ")
    runs = {(r["arm"], r["k"]): r for r in doc["runs"]}
    for k in (1, 2):
        for arm in ("ft", "scratch"):
            r = runs[(arm, k)]
            assert r["train_cards"] == 7 * k and r["test_cards"] == 709 - 7 * k  # every other field card tests
            assert 0.0 <= r["acc"] <= 1.0 and r["epochs"] == 1
        assert doc["table"]["ft"][str(k)]["splits"] == [runs[("ft", k)]["acc"]]
    printed = capsys.readouterr().out
    assert "cards/class" in printed and "ft" in printed and "scratch" in printed
