"""Card simulator: each condition's signature measured on the cards, determinism, ranges, API errors.

One well (1,200 m, 3 m stroke, 5 strokes/min) is simulated with each fault switched on, in one
vectorised batch, and compared with the same well pumping normally.
"""

from __future__ import annotations

import numpy as np
import pytest

from shared.labels import CODES
from training.simulator import WellParams, card_rng, make_spec, run_specs, sample_params, simulate_card
from training.simulator.params import INERTIA_MAX_OTHERS
from training.simulator.field import fullness, ripple_share

BASE = WellParams(
    stroke_m=3.0, spm=5.0, depth_m=1200.0, rod_sections=((500.0, 0.022), (700.0, 0.019)), plunger_d_m=0.044,
    fluid_density=900.0, submergence_m=300.0, damping=0.12, crank_ratio=0.1, time_asymmetry=0.0,
    tubing_anchored=True, noise_kn=0.0, points=220,
)
FAULTS = {
    "A01": {},
    "A02": dict(fillage=0.5, submergence_m=10.0, casing_pa=0.2e6, void_gas=0.0),
    "A03": dict(gas_fraction=0.5, submergence_m=100.0),
    "A04": dict(gas_fraction=0.97, submergence_m=60.0, dead_space_m=0.6),
    "A05": dict(tag_top_m=0.2),
    "A06": dict(tag_bottom_m=0.2),
    "A07": dict(tv_close_delay_m=0.8, tv_open_delay_m=0.6, tv_stick_load=0.5),
    "A08": dict(plunger_out_m=0.6, out_ramp_m=0.15, out_bypass=1.5),
    "A09": dict(tv_leak=0.8),
    "A10": dict(sv_leak=0.8),
    "A11": dict(fillage=0.5, submergence_m=10.0, casing_pa=0.2e6, void_gas=0.0, sand_friction=0.05),
    "A12": dict(spm=11.0, stroke_m=4.5, depth_m=2000.0, rod_sections=((800.0, 0.025), (1200.0, 0.022)),
                plunger_d_m=0.032),
}


@pytest.fixture(scope="module")
def cards():
    specs = [make_spec(code, np.random.default_rng(7), BASE.replace(**kw), severity=0.5) for code, kw in FAULTS.items()]
    return {c.condition: c for c in run_specs(specs)}


def _halves(card):
    """Upstroke (bottom → top) and downstroke (top → bottom) as (position/stroke, load) arrays."""
    x = card.position_m / card.position_m.max()
    top = int(np.argmax(x))
    return (x[: top + 1], card.load_kN[: top + 1]), (x[top:], card.load_kN[top:])


def _mid(card):
    return card.load_kN.min() + 0.5 * np.ptp(card.load_kN)


def _smooth(ys, n=9):
    return np.convolve(np.pad(ys, n // 2, mode="edge"), np.ones(n) / n, mode="valid")


def _first_below(xs, ys, level):
    idx = np.nonzero(ys < level)[0]
    return float(xs[idx[0]]) if idx.size else 0.0


def _first_above(xs, ys, level):
    idx = np.nonzero(ys > level)[0]
    return float(xs[idx[0]]) if idx.size else 1.0


def _band(xs, ys, lo, hi):
    sel = (xs >= lo) & (xs <= hi)
    return float(np.mean(ys[sel]))


def test_points_and_closed_stroke(cards):
    for c in cards.values():
        assert 200 <= len(c.load_kN) <= 250 and c.position_m.shape == c.load_kN.shape
        assert c.position_m[0] == pytest.approx(0.0, abs=1e-9)  # starts at the bottom, upstroke first
        assert np.argmax(c.position_m) > 0.35 * len(c.position_m)
        assert np.all(np.isfinite(c.load_kN)) and np.all(np.isfinite(c.pump_load_kN))


def test_normal_card_is_a_parallelogram_with_the_right_loads(cards):
    c = cards["A01"]
    p = c.params
    w_rf, f_o = p.buoyant_rod_weight_n / 1e3, p.fluid_load_n / 1e3
    up, down = _halves(c)
    assert _band(*up, 0.4, 0.8) == pytest.approx(w_rf + f_o, rel=0.15)
    assert _band(*down, 0.2, 0.6) == pytest.approx(w_rf, rel=0.15)
    # rod stretch: load is picked up over about λ of the stroke, not instantly
    pickup = _first_above(*up, w_rf + 0.5 * f_o)
    assert 0.3 * p.rod_stretch_m / p.stroke_m < pickup < 2.5 * p.rod_stretch_m / p.stroke_m
    assert fullness(c.position_m, c.load_kN) > 0.5


def test_fluid_pound_unloads_late_in_the_downstroke(cards):
    for code in ("A02", "A11"):
        normal = _first_below(*_halves(cards["A01"])[1], _mid(cards["A01"]))
        xs, ys = _halves(cards[code])[1]
        pound = _first_below(xs, _smooth(ys), _mid(cards[code]))  # sand noise averaged out
        assert normal > 0.8 and pound < 0.65, (code, normal, pound)


def test_gas_interference_unloads_gradually(cards):
    def spread(card):  # position travelled between 85 % and 15 % of the load range on the downstroke
        xs, ys = _halves(card)[1]
        lo, rng = card.pump_load_kN.min(), np.ptp(card.pump_load_kN)
        xs, ys = _halves_pump(card)
        return _first_below(xs, ys, lo + 0.85 * rng) - _first_below(xs, ys, lo + 0.15 * rng)

    assert spread(cards["A03"]) > 2.0 * spread(cards["A02"]) and spread(cards["A03"]) > 0.15


def _halves_pump(card):
    x = card.pump_position_m / card.pump_position_m.max()
    top = int(np.argmax(x))
    return x[top:], card.pump_load_kN[top:]


def _area(card, pump=False):
    x, y = (card.pump_position_m, card.pump_load_kN) if pump else (card.position_m, card.load_kN)
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_gas_lock_encloses_little_area(cards):
    assert _area(cards["A04"]) < 0.35 * _area(cards["A01"])
    pump = lambda c: _area(c, pump=True)  # noqa: E731
    assert pump(cards["A04"]) < 0.2 * pump(cards["A01"])


def test_tag_at_top_spikes_near_top_dead_centre(cards):
    def spike(card):
        up, _ = _halves(card)
        return float(up[1][up[0] > 0.85].max() - _band(*up, 0.4, 0.7))

    f_o = cards["A01"].params.fluid_load_n / 1e3
    assert spike(cards["A05"]) > spike(cards["A01"]) + 0.3 * f_o
    assert cards["A05"].pump_load_kN.max() > 1.3 * cards["A01"].pump_load_kN.max()


def test_tag_at_bottom_dips_at_bottom_dead_centre(cards):
    def dip(card):
        x, y = card.position_m / card.position_m.max(), card.load_kN
        _, down = _halves(card)
        return float(_band(*down, 0.3, 0.7) - y[x < 0.12].min())

    f_o = cards["A01"].params.fluid_load_n / 1e3
    assert dip(cards["A06"]) > dip(cards["A01"]) + 0.3 * f_o
    assert cards["A06"].pump_load_kN.min() < -0.3 * f_o


def test_late_traveling_valve_keeps_load_low_early_in_the_upstroke(cards):
    def early_deficit(card):  # load early in the upstroke below the mid-upstroke load, in fluid loads
        up, _ = _halves(card)
        return (_band(*up, 0.5, 0.8) - _band(*up, 0.08, 0.25)) / (card.params.fluid_load_n / 1e3)

    assert early_deficit(cards["A07"]) > early_deficit(cards["A01"]) + 0.25


def test_plunger_out_of_barrel_drops_load_before_top(cards):
    up_n, _ = _halves(cards["A01"])
    up_o, _ = _halves(cards["A08"])
    assert _band(*up_n, 0.9, 0.97) > _mid(cards["A01"])
    assert _band(*up_o, 0.9, 0.97) < _mid(cards["A08"])


def test_traveling_valve_leak_loads_slowly_and_unloads_before_top(cards):
    a01, a09 = cards["A01"], cards["A09"]
    assert _first_above(*_halves(a09)[0], _mid(a09)) > _first_above(*_halves(a01)[0], _mid(a01)) + 0.05
    up, _ = _halves(a09)
    assert _band(*up, 0.93, 1.0) < _band(*up, 0.4, 0.7) - 0.2 * np.ptp(a09.load_kN)


def test_standing_valve_leak_unloads_slowly_and_loads_before_bottom(cards):
    a01, a10 = cards["A01"], cards["A10"]
    _, down01 = _halves(a01)
    _, down10 = _halves(a10)
    assert _first_below(*down10, _mid(a10)) < _first_below(*down01, _mid(a01)) - 0.05
    # load builds before the bottom: near BDC on the downstroke A10 sits well above its downstroke floor
    rel = lambda c, d: (_band(*d, 0.0, 0.06) - c.load_kN.min()) / np.ptp(c.load_kN)  # noqa: E731
    assert rel(a10, down10) > rel(a01, down01) + 0.1


def test_sand_friction_is_mild_time_correlated_drag_not_jagged_bursts(cards):
    a02, a11 = cards["A02"], cards["A11"]
    # the same well pounding with and without sand: the sand adds drag that opposes the motion ...
    diff = a11.load_kN - a02.load_kN
    x = a11.position_m / a11.position_m.max()
    top = int(np.argmax(x))
    mid_up = (np.arange(len(x)) < top) & (x > 0.2) & (x < 0.45)  # upstroke before the pound's region
    assert diff[mid_up].mean() > 0.2 * a11.params.sand_friction * a11.params.fluid_load_n / 1e3
    # ... without raising the card's high-frequency content much (noise no larger than the pound's own ringing)
    assert ripple_share(a11.load_kN) < 1.5 * ripple_share(a02.load_kN) + 0.01
    # the drag sequence itself is smooth: neighbouring values are strongly correlated
    spec = make_spec("A11", np.random.default_rng(3), BASE.replace(**FAULTS["A11"]), severity=0.5)
    seq = spec.sand - spec.sand.mean()
    assert float(np.dot(seq[1:], seq[:-1]) / np.dot(seq, seq)) > 0.7


def test_sticky_traveling_valve_draws_a_z_on_the_pump_card(cards):
    """Late to close: a mid-load step early in the upstroke; late to open: a matching step early in the downstroke."""
    c = cards["A07"]
    p = c.params
    x = c.pump_position_m / c.pump_position_m.max()
    f = (c.pump_load_kN - c.pump_load_kN.min()) / np.ptp(c.pump_load_kN)
    top = int(np.argmax(x))
    up_x, up_f, dn_x, dn_f = x[:top], f[:top], x[top:], f[top:]
    stroke = c.pump_position_m.max()
    close, opening = p.tv_close_delay_m / stroke, p.tv_open_delay_m / stroke
    up_step = up_f[(up_x > 0.05) & (up_x < close - 0.05)]
    down_step = dn_f[(dn_x < 0.95) & (dn_x > 1.0 - opening + 0.05)]
    assert up_step.size > 5 and down_step.size > 5
    assert 0.3 < np.median(up_step) < 0.7 and 0.3 < np.median(down_step) < 0.7
    assert np.median(up_f[(up_x > close + 0.1) & (up_x < 0.9)]) > 0.85  # full load after the valve closes
    assert np.median(dn_f[(dn_x < 1.0 - opening - 0.1) & (dn_x > 0.1)]) < 0.15  # and unloaded after it opens


def test_fluid_pound_is_a_knife_handle_on_the_pump_card(cards):
    """A vapour-filled void: the pump load holds until the plunger meets the liquid, then drops within a
    small part of the stroke, where the liquid fillage puts it."""
    c = cards["A02"]
    x, f = _halves_pump(c)
    lo, rng = c.pump_load_kN.min(), np.ptp(c.pump_load_kN)
    at85, at15 = _first_below(x, f, lo + 0.85 * rng), _first_below(x, f, lo + 0.15 * rng)
    assert at85 - at15 < 0.1
    assert abs(_first_below(x, f, lo + 0.5 * rng) - c.params.fillage) < 0.15


def test_plunger_leaving_the_barrel_steps_down_without_ringing_far_below(cards):
    c = cards["A08"]
    up, down = _halves(c)
    rng = np.ptp(c.load_kN)
    floor = _band(*down, 0.2, 0.8)
    assert c.load_kN.min() > floor - 0.3 * rng
    assert _band(*up, 0.9, 0.97) < _band(*up, 0.4, 0.7) - 0.25 * rng


def test_inertia_card_peaks_early_and_does_not_cross_itself(cards):
    c = cards["A12"]
    up, down = _halves(c)
    assert up[0][int(np.argmax(_smooth(up[1])))] < 0.3
    grid = np.linspace(0.05, 0.95, 50)
    above = np.interp(grid, up[0], _smooth(up[1])) - np.interp(grid, down[0][::-1], _smooth(down[1])[::-1])
    assert np.mean(above > 0) > 0.9  # a tilted parallelogram, not a figure-eight


def test_inertia_rotates_the_card_clockwise(cards):
    def rotation(card):
        up, down = _halves(card)
        r = np.ptp(card.load_kN)
        return ((_band(*up, 0.1, 0.35) - _band(*up, 0.65, 0.9)) + (_band(*down, 0.1, 0.35) - _band(*down, 0.65, 0.9))) / r

    assert rotation(cards["A12"]) > 0.3
    assert rotation(cards["A12"]) > rotation(cards["A01"]) + 0.3


def test_same_seed_same_card_and_different_seed_differs():
    fast = BASE.replace(spm=8.0, depth_m=1500.0, rod_sections=((1500.0, 0.022),), gas_fraction=0.3, noise_kn=0.2)
    a = simulate_card("A03", fast, seed=11)
    b = simulate_card("A03", fast, seed=11)
    c = simulate_card("A03", fast, seed=12)  # same physics, different load-cell noise
    assert np.array_equal(a.load_kN, b.load_kN) and np.array_equal(a.pump_load_kN, b.pump_load_kN)
    assert not np.array_equal(a.load_kN, c.load_kN) and np.array_equal(a.pump_load_kN, c.pump_load_kN)
    # drawn parameters follow the seed as well
    assert sample_params("A03", np.random.default_rng(11)) == sample_params("A03", np.random.default_rng(11))
    assert sample_params("A03", np.random.default_rng(11)) != sample_params("A03", np.random.default_rng(12))


@pytest.mark.parametrize("code", CODES)
def test_sampled_parameters_are_in_field_ranges(code):
    for i in range(60):
        p, sev = sample_params(code, card_rng(0, code, i))
        assert 0.0 <= sev <= 1.0
        assert 1.2 <= p.stroke_m <= 10.0 and 2.0 <= p.spm <= 12.0 and 500 <= p.depth_m <= 3000
        assert 0.028 <= p.plunger_d_m <= 0.083 and 200 <= p.points <= 250
        assert sum(length for length, _ in p.rod_sections) == pytest.approx(p.depth_m)
        assert p.rod_stretch_m < 0.15 * p.stroke_m or p.plunger_d_m == 0.028
        assert 0.0 <= p.submergence_m < p.depth_m and p.fluid_load_n > 500.0
        if code != "A12":
            assert p.inertia_ratio <= INERTIA_MAX_OTHERS + 0.01


def test_sampled_cards_of_every_class_have_field_like_loads():
    specs = [make_spec(code, card_rng(5, code, 0)) for code in CODES]
    for card in run_specs(specs):
        assert 3.0 < card.load_kN.max() < 160.0, card.params
        assert card.load_kN.min() >= 0.0, card.params  # the load cell never reads tension below zero
        assert np.ptp(card.load_kN) > 2.0


def test_unknown_condition_is_rejected_with_the_valid_codes():
    with pytest.raises(KeyError, match="A01"):
        simulate_card("A13", seed=0)


def test_engineer_question_sixty_percent_filled_pump_at_1800_m():
    params = WellParams(depth_m=1800.0, fillage=0.6, submergence_m=10.0, noise_kn=0.0)
    assert sum(length for length, _ in params.rod_sections) == pytest.approx(1800.0)  # taper scaled to depth
    card = simulate_card("A02", params, seed=0)
    _, down = _halves(card)
    assert 0.3 < _first_below(*down, _mid(card)) < 0.8  # pounds after about 40 % of the downstroke
    pump_x, pump_f = _halves_pump(card)
    assert _first_below(pump_x, pump_f, 0.5 * card.pump_load_kN.max()) < 0.75
