"""Recorder and renderer variety for simulated training cards (domain randomisation).

The physics gives one clean stroke per card. Field cards come from many recorders and renderers: load
cells with offset and gain errors, position sensors that are not linear, 100–1,000 samples per stroke,
strokes that do not start exactly at the bottom, recorders that pad a short stroke with (0, 0), load
cells that clip, pictures drawn with other line widths, margins and with or without anti-aliasing. A
model trained on one recorder's cards latches onto that recorder; ``record`` draws one of many.

Training data only: the shared preprocessing (``shared.preprocess`` / ``shared.series``) stays the one
path for every card and is what has to cope with this variety.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLES_RANGE = (100, 1000)  # samples per stroke of the randomised recorders
LINE_WIDTHS = (1, 2, 3, 4, 5, 6, 7)
LINE_WIDTH_WEIGHTS = (0.2, 0.3, 0.2, 0.1, 0.08, 0.06, 0.06)
MARGIN_RANGE = (2, 24)
MIN_PADDING, MAX_PADDING = 4, 60  # trailing (0, 0) samples; shared.cards drops runs of four or more


@dataclass(frozen=True)
class Recording:
    """One card as a recorder stored it and a renderer drew it."""

    position: np.ndarray
    load: np.ndarray
    margin: int = 10
    line_width: int = 2
    antialias: bool = True

    def render_kwargs(self) -> dict:
        """Keyword arguments for ``shared.cards.render_card_png``."""
        return {"margin": self.margin, "line_width": self.line_width, "antialias": self.antialias}


def _resample_periodic(values: np.ndarray, n: int) -> np.ndarray:
    """Linear resampling of a closed stroke to ``n`` samples, same start."""
    m = len(values)
    return np.interp(np.arange(n) * (m / n), np.arange(m + 1), np.append(values, values[0]))


def record(position: np.ndarray, load: np.ndarray, rng: np.random.Generator) -> Recording:
    """Draw a recorder and a renderer and pass one clean stroke through them.

    Every effect is drawn independently, most of them only for a share of the cards, so that clean
    cards stay common. Loads and positions keep their units (kN, m).

    Args:
        position: polished-rod position (m), bottom of the stroke first.
        load: polished-rod load (kN).
        rng: the card's recorder generator (its only source of randomness).

    Returns:
        the ``Recording``.
    """
    x = np.asarray(position, float)
    f = np.asarray(load, float)
    stroke = float(np.ptp(x))
    x0 = float(x.min())
    span = float(np.ptp(f))

    # Samples per stroke.
    if rng.random() < 0.5:
        lo, hi = SAMPLES_RANGE
        n = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        x, f = _resample_periodic(x, n), _resample_periodic(f, n)
    # Position sensor: monotone nonlinearity (stretches the ends or the middle of the stroke) and gain.
    if rng.random() < 0.5 and stroke > 0:
        a = rng.uniform(-0.3, 0.3)
        u = (x - x0) / stroke
        x = x0 + stroke * (u + a * np.sin(2.0 * np.pi * u) / (2.0 * np.pi))
    if rng.random() < 0.5:
        x = x * rng.uniform(0.95, 1.05)
    # Load cell: gain error and offset (zero drift).
    if rng.random() < 0.5:
        f = f * rng.uniform(0.92, 1.08) + rng.uniform(-0.08, 0.08) * float(np.max(np.abs(f)))
    # Load cell or amplifier saturating at the top of the range.
    if rng.random() < 0.05 and span > 0:
        f = np.minimum(f, float(f.max()) - rng.uniform(0.02, 0.1) * span)
    # The recording starts a little before or after the bottom of the stroke.
    if rng.random() < 0.3:
        shift = int(round(rng.uniform(-0.03, 0.03) * len(x)))
        x, f = np.roll(x, shift), np.roll(f, shift)
    # Recorder padding: a short stroke filled up to a fixed length with (0, 0).
    if rng.random() < 0.1:
        pad = int(rng.integers(MIN_PADDING, MAX_PADDING + 1))
        x, f = np.concatenate([x, np.zeros(pad)]), np.concatenate([f, np.zeros(pad)])

    line_width = int(rng.choice(LINE_WIDTHS, p=LINE_WIDTH_WEIGHTS))
    margin = int(rng.integers(MARGIN_RANGE[0], MARGIN_RANGE[1] + 1))
    antialias = bool(rng.random() < 0.6)
    return Recording(x, f, margin, line_width, antialias)
