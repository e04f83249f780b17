"""The fast outline check and measures give what their straightforward definitions give.

``shared.card_check.outline_features`` (flood fills on the ink's box instead of whole-image label images,
column runs and envelopes read along transposed rows), ``shared.measures.measure_outline`` (the fill and the
line-centre region shared with the model's preprocessing through ``shared.preprocess.trace_outline``) and
the fillage (``np.percentile`` as one order statistic) are held to the first implementations, kept in
``tests/outline_reference.py``: every feature and every measure equal, not close -- the check's decisions
and the answers' measures may not move. Checked on a sample of the real field cards rendered at the margins
and line widths of ``tests/test_card_check.py``, simulated cards of all twelve classes and not-a-card
pictures of every kind (beyond this sample, the same comparison over all 1,200 field cards, 480 simulated
renders and 690 not-a-card pictures of seeds 0-9 found no difference).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.card_check import check_outline, outline_features
from shared.cards import CardError, decode_card_png, render_card_png
from shared.labels import CODES
from shared.measures import fillage_from_strokes, measure_outline, measure_series
from shared.preprocess import DEFAULT_CONFIG, filled_card, trace_outline
from tests import outline_reference as reference
from tests.notcards import notcard_images
from training.simulator import card_rng, make_spec, run_specs, sample_params

FIELD = Path(__file__).resolve().parents[1] / "data" / "field" / "field-cards.csv"
SETTINGS = [(2, 1), (10, 2), (24, 3), (5, 7), (16, 5), (2, 7), (24, 1)]  # (margin, line width)


@pytest.fixture(scope="module")
def field_cards():
    from training.simulator.field import load_field_cards

    return load_field_cards(FIELD)[::8]  # 150 cards, in-class and other conditions


@pytest.fixture(scope="module")
def simulated():
    specs = []
    for code in CODES:
        for i in range(4):
            rng = card_rng(33, code, i)
            params, severity = sample_params(code, rng)
            specs.append(make_spec(code, rng, params, severity))
    return run_specs(specs)


def _renders(cards, position, load):
    return [(f"{i}", decode_card_png(render_card_png(position(c), load(c), margin=SETTINGS[i % 7][0],
                                                       line_width=SETTINGS[i % 7][1])))
            for i, c in enumerate(cards)]


@pytest.fixture(scope="module")
def outlines(field_cards, simulated):
    inks = [("field " + n, ink) for n, ink in _renders(field_cards, lambda c: c.position_m, lambda c: c.load_kN)]
    inks += [("simulated " + n, ink) for n, ink in _renders(simulated, lambda c: c.position_m, lambda c: c.load_kN)]
    for picture in notcard_images(5):
        try:
            inks.append((picture.name, decode_card_png(picture.png)))
        except CardError:
            pass
    return inks


def test_outline_features_equal_the_reference(outlines):
    for name, ink in outlines:
        want = reference.outline_features(ink)
        assert outline_features(ink) == want, name
        assert outline_features(ink, trace_outline(ink)) == want, name


def test_the_sample_reaches_every_branch_of_the_fast_features(outlines):
    # One piece / several pieces; no, one, a few (filled one by one) and many (labelled) enclosed regions.
    features = [reference.outline_features(ink) for _, ink in outlines]
    assert {f["components"] == 1 and f["main_share"] == 1.0 for f in features} == {True, False}
    holes = [f["holes"] for f in features]
    assert min(holes) == 0 and 1 in holes and any(2 <= h <= 12 for h in holes) and max(holes) > 32


def test_check_decisions_do_not_depend_on_who_traced_the_outline(outlines):
    for name, ink in outlines[::3]:
        assert check_outline(ink) == check_outline(ink, trace_outline(ink)), name


def test_outline_measures_equal_the_reference(outlines):
    for name, ink in outlines:
        want = dataclasses.astuple(reference.measure_outline(ink))
        assert dataclasses.astuple(measure_outline(ink)) == want, name
        traced = trace_outline(ink)
        filled_card(ink, DEFAULT_CONFIG, traced)  # the model's fill first, as in a request: the centre is shared
        assert dataclasses.astuple(measure_outline(ink, traced)) == want, name


def test_outline_measures_of_cards_at_the_image_edge_equal_the_reference(outlines):
    # Moved into the image's corner, a card's fill spills past its ink's box (the closing at the image border),
    # so the measures peel the box alone -- with a blank border on two sides, none on the others.
    spilled_and_peeled = 0
    for name, ink in outlines:
        if not name.startswith("field"):
            continue
        x, y, w, h = cv2.boundingRect(ink)
        corner = np.zeros_like(ink)
        corner[: ink.shape[0] - y, : ink.shape[1] - x] = ink[y:, x:]
        traced = trace_outline(corner)
        spilled_and_peeled += (cv2.boundingRect(traced.filled) != cv2.boundingRect(traced.binary)
                               and traced.line_width / 2 - 0.5 >= 1.0)
        assert dataclasses.astuple(measure_outline(corner, traced)) == dataclasses.astuple(
            reference.measure_outline(corner)), name
    assert spilled_and_peeled >= 20


def test_series_measures_and_fillage_equal_the_reference(field_cards, simulated):
    for c in list(field_cards) + list(simulated):
        want = dataclasses.astuple(reference.measure_series(c.position_m, c.load_kN))
        assert dataclasses.astuple(measure_series(c.position_m, c.load_kN)) == want
    rng = np.random.default_rng(7)
    for i in range(300):  # ties in the loads (whole numbers) and none
        n = int(rng.integers(5, 300))
        up_x, down_x = rng.random(n), rng.random(n)
        up_f = rng.integers(0, 5, n) * 1.0 if i % 2 else rng.normal(size=n)
        down_f = rng.integers(-3, 3, n) * 1.0 if i % 3 else rng.normal(size=n)
        assert fillage_from_strokes(up_x, up_f, down_x, down_f) == reference.fillage_from_strokes(
            up_x, up_f, down_x, down_f)


def test_traced_outline_is_read_only_and_the_fill_is_the_same():
    ink = decode_card_png(render_card_png(np.r_[np.linspace(0, 3, 50), np.linspace(3, 0, 50)],
                                          np.r_[np.full(50, 40.0), np.full(50, 20.0)]))
    traced = trace_outline(ink)
    for array in (traced.binary, traced.filled, traced.centre):
        with pytest.raises(ValueError):
            array[0, 0] = 1
    assert np.array_equal(filled_card(ink, DEFAULT_CONFIG, traced), filled_card(ink))


def test_a_blank_mask_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="no ink"):
        check_outline(np.zeros((190, 400), np.uint8))
