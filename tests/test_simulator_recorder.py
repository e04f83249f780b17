"""Recorder/renderer randomisation of simulated training cards: the variety it draws, that the shared
readers take every variant, and that switching it off leaves the clean physics."""

from __future__ import annotations

import numpy as np
import pytest

from shared.cards import checked_card_arrays, read_card_csv, render_card_ink, render_card_png
from shared.preprocess import preprocess_png
from shared.series import preprocess_series
from training.simulate import generate_dataset
from training.simulator import card_rng, make_spec, run_specs
from training.simulator.recorder import record


@pytest.fixture(scope="module")
def clean_card():
    return run_specs([make_spec("A02", card_rng(4, "A02", 0))])[0]


@pytest.fixture(scope="module")
def recordings(clean_card):
    rng = np.random.default_rng(0)
    return [record(clean_card.position_m, clean_card.load_kN, rng) for _ in range(300)]


def test_recorders_vary_samples_sensors_padding_and_renderers(clean_card, recordings):
    lengths = np.array([len(r.position) for r in recordings])
    assert lengths.min() < 130 and lengths.max() > 800 and np.mean(lengths == len(clean_card.load_kN)) > 0.3
    assert {r.line_width for r in recordings} == set(range(1, 8))
    margins = [r.margin for r in recordings]
    assert min(margins) == 2 and max(margins) == 24
    assert {r.antialias for r in recordings} == {True, False}
    padded = [r for r in recordings if r.position[-1] == 0 and r.load[-1] == 0 and r.load[-4:].max() == 0]
    assert 10 < len(padded) < 60
    for r in padded:  # the shared readers drop the padding again
        x, f = checked_card_arrays(r.position, r.load)
        assert x.size < r.position.size and f.max() > 0
    # load-cell offset/gain: peaks move by several per cent in some cards, not in others
    peaks = np.array([r.load.max() / clean_card.load_kN.max() for r in recordings])
    assert np.mean(np.abs(peaks - 1.0) > 0.03) > 0.2 and np.mean(np.abs(peaks - 1.0) < 1e-9) > 0.2
    # the recording does not always start at the bottom of the stroke
    assert np.mean([np.argmin(r.position[: len(r.position) // 2]) > 0 for r in recordings]) > 0.1


def test_every_variant_goes_through_the_shared_preprocessing(recordings):
    from shared.cards import Card

    for r in recordings[:60]:
        png = render_card_png(r.position, r.load, **r.render_kwargs())
        image = preprocess_png(png)
        assert image.shape[0] == 1 and image.max() > 0.5
        series = preprocess_series(Card(r.position, r.load, 1))
        assert np.all(np.isfinite(series))


def test_aliased_rendering_draws_hard_edges_and_the_default_is_unchanged(clean_card):
    x, f = clean_card.position_m, clean_card.load_kN
    hard = render_card_ink(x, f, antialias=False)
    soft = render_card_ink(x, f)
    assert set(np.unique(hard)) == {0, 255} and len(np.unique(soft)) > 10
    assert np.array_equal(render_card_ink(x, f, antialias=True), soft)


def test_no_randomise_writes_the_clean_physics_of_the_same_cards(tmp_path):
    clean = generate_dataset(tmp_path / "clean", per_class=1, seed=9, workers=1, progress=False, randomise=False)
    varied = generate_dataset(tmp_path / "varied", per_class=1, seed=9, workers=1, progress=False)
    card = run_specs([make_spec("A05", card_rng(9, "A05", 0))])[0]
    written = read_card_csv(clean / "train" / "A05" / "a05_00000.csv")
    assert np.array_equal(written.position, np.round(card.position_m, 3))
    assert np.allclose(written.load, np.round(card.load_kN, 2), atol=1e-9)
    differs = [read_card_csv(varied / "train" / c / f"{c.lower()}_00000.csv").load.size
               != read_card_csv(clean / "train" / c / f"{c.lower()}_00000.csv").load.size
               or not np.array_equal(read_card_csv(varied / "train" / c / f"{c.lower()}_00000.csv").load,
                                     read_card_csv(clean / "train" / c / f"{c.lower()}_00000.csv").load)
               for c in ("A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A09", "A10", "A11", "A12")]
    assert sum(differs) >= 6
