"""Training-only series augmentation: keeps the shared preprocessing's invariants, varies a little, never in inference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.cards import Card  # noqa: E402
from shared.series import periodic_derivative, preprocess_series  # noqa: E402
from training.series_augment import LOAD_NOISE, augment_series  # noqa: E402


@pytest.fixture(scope="module")
def cards() -> np.ndarray:
    """Preprocessed simulated cards of four conditions, ``[4, 5, 256]``."""
    from training.simulator.api import simulate_card

    out = []
    for i, code in enumerate(("A01", "A02", "A05", "A09")):
        c = simulate_card(code, seed=10 + i)
        out.append(preprocess_series(Card(c.position_m, c.load_kN)))
    return np.stack(out)


def test_derivative_channels_are_the_shared_periodic_derivative(cards):
    np.testing.assert_allclose(periodic_derivative(cards[:, 0].astype(np.float64)), cards[:, 2], atol=1e-5)  # from the float32 copy
    np.testing.assert_allclose(periodic_derivative(cards[:, 1].astype(np.float64)), cards[:, 3], atol=1e-5)


def test_augmented_cards_keep_the_invariants(cards):
    before = cards.copy()
    out = augment_series(cards, np.random.default_rng(0))
    np.testing.assert_array_equal(cards, before)  # the input is not touched
    assert out.shape == cards.shape and out.dtype == np.float32
    load, position = out[:, 1], out[:, 0]
    np.testing.assert_allclose(load.min(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(load.max(axis=1), 1.0, atol=1e-6)
    assert position.min() >= -1e-6 and position.max() <= 1 + 1e-6
    np.testing.assert_allclose(out[:, 2], periodic_derivative(position.astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(out[:, 3], periodic_derivative(load.astype(np.float64)), atol=1e-5)
    np.testing.assert_array_equal(out[:, 4], cards[:, 4])  # the min/max load ratio is a property of the well


def test_variation_is_small_random_and_reproducible(cards):
    a = augment_series(cards, np.random.default_rng(1))
    b = augment_series(cards, np.random.default_rng(1))
    c = augment_series(cards, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a[:, :2], cards[:, :2])
    # the same card: the load curve moves by a few per cent of its range, not more
    diff = np.abs(a[:, 1] - cards[:, 1]).mean(axis=1)
    assert (diff > LOAD_NOISE / 4).all() and (diff < 0.08).all()
    assert (np.abs(a[:, 0] - cards[:, 0]).mean(axis=1) < 0.05).all()


def test_training_uses_it_only_when_asked(tmp_path, tmp_path_factory):
    """A recorded recipe flag; two runs that differ only in it train different weights; the seed preset has it off."""
    from tests.conftest import simulated_train_set
    from training.recipe import resolve_recipe
    from training.run import main, parse_args

    assert resolve_recipe(parse_args(["--input", "series"])).series_augment is True
    assert resolve_recipe(parse_args(["--preset", "seed"])).series_augment is False
    data = simulated_train_set(tmp_path_factory, 2, seed=3)
    digests = {}
    for flag in ("--series-augment", "--no-series-augment"):
        name = flag.strip("-")
        argv = ["--data", str(data), "--input", "series", "--epochs", "1", "--batch-size", "8", "--name", name,
                "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-vdl",
                "--no-export", "--no-progress", "--holdout", "0.5"]
        assert main([*argv, flag]) == 0
        config = json.loads((tmp_path / "runs" / name / "config.json").read_text())
        assert config["recipe"]["series_augment"] is (flag == "--series-augment")
        digests[flag] = (tmp_path / "runs" / name / "best.pdparams").read_bytes()
    assert digests["--series-augment"] != digests["--no-series-augment"]
