"""The not-a-card picture generator (``tests/notcards.py``): deterministic, in the card format, varied."""

from __future__ import annotations

import cv2
import numpy as np

from shared.cards import CARD_HEIGHT, CARD_WIDTH, CardError, decode_card_png
from tests.notcards import KINDS, notcard_images


def test_at_least_sixty_pictures_of_every_kind():
    pictures = notcard_images(0)
    assert len(pictures) >= 60
    assert {p.kind for p in pictures} == set(KINDS)
    assert len({p.name for p in pictures}) == len(pictures)
    for kind in ("text", "smiley", "star", "grid", "spiral", "scribble", "dot-cloud", "bar-chart", "circles",
                 "lines", "random-walk", "sine-wave", "filled-blobs", "checkerboard"):
        assert kind in KINDS


def test_same_seed_same_bytes_other_seed_other_pictures():
    a, b, c = notcard_images(5), notcard_images(5), notcard_images(6)
    assert [p.png for p in a] == [p.png for p in b]
    assert sum(p.png != q.png for p, q in zip(a, c)) >= len(a) - 3  # a blank-ish kind may repeat


def test_pictures_are_card_format_pngs_mostly_rgba_some_rgb_and_grey():
    layouts = []
    for p in notcard_images(0):
        img = cv2.imdecode(np.frombuffer(p.png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == (CARD_HEIGHT, CARD_WIDTH)
        layouts.append(1 if img.ndim == 2 else img.shape[2])
    assert layouts.count(4) >= 50 and layouts.count(3) >= 5 and layouts.count(1) >= 3


def test_the_decoder_reads_them_like_cards_or_refuses_them_with_a_reason():
    refused = 0
    for p in notcard_images(1):
        try:
            ink = decode_card_png(p.png)
        except CardError as exc:
            refused += 1
            assert str(exc)
            continue
        assert ink.shape == (CARD_HEIGHT, CARD_WIDTH) and ink.max() > 0
    assert refused < 10  # most arrive at the model: the decoder alone is no "none of these" answer
