"""Card simulator: signatures of the drawn populations (what the training data holds), per condition.

Twelve cards per condition are drawn the way ``training.simulate`` draws them and simulated in one
vectorised batch (module fixture, ~15 s); medians over them are compared with the textbook shape of each
condition (``../shared/CARDS.md``) and, where the field set has the condition, with its statistics
(docs/SIMULATOR.md, *Checked against the field*). Parameter-only checks draw more wells (cheap).
"""

from __future__ import annotations

import numpy as np
import pytest

from shared.labels import CODES
from training.simulator import card_rng, make_spec, run_specs, sample_params
from training.simulator.field import fullness, ripple_share, shape_stats
from training.simulator.params import (
    INERTIA_MAX_OTHERS,
    gas_cushion,
    is_fluid_pound,
    is_gas_interference,
    start_pressure_ratio,
)

PER_CLASS = 12


@pytest.fixture(scope="module")
def population():
    specs = [make_spec(code, card_rng(21, code, i)) for code in CODES for i in range(PER_CLASS)]
    cards = run_specs(specs)
    return {code: [c for c in cards if c.condition == code] for code in CODES}


def _median(cards, fn):
    return float(np.median([fn(c) for c in cards]))


def _stat(cards, key):
    return _median(cards, lambda c: shape_stats(c.position_m, c.load_kN)[key])


def _params(code, n=80, seed=3):
    return [sample_params(code, card_rng(seed, code, i))[0] for i in range(n)]


def test_fluid_pound_and_gas_interference_share_the_gas_range_and_differ_by_the_drop():
    """4–25 % free gas occurs in both classes; the label follows the drop's shape (where the barrel
    pressure starts, how much gas cushions the drop), never a gas-fraction threshold alone."""
    a02, a03 = _params("A02"), _params("A03")
    mid = lambda ps: np.mean([0.04 <= p.gas_fraction <= 0.25 for p in ps])  # noqa: E731
    assert mid(a02) > 0.3 and mid(a03) > 0.3
    assert all(is_fluid_pound(p) and p.fillage <= 0.85 for p in a02)
    assert all(is_gas_interference(p) for p in a03)
    assert max(start_pressure_ratio(p) for p in a02) < min(start_pressure_ratio(p) for p in a03)
    # the pound's drop is steep (a knife handle over at most ~0.12 of the pump stroke), the gas's wide
    assert np.median([gas_cushion(p) for p in a02]) < 0.1 < np.median([gas_cushion(p) for p in a03])


def test_gas_lock_is_a_thin_sliver(population):
    a04, a01 = population["A04"], population["A01"]
    assert _median(a04, lambda c: fullness(c.pump_position_m, c.pump_load_kN)) < 0.25
    assert _median(a04, lambda c: fullness(c.position_m, c.load_kN)) < _median(
        a01, lambda c: fullness(c.position_m, c.load_kN)) - 0.15


def test_inertia_card_is_tilted_clockwise_with_an_early_peak_and_other_classes_are_tilted_less(population):
    assert _stat(population["A12"], "peak_x") <= 0.3
    tilt12 = _stat(population["A12"], "tilt")
    assert tilt12 > 0.1
    assert all(_stat(population[code], "tilt") < tilt12 - 0.05 for code in CODES if code != "A12")


def test_nuisance_variables_appear_in_every_class():
    """Inertia, long strokes and deep or shallow pumps in every class, so none of them marks one class."""
    for code in CODES:
        ps = _params(code, n=60)
        inertia = np.array([p.inertia_ratio for p in ps])
        if code != "A12":
            assert inertia.max() <= INERTIA_MAX_OTHERS + 0.01 and np.mean(inertia > 0.1) > 0.1, code
        assert np.ptp([p.depth_m for p in ps]) > 500.0, code
    strokes = [p.stroke_m for code in CODES for p in _params(code, n=40)]
    assert max(strokes) > 7.0 and np.median(strokes) == pytest.approx(3.1, abs=0.6)


def test_sand_and_pound_ringing_stay_within_field_noise(population):
    """Field cards: median ripple share (variance above the 8th harmonic) 0.007–0.024 per class."""
    assert _median(population["A11"], lambda c: ripple_share(c.load_kN)) < 0.035
    assert _median(population["A01"], lambda c: ripple_share(c.load_kN)) < 0.02


def test_tags_are_small_and_never_unload_the_load_cell(population):
    """A tag is a short spike at the top-right (A05) or a small hook at the bottom-left (A06)."""
    assert _stat(population["A05"], "peak_x") > _stat(population["A01"], "peak_x")  # the peak moves to the top
    for code in ("A05", "A06"):
        assert all(c.load_kN.min() > 0.0 for c in population[code]), code
    # the stop is met at most 0.8 rod stretches before the free end: it can push with at most ~0.8 F_o
    for code, key in (("A05", "tag_top_m"), ("A06", "tag_bottom_m")):
        assert all(0 < getattr(p, key) <= max(0.8 * p.rod_stretch_m, 0.01) + 1e-9 for p in _params(code, n=40)), code


def test_leaks_round_the_card_where_the_textbook_says(population):
    a01 = population["A01"]
    assert _stat(population["A09"], "peak_x") > _stat(a01, "peak_x") + 0.04  # slow loading, later peak
    assert _stat(population["A09"], "load_width") > _stat(a01, "load_width") + 0.05
    assert _stat(population["A10"], "bottom_rise") > _stat(a01, "bottom_rise") + 0.15  # lower-left raised
    assert _stat(population["A10"], "drop_width") > _stat(a01, "drop_width") + 0.1  # lower-right cut
