"""shared.card_pair: a PNG and a CSV of one card agree; of two different cards they do not (real field cards)."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

from shared.card_pair import MIN_PAIR_AGREEMENT, MismatchedPair, check_pair, outline_agreement
from shared.cards import Card, CardError, checked_card_arrays, decode_card_png, render_card_ink, render_card_png
from tests.conftest import REPO, synthetic_card

FIELD_CARDS = REPO / "data" / "field" / "field-cards.csv"


@pytest.fixture(scope="module")
def field_cards() -> list[tuple[str, Card]]:
    """A fixed random 60 of the vendored real field cards: (condition, card)."""
    csv.field_size_limit(1 << 26)
    with open(FIELD_CARDS, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = random.Random(7).sample(rows, 60)
    return [(r["code"], Card(np.array(r["position_m"].split(), float), np.array(r["load_kN"].split(), float)))
            for r in rows]


def test_the_same_field_card_drawn_any_way_agrees(field_cards):
    rng = random.Random(1)
    for _, card in field_cards:
        position, load = checked_card_arrays(card.position, card.load)
        ink = render_card_ink(position, load, margin=rng.choice([2, 4, 8, 16, 24]), line_width=rng.choice([1, 2, 3, 5, 7]))
        assert check_pair(ink, card) >= MIN_PAIR_AGREEMENT


def test_two_different_field_cards_are_refused(field_cards):
    refused = 0
    pairs = list(zip(field_cards, field_cards[1:] + field_cards[:1]))
    for (_, a), (_, b) in pairs:
        position, load = checked_card_arrays(a.position, a.load)
        try:
            check_pair(render_card_ink(position, load), b)
        except MismatchedPair as exc:
            refused += 1
            assert exc.agreement < MIN_PAIR_AGREEMENT and "not the same card" in str(exc)
    assert refused >= 0.95 * len(pairs), f"only {refused} of {len(pairs)} mismatched pairs refused"


def test_a_png_of_another_renderer_size_still_agrees():
    """Linear scaling into the outline's box: image size and margins of the PNG do not matter."""
    position, load = synthetic_card("pound")
    png = render_card_png(position, load, width=640, height=300, margin=30, line_width=4)
    assert outline_agreement(decode_card_png(png), Card(position, load)) > 0.95


def test_unusable_samples_are_a_card_error():
    position, load = synthetic_card("normal")
    ink = render_card_ink(position, load)
    with pytest.raises(CardError):
        check_pair(ink, Card(np.zeros(50), np.zeros(50)))
