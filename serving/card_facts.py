"""What a card's own files say before any model reads it: is it a card at all, and its measures.

Paddle-free and picklable (the batch scorer's worker processes compute it beside the model input, from the
same decoded files): :func:`read_facts` runs the structural card check of :mod:`shared.card_check` on what the
model reads -- the outline of a PNG, the samples of a CSV, both for a PNG + CSV pair -- and the card measures
of :mod:`shared.measures`, from the CSV when there is one (kN, m, kJ), else from the outline (fractions of
the image). :mod:`serving.answers` turns them into each answer's ``unknown`` evidence and ``measures``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.card_check import CardCheck, check_outline, check_series
from shared.cards import Card
from shared.measures import CardMeasures, measure_outline, measure_series
from shared.preprocess import TracedOutline, trace_outline


@dataclass(frozen=True)
class CardFacts:
    """The structural check(s) and the measures of one card's files.

    Attributes:
        checks: ``(("outline" | "series", CardCheck), ...)``: one per file the model read.
        measures: the card's measures, or None when they cannot be taken (``measures_error`` says why).
        measures_error: why there are no measures ("" when there are).
    """

    checks: tuple[tuple[str, CardCheck], ...]
    measures: CardMeasures | None
    measures_error: str = ""

    @property
    def is_card(self) -> bool:
        """Every structural check passed: the files look like one dynamometer card."""
        return all(check.ok for _, check in self.checks)

    @property
    def card_score(self) -> float:
        """The lowest check score (1: every rule holds; below 0.5 a check fails)."""
        return min((check.score for _, check in self.checks), default=1.0)

    @property
    def reasons(self) -> list[str]:
        """Every broken rule, of every check, as a person reads it."""
        return [reason for _, check in self.checks for reason in check.reasons]

    @property
    def checked(self) -> list[str]:
        """Which files were checked: ``outline``, ``series`` or both."""
        return [what for what, _ in self.checks]


def read_facts(ink: np.ndarray | None, card: Card | None, traced: TracedOutline | None = None) -> CardFacts:
    """Check and measure a card from the files its model reads.

    Args:
        ink: the PNG's outline mask (:func:`shared.cards.decode_card_png`) when the model reads the PNG, else None
            (a CSV rendered for the image model is checked as the series it is).
        card: the CSV's samples when the model reads the CSV, else None.
        traced: ``shared.preprocess.trace_outline(ink)`` when the caller has it (the model's fill reads it too):
            the check and the measures then take the line, the fill and the line width from it.

    Returns:
        :class:`CardFacts`.

    Raises:
        ValueError: neither file given.
    """
    if ink is None and card is None:
        raise ValueError("read_facts needs the card's outline, its samples, or both")
    checks: list[tuple[str, CardCheck]] = []
    if ink is not None:
        traced = traced if traced is not None else trace_outline(ink)
        checks.append(("outline", check_outline(ink, traced)))
    if card is not None:
        checks.append(("series", check_series(card.position, card.load)))
    try:
        measures = measure_series(card.position, card.load) if card is not None else measure_outline(ink, traced)
    except ValueError as exc:  # (CardError is one) a card the model reads but no measure can be taken of
        return CardFacts(tuple(checks), None, f"no measures: {exc}")
    return CardFacts(tuple(checks), measures)
