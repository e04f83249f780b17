"""The straightforward definitions of the outline check's features and of the card measures, for the tests.

These are the first implementations of :func:`shared.card_check.outline_features`,
:func:`shared.measures.measure_outline` and the fillage of :func:`shared.measures.fillage_from_strokes` (so
:func:`measure_series` too), kept as written: whole-image label images with their statistics, a Python loop
over the background regions, ``np.where`` envelopes on the full mask, each reader filling the outline itself,
``np.percentile``. The fast versions in ``shared/`` must give the same features and measures
(``tests/test_outline_fast.py``).
"""

from __future__ import annotations

import cv2
import numpy as np

from shared.card_check import JUMP_SHARE, JUMP_SPAN
from shared.cards import checked_card_arrays, ink_binary
from shared.measures import (
    FLOOR_PERCENTILE,
    GRID,
    MAX_STRETCH_SHARE,
    MIN_STEP_SHARE,
    STEP_WINDOW,
    CardMeasures,
    orient_stroke,
    work_per_stroke,
)
from shared.preprocess import _centre_region, estimate_line_width, fill_outline


def _column_runs(binary: np.ndarray) -> np.ndarray:
    """Number of separate ink runs in each column of ``binary`` (0/1 array)."""
    b = binary.astype(np.int8)
    return (np.diff(b, axis=0, prepend=0) == 1).sum(axis=0)


def outline_features(ink: np.ndarray) -> dict[str, float]:
    """The reference of :func:`shared.card_check.outline_features` (same returns)."""
    binary = ink_binary(np.asarray(ink, np.uint8))
    height, width = binary.shape
    total = max(1, cv2.countNonZero(binary))
    bridged = cv2.dilate(binary, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bridged, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    pieces = int((areas >= max(5, 0.005 * areas.sum())).sum()) if len(areas) else 0
    main = int(np.argmax(areas)) + 1 if len(areas) else 0
    main_share = float(cv2.countNonZero(binary & (labels == main).astype(np.uint8) * 255) / total) if main else 0.0

    background = cv2.bitwise_not(bridged)
    nb, blabels, bstats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    touches = np.zeros(nb, bool)
    for edge in (blabels[0, :], blabels[-1, :], blabels[:, 0], blabels[:, -1]):
        touches[np.unique(edge)] = True
    hole_areas = np.array([bstats[i, cv2.CC_STAT_AREA] for i in range(1, nb) if not touches[i]], np.float64)
    hole_areas = hole_areas[hole_areas >= 0.0005 * height * width]

    x, y, w, h = cv2.boundingRect(binary)
    box = binary[y:y + h, x:x + w] > 0
    runs = _column_runs(box)
    filled = fill_outline(ink)[y:y + h, x:x + w] > 0
    cols = filled.any(axis=0)
    rows = np.arange(h, dtype=np.float64)[:, None]
    top = np.where(filled, rows, np.inf).min(axis=0)[cols]
    bottom = np.where(filled, rows, -np.inf).max(axis=0)[cols]
    inner = slice(int(0.03 * len(top)), max(int(0.97 * len(top)), 1))
    jumps = 0
    for edge in (top[inner], bottom[inner]):
        step = np.abs(edge[JUMP_SPAN:] - edge[:-JUMP_SPAN]) > JUMP_SHARE * h if len(edge) > JUMP_SPAN else np.zeros(0, bool)
        jumps += int(np.count_nonzero(np.diff(step.astype(np.int8)) == 1) + (step[:1].sum() if len(step) else 0))
    return {
        "components": float(pieces),
        "main_share": main_share,
        "holes": float(len(hole_areas)),
        "main_hole_share": float(hole_areas.max() / hole_areas.sum()) if len(hole_areas) else 0.0,
        "enclosed_share": float(hole_areas.sum() / max(1, w * h)),
        "width_share": w / width,
        "height_share": h / height,
        "multi_run_columns": float(np.mean(runs >= 3)),
        "empty_columns": float(np.mean(runs == 0)),
        "single_run_columns": float(np.mean(runs == 1)),
        "ink_density": total / max(1, w * h),
        "envelope_jumps": float(jumps),
        "line_width": float(estimate_line_width(binary)),
    }


def _on_grid(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    return np.interp(GRID, x[order], f[order])


def _step_centre(load: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    csum = np.concatenate([[0.0], np.cumsum(load)])
    half = int(round(STEP_WINDOW / 2 * (len(GRID) - 1)))
    idx = np.arange(len(GRID))
    a0, a1 = idx, np.minimum(idx + half, len(GRID) - 1) + 1
    b0, b1 = np.maximum(idx - half, 0), idx + 1
    rise = (csum[a1] - csum[a0]) / (a1 - a0) - (csum[b1] - csum[b0]) / (b1 - b0)
    inside = (GRID >= lo) & (GRID <= hi)
    k = int(np.flatnonzero(inside)[np.argmax(rise[inside])])
    return float(GRID[k]), float(rise[k])


def fillage_from_strokes(up_x, up_f, down_x, down_f) -> float | None:
    """The reference of :func:`shared.measures.fillage_from_strokes`."""
    up, down = _on_grid(up_x, up_f), _on_grid(down_x, down_f)
    down = np.maximum(down, np.percentile(down, FLOOR_PERCENTILE))
    span = float(max(up.max(), down.max()) - min(up.min(), down.min()))
    drop, height = _step_centre(down, 0.0, 1.0)
    if span <= 0 or height < MIN_STEP_SHARE * span:
        return None
    rise, _ = _step_centre(up, 0.0, 0.5)
    stretch = float(np.clip(2.0 * rise, 0.0, MAX_STRETCH_SHARE))
    return float(np.clip((drop - 0.5 * stretch) / (1.0 - stretch), 0.0, 1.0))


def measure_series(position, load) -> CardMeasures:
    """The reference of :func:`shared.measures.measure_series`."""
    position, load = checked_card_arrays(position, load)
    x, f = orient_stroke(position, load)
    stroke = float(np.ptp(x))
    peak, low = float(f.max()), float(f.min())
    work = work_per_stroke(x, f)
    rel = (x - x.min()) / stroke
    top = int(np.argmax(rel))
    fillage = fillage_from_strokes(rel[: top + 1], f[: top + 1], np.append(rel[top:], rel[0]), np.append(f[top:], f[0]))
    return CardMeasures(basis="series", fillage=fillage, peak_load=peak, min_load=low, load_range=peak - low,
                        stroke=stroke, area=work, fullness=work / (stroke * (peak - low)),
                        load_unit="kN", stroke_unit="m", area_unit="kJ")


def _chains(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cols = np.flatnonzero(centre.any(axis=0))
    region = centre[:, cols] > 0
    rows = np.arange(centre.shape[0], dtype=np.float64)[:, None]
    top = np.where(region, rows, np.inf).min(axis=0)
    bottom = np.where(region, rows, -np.inf).max(axis=0)
    return cols.astype(np.float64), top, bottom


def measure_outline(ink: np.ndarray) -> CardMeasures:
    """The reference of :func:`shared.measures.measure_outline` (same returns and errors)."""
    binary = ink_binary(np.asarray(ink, np.uint8))
    if not binary.any():
        raise ValueError("the outline mask holds no ink")
    height, width = binary.shape
    x0, y0, w, h = cv2.boundingRect(binary)
    inside = np.zeros_like(binary)
    inside[y0 : y0 + h, x0 : x0 + w] = 255
    centre = _centre_region(fill_outline(ink) & inside, estimate_line_width(binary))
    cols, top, bottom = _chains(centre)
    up_f = (height - 1 - top) / (height - 1)
    down_f = (height - 1 - bottom) / (height - 1)
    x = cols / (width - 1)
    stroke = float(x.max() - x.min())
    peak, low = float(up_f.max()), float(down_f.min())
    area = float(cv2.countNonZero(centre)) / (height * width)
    span_area = stroke * (peak - low)
    fillage = None
    if stroke > 0 and peak > low:
        rel = (x - x.min()) / stroke
        fillage = fillage_from_strokes(rel, up_f, rel[::-1], down_f[::-1])
    return CardMeasures(basis="outline", fillage=fillage, peak_load=peak, min_load=low, load_range=peak - low,
                        stroke=stroke, area=area, fullness=area / span_area if span_area > 0 else 0.0,
                        load_unit="fraction of image height", stroke_unit="fraction of image width",
                        area_unit="fraction of image area")
