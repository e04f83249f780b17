"""Is this a dynamometer card at all? A structural check of an outline picture or of a series.

A card is one closed loop drawn over one stroke: the polished rod goes up once and comes down once, so
in a picture every column of the card crosses the line at most twice (once on the upstroke, once on the
downstroke), the line is one connected piece enclosing one region (a few where a ripple or a tag makes
the halves cross), and the renderer stretches it over the image (400 × 190 in the competition format).
Text, smileys, grids, spirals, scribbles, dot clouds and bar charts break one or more of these; an open
curve encloses nothing; a filled blob is all ink and no line.

:func:`check_outline` (ink mask from :func:`shared.cards.decode_card_png`) and :func:`check_series`
(position, load samples) return a :class:`CardCheck`: ``score`` in [0, 1] (1 = every rule holds),
``ok`` (score at least :data:`PASS_SCORE`), the ``reasons`` a person can read, and the measured
``features``. Each broken rule costs its weight; a rule that no real card breaks (measured: 709 + 491
field cards rendered at margins 2–24 px and line widths 1–7 px, and simulated cards of all twelve
classes; ``tests/test_card_check.py``) costs 1. The check is a first gate before the model's own
open-set score, which has to catch card-like shapes that are not cards (a lone circle stretched to the
frame, a convex polygon): those pass here by design.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from shared.cards import checked_card_arrays, ink_binary
from shared.preprocess import estimate_line_width, fill_outline

PASS_SCORE = 0.5
JUMP_SPAN = 3  # columns over which an envelope jump is measured
JUMP_SHARE = 0.25  # an envelope jump is at least this share of the drawing's height
# Limits no real card reached (1,200 field cards at margins 2-24 px and line widths 1-7 px, 480 simulated):
MIN_JUMPS = 5  # envelope jumps: field cards at most 3
MAX_MULTI_RUN = 0.1  # columns crossing the line 3+ times: field cards' 99th percentile 0.016 (garbled recordings aside)
MAX_HOLES = 15  # enclosed regions: field cards at most 12 (a flat card whose halves interleave, 1-px line)


@dataclass(frozen=True)
class CardCheck:
    """Outcome of a structural check: ``ok``, a ``score`` in [0, 1], readable ``reasons``, measured ``features``."""

    ok: bool
    score: float
    reasons: tuple[str, ...]
    features: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"ok": self.ok, "score": round(self.score, 4), "reasons": list(self.reasons),
                "features": {k: round(float(v), 4) for k, v in self.features.items()}}


def _verdict(broken: list[tuple[float, str]], features: dict[str, float]) -> CardCheck:
    score = float(max(0.0, 1.0 - sum(weight for weight, _ in broken)))
    return CardCheck(ok=score >= PASS_SCORE, score=score, reasons=tuple(reason for _, reason in broken),
                     features=features)


# --------------------------------------------------------------------------------------------
# Outline (PNG)
# --------------------------------------------------------------------------------------------


def _column_runs(binary: np.ndarray) -> np.ndarray:
    """Number of separate ink runs in each column of ``binary`` (0/1 array)."""
    b = binary.astype(np.int8)
    starts = (np.diff(b, axis=0, prepend=0) == 1).sum(axis=0)
    return starts


def outline_features(ink: np.ndarray) -> dict[str, float]:
    """The structural measurements of an outline mask that :func:`check_outline` judges.

    Returns:
        ``components`` (ink pieces after bridging 1-px gaps, ignoring specks under 0.5 % of the ink),
        ``main_share`` (the largest piece's share of the ink), ``holes`` (enclosed background regions of
        at least 0.05 % of the image), ``main_hole_share`` (the largest hole's share of all enclosed area),
        ``enclosed_share`` (enclosed area over the ink's bounding box), ``width_share``/``height_share`` (the
        ink's bounding box over the image), ``multi_run_columns`` (share of the box's columns crossing the
        line three or more times), ``empty_columns`` (share with no ink), ``single_run_columns``,
        ``ink_density`` (ink over the box) and ``line_width`` (px).
    """
    binary = ink_binary(np.asarray(ink, np.uint8))
    height, width = binary.shape
    total = max(1, cv2.countNonZero(binary))
    bridged = cv2.dilate(binary, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bridged, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    pieces = int((areas >= max(5, 0.005 * areas.sum())).sum()) if len(areas) else 0
    main = int(np.argmax(areas)) + 1 if len(areas) else 0
    main_share = float(cv2.countNonZero(binary & (labels == main).astype(np.uint8) * 255) / total) if main else 0.0

    # Enclosed background: components of the complement that do not touch the border.
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
    # Envelopes of the filled drawing: a card's upstroke and downstroke are functions of position, so
    # away from the ends of the stroke they jump by a large part of the card's height only at a fluid
    # pound, a tag or a plunger leaving the barrel; a bar chart's tops jump at every bar.
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


def check_outline(ink: np.ndarray) -> CardCheck:
    """Judge whether an outline mask looks like one dynamometer card.

    Args:
        ink: ``uint8 [H, W]`` outline mask (:func:`shared.cards.decode_card_png`).

    Returns:
        :class:`CardCheck`; ``reasons`` name every rule broken.
    """
    f = outline_features(ink)
    broken: list[tuple[float, str]] = []
    if f["components"] > 2 or f["main_share"] < 0.9:
        broken.append((1.0, f"the drawing is {int(f['components'])} separate pieces; a card is one line"))
    if f["holes"] == 0:
        broken.append((1.0, "the line encloses nothing; a card is a closed loop"))
    if f["holes"] > MAX_HOLES:
        broken.append((1.0, f"the line encloses {int(f['holes'])} regions; a card one (a few where its halves cross)"))
    elif f["holes"] > 1 and f["main_hole_share"] < 0.5:
        # Soft: an upstroke and a downstroke that interleave (a flat, rippling card) enclose many small lenses too.
        broken.append((0.4, f"the line encloses {int(f['holes'])} regions and none is most of the card"))
    if f["multi_run_columns"] > MAX_MULTI_RUN:
        broken.append((1.0, f"{f['multi_run_columns']:.0%} of the columns cross the line three times or more; "
                            "a card's upstroke and downstroke cross each column once each"))
    if f["envelope_jumps"] >= MIN_JUMPS:
        broken.append((1.0, f"the drawing's outline jumps up or down {int(f['envelope_jumps'])} times across the "
                            "stroke; a card's load changes sharply only a few times"))
    if f["empty_columns"] > 0.05:
        broken.append((1.0, "the drawing has gaps across the stroke; a card's line is continuous"))
    if f["ink_density"] > 0.45 or f["line_width"] > 14:
        broken.append((1.0, "the picture is filled areas, not a line"))
    if f["width_share"] < 0.5 or f["height_share"] < 0.3:
        broken.append((0.6, f"the drawing covers {f['width_share']:.0%} x {f['height_share']:.0%} of the image; "
                            "a card is drawn across it"))
    return _verdict(broken, f)


# --------------------------------------------------------------------------------------------
# Series (CSV)
# --------------------------------------------------------------------------------------------


def _reversals(position: np.ndarray, hysteresis: float) -> int:
    """Direction changes of the position over the closed stroke, ignoring wiggles under ``hysteresis``."""
    x = np.append(position, position[0])
    direction, anchor, count = 0, x[0], 0
    for value in x[1:]:
        if direction >= 0 and value < anchor - hysteresis:
            count += direction > 0
            direction, anchor = -1, value
        elif direction <= 0 and value > anchor + hysteresis:
            count += direction < 0
            direction, anchor = 1, value
        elif (direction > 0 and value > anchor) or (direction < 0 and value < anchor):
            anchor = value
    return count + 1 if count % 2 else count


def series_features(position, load) -> dict[str, float]:
    """The structural measurements of a stroke's samples that :func:`check_series` judges.

    Raises:
        shared.cards.CardError: too few points, NaN/inf, different lengths or no extent.
    """
    position, load = checked_card_arrays(position, load)
    span, load_span = float(np.ptp(position)), float(np.ptp(load))
    return {
        "points": float(position.size),
        "reversals": float(_reversals(position, 0.05 * span)),
        "gap_end_position": float(abs(position[-1] - position[0]) / span),
        "largest_step_position": float(np.abs(np.diff(position)).max() / span),
        "largest_step_load": float(np.abs(np.diff(load)).max() / load_span),
        "stroke": span,
        "peak_load": float(load.max()),
        "min_load": float(load.min()),
    }


def check_series(position, load) -> CardCheck:
    """Judge whether a series of samples looks like one stroke of a dynamometer card.

    Args:
        position: polished-rod position samples (m).
        load: load samples (kN), same length.

    Returns:
        :class:`CardCheck`; ``reasons`` name every rule broken.

    Raises:
        shared.cards.CardError: too few points, NaN/inf, different lengths or no extent.
    """
    f = series_features(position, load)
    broken: list[tuple[float, str]] = []
    if f["reversals"] != 2:
        broken.append((1.0, f"the position turns {int(f['reversals'])} times; one stroke goes up once and down once"))
    if f["gap_end_position"] > 0.25:  # (the load may jump there: the loading line of a full pump is vertical)
        broken.append((0.6, "the stroke does not close: it ends far from where it starts"))
    if f["largest_step_position"] > 0.3:
        broken.append((0.6, f"the position jumps {f['largest_step_position']:.0%} of the stroke between two samples"))
    if f["min_load"] < -0.2 * max(abs(f["peak_load"]), 1e-9):
        broken.append((0.6, "the load goes far below zero: a polished rod hangs in tension"))
    return _verdict(broken, f)
