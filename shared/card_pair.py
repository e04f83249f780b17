"""Are a PNG and a CSV one card? The check before a dual model reads them as a pair.

A dual model reads a card's picture and its samples together. Sent a PNG of one card and the CSV of another,
it would answer for a card that does not exist. :func:`check_pair` lays the CSV's samples over the PNG's outline
(each scaled linearly into the outline's bounding box, so the PNG's own margins, axes and line width do not
matter) and measures how much of each lies on the other (:func:`outline_agreement`).

How the threshold was chosen (a one-off script over ``data/field/field-cards.csv``, not kept;
``tests/test_card_pair.py`` repeats the measurement on 60 cards): 300 random field cards drawn with ``shared.cards.render_card_ink`` at
margins 2-24 px and line widths 1-7 px, each against its own samples and 1,500 random PNG/CSV pairs of two
different cards. Every true pair agreed at 1.00; the mismatched pairs at median 0.35 (same condition) and
0.29 (other conditions), at most 0.97. At :data:`MIN_PAIR_AGREEMENT` = 0.9 no true pair is refused and 4 of
the 1,500 mismatched pairs pass -- near-identical shapes, whose answer the mix-up hardly changes.
"""

from __future__ import annotations

import cv2
import numpy as np

from shared.cards import Card, CardError, checked_card_arrays, ink_binary
from shared.preprocess import estimate_line_width

MIN_PAIR_AGREEMENT = 0.9  # below this share, the PNG and the CSV are taken to be two different cards
TOLERANCE_PX = 1.0  # how far (plus the PNG's measured line width) a sample may sit from the outline


class MismatchedPair(CardError):
    """The PNG and the CSV sent as one card draw two different cards.

    Attributes:
        agreement: the share of the outline and the samples that lie on each other (0-1).
    """

    def __init__(self, agreement: float) -> None:
        super().__init__(
            f"the PNG and the CSV are not the same card: only {agreement:.0%} of the CSV's samples and the "
            f"PNG's outline lie on each other (one card: {MIN_PAIR_AGREEMENT:.0%} or more); send them as two "
            f"cards, or the matching files"
        )
        self.agreement = agreement


def outline_agreement(ink: np.ndarray, card: Card) -> float:
    """How well a CSV's samples trace a PNG's outline: 1.0 for the same card, low for another card.

    The samples are scaled into the bounding box of the outline's ink; the result is the smaller of two
    shares: samples within the tolerance of the ink, and ink pixels within the tolerance of the samples'
    closed polyline. The tolerance is :data:`TOLERANCE_PX` plus the outline's measured line width.

    Args:
        ink: the PNG's outline mask (``shared.cards.decode_card_png``).
        card: the CSV's stroke (``shared.cards.read_card_csv``).

    Returns:
        The agreement in [0, 1].

    Raises:
        CardError: the samples are not one drawable stroke, or the PNG holds no ink.
    """
    position, load = checked_card_arrays(card.position, card.load)
    binary = ink_binary(ink)
    x0, y0, width, height = cv2.boundingRect(binary)
    if width < 2 or height < 2:
        raise CardError("the PNG holds no outline to compare the CSV with")
    tolerance = TOLERANCE_PX + estimate_line_width(binary)
    # Work in the outline's box plus a border, not the whole image: the distance maps are the cost.
    pad = int(np.ceil(tolerance)) + 2
    top, left = max(y0 - pad, 0), max(x0 - pad, 0)
    box = binary[top:y0 + height + pad, left:x0 + width + pad] > 0
    x = (x0 - left) + (position - position.min()) / np.ptp(position) * (width - 1)
    y = (y0 - top + height - 1) - (load - load.min()) / np.ptp(load) * (height - 1)

    radius = int(np.ceil(tolerance))
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    ink_zone = cv2.dilate(box.astype(np.uint8), near)  # every pixel within the tolerance of the ink
    xi = np.clip(np.rint(x).astype(np.intp), 0, box.shape[1] - 1)
    yi = np.clip(np.rint(y).astype(np.intp), 0, box.shape[0] - 1)
    samples_on_ink = float(np.mean(ink_zone[yi, xi] > 0))

    trace = np.zeros(box.shape, np.uint8)
    shift = 4  # sub-pixel polyline
    cv2.polylines(trace, [np.rint(np.stack([x, y], axis=1) * (1 << shift)).astype(np.int32)], True, 1, 1,
                  cv2.LINE_8, shift)
    ink_on_samples = float(np.mean(cv2.dilate(trace, near)[box] > 0))
    return min(samples_on_ink, ink_on_samples)


def check_pair(ink: np.ndarray, card: Card) -> float:
    """Refuse a PNG and a CSV that are not one card.

    Returns:
        The agreement (:func:`outline_agreement`), at least :data:`MIN_PAIR_AGREEMENT`.

    Raises:
        MismatchedPair: (a ``CardError``) the two files draw different cards.
        CardError: either file is not a usable card.
    """
    agreement = outline_agreement(ink, card)
    if agreement < MIN_PAIR_AGREEMENT:
        raise MismatchedPair(agreement)
    return agreement
