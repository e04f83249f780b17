"""Training-only re-rendering of cards from their series (``--render-augment``), before the shared tail.

A card with a CSV is drawn anew for every training batch the way another recorder or plotting tool
would draw it: a random number of samples per stroke (100-1,000, resampled along the stroke from a
random start phase), line width 1-7 px, margin 2-24 px, anti-aliased or aliased lines. The outline then
goes through the one shared preprocessing tail (:func:`shared.preprocess.preprocess_ink`), exactly as a
served card does, so training sees only inputs the shared preprocessing can produce. A load offset or
gain is not drawn: the renderer and the tail both scale the card to its extent, so an affine change of
the load is exactly the same picture. Cards without a CSV keep their recorded outline.
:mod:`training.image_augment` (``--augment``) jitters the outline afterwards when it is on too.
"""

from __future__ import annotations

import numpy as np

from shared.cards import render_card_ink

POINTS = (100, 1000)  # samples per stroke, inclusive
LINE_WIDTH = (1, 7)  # px, inclusive
MARGIN = (2, 24)  # px, inclusive
ALIASED_SHARE = 0.5
ALIAS_LEVEL = 128  # an aliased renderer's pixel is either on or off: the anti-aliased line cut at half strength


def resample_stroke(position: np.ndarray, load: np.ndarray, points: int, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """The closed stroke sampled at ``points`` evenly spaced times from ``phase`` (a fraction of the stroke).

    Linear interpolation along the sample index, wrapping from the last sample back to the first.
    """
    n = len(position)
    t = (phase * n + np.arange(points) * n / points) % n
    grid = np.arange(n + 1)
    return (np.interp(t, grid, np.append(position, position[0])), np.interp(t, grid, np.append(load, load[0])))


def rerender_ink(position: np.ndarray, load: np.ndarray, rng: np.random.Generator, height: int,
                 width: int) -> np.ndarray:
    """One random re-drawing of a stroke as an outline mask ``uint8 [height, width]``.

    Raises:
        shared.cards.CardError: the stroke is not drawable (as for any card).
    """
    points = int(rng.integers(POINTS[0], POINTS[1] + 1))
    p, f = resample_stroke(position, load, points, float(rng.random()))
    margin = int(rng.integers(MARGIN[0], MARGIN[1] + 1))
    line_width = int(rng.integers(LINE_WIDTH[0], LINE_WIDTH[1] + 1))
    ink = render_card_ink(p, f, width=width, height=height, margin=margin, line_width=line_width)
    if rng.random() < ALIASED_SHARE:
        ink = np.where(ink >= ALIAS_LEVEL, np.uint8(255), np.uint8(0))
    return ink
