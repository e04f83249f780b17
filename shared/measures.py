"""Card measures: the numbers an engineer reads off a dynamometer card himself.

Two inputs, one definition:

* :func:`measure_series` — a stroke's samples (position in m, load in kN, as a CSV gives them):
  loads in kN, stroke in m, work per stroke in kJ (kN·m).
* :func:`measure_outline` — a card picture's outline mask (:func:`shared.cards.decode_card_png`): a
  picture has no axes, so lengths are fractions of the image (position from the left edge over the
  image width, load from the bottom edge over the image height) and the area a fraction of the image.

Both give ``fillage`` and ``fullness`` (enclosed area over stroke × load range), which do not depend
on units, so the CSV and the PNG of one card agree on them.

Fillage is what a pump-off controller reads from a card: on the downstroke the rods keep the fluid
load while the plunger travels through the unfilled part of the barrel, and drop it when the plunger
meets the liquid and the traveling valve opens (fluid pound: SLB Energy Glossary, "fluid pound"; the
horsehead position at which the plunger encounters fluid is the pump fillage: patent WO2018026706A1,
"Method of determining pump fill"). Here the drop is the largest fall of the downstroke load over
position — the centre of the step, where the load is midway between its level before and after,
measured with windows of :data:`STEP_WINDOW` of the stroke so ripples, sand spikes and the rods'
ringing do not move it; loads below the downstroke's 10th percentile (a tag at the bottom, a 0 kN
recorder glitch) are raised to it first. Fillage is the drop's distance from the bottom of the stroke
over the stroke (1 = full pump; the "knife handle" of fluid pound moves it left). On a surface card
rod stretch λ slants every load change over ≈ λ of the stroke; λ is read from the upstroke (the
centre of its loading line lies λ/2 above the bottom) and removed as a static pump-card correction:
the plunger met liquid at ``drop − λ/2`` of its stroke ``1 − λ``.

Fillage here is pump fillage as a card shows it: the liquid admitted per stroke over the plunger's
effective stroke (the gross plunger travel less the tubing stretch of unanchored tubing). On simulated
cards the truth is therefore not the simulator's ``fillage`` parameter (liquid supply over the gross
plunger travel) but ``min(fillage, 1 − gas_fraction) / (1 − tubing stretch share)``
(``tests/test_measures.py``, ``true_pump_fillage``, which says why). Accuracy on 100 cards each of A01,
A02, A11 drawn with ``card_rng(12, code, i)``, ``sample_params`` and ``run_specs`` (the test repeats it
on 30 per class of seed 3): on the pump card the estimate is within 0.07 of the truth on every card
(worst 0.066, median error 0.017, biased about +0.016 by the dead space); on the surface card, smeared
by rod stretch and rod vibration, the median error is 0.015 and 93 % of cards are within 0.09; the
worst are a few severe A11 cards whose sand drag swamps the drop (up to 0.70). A PNG of the same card
gives the same fillage (simulated: 96 % of cards within 0.01, 99 % within 0.03; field: 196 of 203
cards within 0.15, the rest cards with two drops of similar size). It is an estimate for a person to
check, not a pump card computed with the wave equation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from shared.cards import checked_card_arrays
from shared.preprocess import TracedOutline, _centre_region, trace_outline

GRID = np.linspace(0.0, 1.0, 201)  # relative positions a half stroke is resampled to
STEP_WINDOW = 0.16  # width (fraction of the stroke) over which a load step is measured
MIN_STEP_SHARE = 0.1  # a downstroke fall below this share of the load range is no fluid-load drop
FLOOR_PERCENTILE = 10  # loads below it (a tag's dip, a recorder's 0 kN glitch) are raised to it
MAX_STRETCH_SHARE = 0.5  # a measured rod stretch above half the stroke is not stretch; cap it


@dataclass(frozen=True)
class CardMeasures:
    """The measures of one card, with the units they are in.

    ``fillage`` and ``fullness`` are fractions (0–1) in either basis. With ``basis == "series"`` loads are
    in kN, ``stroke`` in m and ``area`` (work per stroke) in kJ; with ``basis == "outline"`` positions
    and loads are fractions of the image width and height and ``area`` a fraction of the image area.
    ``fillage`` is None when the card has no usable load step (a flat card).
    """

    basis: str
    fillage: float | None
    peak_load: float
    min_load: float
    load_range: float
    stroke: float
    area: float
    fullness: float
    load_unit: str
    stroke_unit: str
    area_unit: str

    def units(self) -> dict[str, str]:
        """Unit of every measure by name."""
        return {"fillage": "fraction of stroke", "peak_load": self.load_unit, "min_load": self.load_unit,
                "load_range": self.load_unit, "stroke": self.stroke_unit, "area": self.area_unit,
                "fullness": "fraction of stroke x load range"}

    def to_dict(self, decimals: int = 4) -> dict[str, object]:
        """JSON-ready: ``{"basis": ..., "<measure>": {"value": v, "unit": u}, ...}``."""
        out: dict[str, object] = {"basis": self.basis}
        for name, unit in self.units().items():
            value = getattr(self, name)
            out[name] = {"value": None if value is None else round(float(value), decimals), "unit": unit}
        return out


# --------------------------------------------------------------------------------------------
# Fillage from an upstroke and a downstroke
# --------------------------------------------------------------------------------------------


def _on_grid(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """A half stroke's load at :data:`GRID` relative positions (sorted by position, linearly interpolated)."""
    order = np.argsort(x, kind="stable")
    return np.interp(GRID, x[order], f[order])


# The windows of _step_centre, fixed by GRID and STEP_WINDOW: [g, g + half] after and [g - half, g] before g.
_HALF = int(round(STEP_WINDOW / 2 * (len(GRID) - 1)))
_AFTER = (np.arange(len(GRID)), np.minimum(np.arange(len(GRID)) + _HALF, len(GRID) - 1) + 1)
_BEFORE = (np.maximum(np.arange(len(GRID)) - _HALF, 0), np.arange(len(GRID)) + 1)
_AFTER_LEN, _BEFORE_LEN = _AFTER[1] - _AFTER[0], _BEFORE[1] - _BEFORE[0]
# np.percentile(down, FLOOR_PERCENTILE) of the GRID-long downstroke: its linear interpolation lands exactly on
# this order statistic (index (n - 1) * q, an integer here), so one partial sort gives the same number.
_FLOOR_INDEX = (len(GRID) - 1) * FLOOR_PERCENTILE // 100
assert (len(GRID) - 1) * FLOOR_PERCENTILE % 100 == 0, "the downstroke floor must be an order statistic"


def _window_indices(lo: float, hi: float) -> np.ndarray:
    """The GRID indices between ``lo`` and ``hi``."""
    return np.flatnonzero((GRID >= lo) & (GRID <= hi))


_WINDOWS = {(0.0, 1.0): _window_indices(0.0, 1.0), (0.0, 0.5): _window_indices(0.0, 0.5)}


def _step_centre(load: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """(position, height) of the largest rise of ``load`` (on :data:`GRID`) between ``lo`` and ``hi``.

    The rise at ``g`` is the mean load over the next ``STEP_WINDOW / 2`` of the stroke minus the mean
    over the previous one (windows clipped at the ends of the stroke), so it peaks at the centre of a
    load change however steep or slanted, and ripples shorter than the window average out.
    """
    csum = np.empty(len(load) + 1)
    csum[0] = 0.0
    np.cumsum(load, out=csum[1:])
    rise = (csum[_AFTER[1]] - csum[_AFTER[0]]) / _AFTER_LEN - (csum[_BEFORE[1]] - csum[_BEFORE[0]]) / _BEFORE_LEN
    inside = _WINDOWS.get((lo, hi))
    if inside is None:
        inside = _window_indices(lo, hi)
    k = int(inside[np.argmax(rise[inside])])
    return float(GRID[k]), float(rise[k])


def fillage_from_strokes(up_x: np.ndarray, up_f: np.ndarray, down_x: np.ndarray, down_f: np.ndarray) -> float | None:
    """Pump fillage (0–1) from the two halves of a card, positions scaled to 0 (bottom) … 1 (top).

    The downstroke's load drop is the largest fall of its load over position (centre of the step,
    windows of :data:`STEP_WINDOW`); the rod stretch λ is twice the centre of the upstroke's loading
    line (the largest rise in the lower half of the upstroke). The plunger met liquid at
    ``drop − λ/2`` of a plunger stroke of ``1 − λ``.

    Args:
        up_x, up_f: the upstroke (bottom to top): relative position and load.
        down_x, down_f: the downstroke (top to bottom).

    Returns:
        The fillage, clipped to [0, 1]; None when the card shows no load step (the downstroke's largest
        fall is under :data:`MIN_STEP_SHARE` of the load range: nothing to read a fillage from).
    """
    return _fillage_on_grid(_on_grid(up_x, up_f), _on_grid(down_x, down_f))


def _fillage_on_grid(up: np.ndarray, down: np.ndarray) -> float | None:
    """:func:`fillage_from_strokes` of the two halves' loads at the :data:`GRID` positions."""
    # A tag at the bottom (a dip over a few per cent of the stroke) would be the largest fall of the
    # downstroke: its loads below the 10th percentile are raised to it first. (Nothing is clipped at
    # the top, where a full pump's whole drop happens, nor on the upstroke, whose loading line at the
    # bottom is what the stretch is read from.)
    down = np.maximum(down, np.partition(down, _FLOOR_INDEX)[_FLOOR_INDEX])  # np.percentile's value
    span = float(max(up.max(), down.max()) - min(up.min(), down.min()))
    drop, height = _step_centre(down, 0.0, 1.0)
    if span <= 0 or height < MIN_STEP_SHARE * span:
        return None
    rise, _ = _step_centre(up, 0.0, 0.5)
    stretch = min(max(2.0 * rise, 0.0), MAX_STRETCH_SHARE)  # (np.clip's value, without its overhead)
    return min(max((drop - 0.5 * stretch) / (1.0 - stretch), 0.0), 1.0)


# --------------------------------------------------------------------------------------------
# Series (CSV)
# --------------------------------------------------------------------------------------------


def work_per_stroke(position: np.ndarray, load: np.ndarray) -> float:
    """∮ F dx over the closed card in the order given (shoelace formula), in load unit × position unit.

    Positive when the card is traversed clockwise — high load going up, low load coming down — which
    is how a pump that lifts liquid draws it in time order.
    """
    x, f = np.asarray(position, np.float64), np.asarray(load, np.float64)
    # Shoelace: signed area ½∑(x_i f_{i+1} − x_{i+1} f_i) is counter-clockwise-positive; ∮F dx is its negative.
    return float(-0.5 * np.sum(x * np.roll(f, -1) - np.roll(x, -1) * f))


def orient_stroke(position: np.ndarray, load: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a closed stroke to start at its lowest position and run clockwise (upstroke first).

    A series stored backwards (counter-clockwise: the downstroke first) is reversed, as
    :mod:`shared.series` does for the model input.
    """
    position, load = np.asarray(position, np.float64), np.asarray(load, np.float64)
    if work_per_stroke(position, load) < 0:
        position, load = position[::-1], load[::-1]
    start = int(np.argmin(position))
    return np.roll(position, -start), np.roll(load, -start)


def _split_at_top(x: np.ndarray, f: np.ndarray):
    """(upstroke x, f, downstroke x, f) of an oriented stroke, split at its highest position."""
    top = int(np.argmax(x))
    up_x, up_f = x[: top + 1], f[: top + 1]
    down_x, down_f = np.append(x[top:], x[0]), np.append(f[top:], f[0])
    return up_x, up_f, down_x, down_f


def measure_series(position, load) -> CardMeasures:
    """Measures of one stroke given as samples: position in m, load in kN (what a CSV holds).

    Trailing recorder padding is dropped first (:func:`shared.cards.checked_card_arrays`), so the
    loads are the extremes of the stroke itself.

    Args:
        position: polished-rod position samples (m), one stroke.
        load: polished-rod load samples (kN), same length.

    Returns:
        :class:`CardMeasures` with ``basis="series"``: loads in kN, stroke in m, area (work per stroke) in kJ.

    Raises:
        shared.cards.CardError: too few points, NaN/inf, different lengths or no extent.
    """
    position, load = checked_card_arrays(position, load)
    x, f = orient_stroke(position, load)
    stroke = float(np.ptp(x))
    peak, low = float(f.max()), float(f.min())
    work = work_per_stroke(x, f)
    rel = (x - x.min()) / stroke
    fillage = fillage_from_strokes(*_split_at_top(rel, f))
    return CardMeasures(basis="series", fillage=fillage, peak_load=peak, min_load=low, load_range=peak - low,
                        stroke=stroke, area=work, fullness=work / (stroke * (peak - low)),
                        load_unit="kN", stroke_unit="m", area_unit="kJ")


# --------------------------------------------------------------------------------------------
# Outline (PNG)
# --------------------------------------------------------------------------------------------


def _centre_in_box(traced: TracedOutline, box: tuple[int, int, int, int]) -> np.ndarray:
    """The line-centre region of the filled card cut to the ink's box (:func:`shared.preprocess._centre_region`
    of the fill cut to the box), as the box's pixels.

    The fill's closing can spill past the ink at the image border; the card lies within its ink's box, so the
    fill is cut to it first. Almost always the fill lies within the box already, and the region is the one the
    model's preprocessing peels (``traced.centre``, computed once). Otherwise the box is peeled alone, with the
    blank 1-px border the rest of the cut image gives it on every side that is not the image's edge (where
    erosion and the distance transform see foreground beyond the image, and so see it here too): the nearest
    background pixel outside the box is always one of that border, so the region is the one the whole cut
    image gives.
    """
    x, y, w, h = box
    height, width = traced.filled.shape
    if cv2.boundingRect(traced.filled) == box:
        return traced.centre[y:y + h, x:x + w]
    left, top, right, bottom = int(x > 0), int(y > 0), int(x + w < width), int(y + h < height)
    framed = cv2.copyMakeBorder(traced.filled[y:y + h, x:x + w], top, bottom, left, right, cv2.BORDER_CONSTANT,
                                value=0)
    return _centre_region(framed, traced.line_width)[top:top + h, left:left + w]


def _chains(region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns holding the card, and the top and bottom row of the region in each (indices into ``region``)."""
    # Rows are the region's columns, 0/1 viewed as bool: argmax along a contiguous bool row is a byte search.
    by_column = cv2.threshold(cv2.transpose(region), 0, 1, cv2.THRESH_BINARY)[1]
    first = by_column.view(bool).argmax(axis=1)
    cols = np.flatnonzero(by_column[np.arange(len(first)), first])  # (argmax is 0 in an empty column)
    last = region.shape[0] - 1 - cv2.flip(by_column, 1).view(bool).argmax(axis=1)
    return cols, first[cols], last[cols]


def measure_outline(ink: np.ndarray, traced: TracedOutline | None = None) -> CardMeasures:
    """Measures of a card picture, from its outline mask.

    The outline is filled and half a line width is peeled off (as the shared preprocessing does), so
    the region's edge is the drawn line's centre. The top edge of the region is the upstroke (high
    load going right), the bottom edge the downstroke.

    Args:
        ink: ``uint8 [H, W]`` outline mask (:func:`shared.cards.decode_card_png`).
        traced: ``shared.preprocess.trace_outline(ink)`` when the caller has it already (the model's
            preprocessing computes it too).

    Returns:
        :class:`CardMeasures` with ``basis="outline"``: positions as fractions of the image width from its
        left edge, loads as fractions of the image height from its bottom edge, area as a fraction of the
        image area.

    Raises:
        ValueError: the mask holds no ink.
    """
    traced = traced if traced is not None else trace_outline(ink)
    binary = traced.binary
    if not cv2.countNonZero(binary):
        raise ValueError("the outline mask holds no ink")
    height, width = binary.shape
    x0, y0, w, h = cv2.boundingRect(binary)
    centre = _centre_in_box(traced, (x0, y0, w, h))
    in_box, top, bottom = _chains(centre)
    # Pixel rows -> load as a fraction of the image height, 0 at the bottom edge; columns -> position as a
    # fraction of the image width (whole pixel numbers until the one division: the same floats either way).
    up_f = (height - 1 - y0 - top) / (height - 1)
    down_f = (height - 1 - y0 - bottom) / (height - 1)
    x = (in_box + x0) / (width - 1)  # increasing: the columns in order
    stroke = float(x[-1] - x[0])
    peak, low = float(up_f.max()), float(down_f.min())
    area = float(cv2.countNonZero(centre)) / (height * width)
    span_area = stroke * (peak - low)
    fillage = None
    if stroke > 0 and peak > low:
        # Both halves run along the same increasing positions (the downstroke read backwards is the same
        # resampling), so they go onto the grid without the sort fillage_from_strokes does.
        rel = (x - x[0]) / stroke
        fillage = _fillage_on_grid(np.interp(GRID, rel, up_f), np.interp(GRID, rel, down_f))
    return CardMeasures(basis="outline", fillage=fillage, peak_load=peak, min_load=low, load_range=peak - low,
                        stroke=stroke, area=area, fullness=area / span_area if span_area > 0 else 0.0,
                        load_unit="fraction of image height", stroke_unit="fraction of image width",
                        area_unit="fraction of image area")
