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

from shared.cards import checked_card_arrays
from shared.preprocess import TracedOutline, trace_outline

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


_BRIDGE = np.ones((3, 3), np.uint8)  # dilation that bridges 1-px gaps in the line
# Marks the flood fills leave in the work image of _pieces_and_holes (the bridged line is 255, the rest 0).
_OUTSIDE, _MAIN_PIECE, _HOLE = 128, 64, 32
_MAX_HOLE_FILLS = 32  # enclosed regions filled one by one; more are labelled (a card has at most a dozen)


def _pieces_and_holes(binary: np.ndarray, box: tuple[int, int, int, int], ink: int) -> tuple[int, float, np.ndarray]:
    """The line's pieces and the regions it encloses, by flood fills where a card needs no label image.

    The line is bridged (1-px gaps closed by a 3 x 3 dilation). Its pieces are its 8-connected parts;
    the enclosed regions are the 4-connected parts of the background that do not touch the image's edge.
    Both are found on the ink's box grown by 2 px (the bridged line and a blank ring around it): a
    background part touches the image's edge exactly when it reaches the ring or the image's edge, so the
    crop changes nothing. On it, with a blank 1-px border, three flood fills answer for a card: the
    background reachable from the border, the piece holding the first ink pixel (all of the line when
    it is one piece), the region holding the first pixel still blank (all of the enclosed area when the
    line encloses one region; a few more fills when it encloses a few). Only pictures with more pieces
    or many regions are labelled.

    Args:
        binary: the outline, 0/255.
        box: the ink's bounding box ``(x, y, w, h)``.
        ink: the number of ink pixels (> 0).

    Returns:
        ``(pieces, main_share, hole_areas)``: the pieces of at least 0.5 % of the bridged line (and 5 px),
        the largest piece's share of the ink, and the areas of the enclosed regions (px, any order).
    """
    height, width = binary.shape
    x, y, w, h = box
    x0, y0, x1, y1 = max(x - 2, 0), max(y - 2, 0), min(x + w + 2, width), min(y + h + 2, height)
    bridged = cv2.dilate(binary[y0:y1, x0:x1], _BRIDGE)
    bridged_area = cv2.countNonZero(bridged)
    work = cv2.copyMakeBorder(bridged, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    outside = cv2.floodFill(work, None, (0, 0), _OUTSIDE, flags=4)[0]
    seed_y, seed_x = divmod(int(np.argmax(work)), work.shape[1])  # the first pixel of the line (255)
    if cv2.floodFill(work, None, (seed_x, seed_y), _MAIN_PIECE, flags=8)[0] == bridged_area:
        # One piece: it holds all the ink (the share is ink / ink, exactly 1).
        pieces, main_share = int(bridged_area >= max(5, 0.005 * bridged_area)), 1.0
    else:
        _, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(binary, _BRIDGE), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        pieces = int((areas >= max(5, 0.005 * areas.sum())).sum())
        main = int(np.argmax(areas)) + 1
        main_share = float(cv2.countNonZero(binary & (labels == main).astype(np.uint8) * 255) / ink)

    # What is still blank is enclosed: fill it region by region, each from its first blank pixel (raster order:
    # no blank pixel is left before the last seed), until all of it is counted.
    enclosed = work.size - outside - bridged_area
    flat, seed, areas = work.reshape(-1), 0, []
    while sum(areas) < enclosed and len(areas) < _MAX_HOLE_FILLS:
        seed += int(np.argmin(flat[seed:]))  # the first blank pixel left (0: every mark is more)
        areas.append(cv2.floodFill(work, None, divmod(seed, work.shape[1])[::-1], _HOLE, flags=4)[0])
    if sum(areas) < enclosed:  # a grid or a checkerboard: label the regions instead
        holes = cv2.bitwise_not(cv2.bitwise_or(bridged, cv2.compare(work[1:-1, 1:-1], _OUTSIDE, cv2.CMP_EQ)))
        _, _, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
        areas = stats[1:, cv2.CC_STAT_AREA]
    return pieces, main_share, np.asarray(areas, np.float64)


def _column_runs(box: np.ndarray) -> np.ndarray:
    """Number of separate ink runs in each column of ``box`` (0/255 ``uint8``): the rows where ink starts."""
    by_column = cv2.copyMakeBorder(cv2.transpose(box), 0, 0, 1, 0, cv2.BORDER_CONSTANT, value=0)  # a blank row 0
    starts = cv2.compare(by_column[:, 1:], by_column[:, :-1], cv2.CMP_GT)
    return cv2.reduce(starts, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255


def _envelope_jumps(filled: np.ndarray) -> int:
    """Sharp jumps of the top and bottom edge of the filled drawing (``filled``: its box, 0/255 ``uint8``).

    A card's upstroke and downstroke are functions of position, so away from the ends of the stroke they
    jump by a large part of the card's height only at a fluid pound, a tag or a plunger leaving the barrel;
    a bar chart's tops jump at every bar. A jump is a change of more than :data:`JUMP_SHARE` of the height
    over :data:`JUMP_SPAN` columns; a run of such columns counts once.
    """
    h = filled.shape[0]
    # Rows are the box's columns, 0/1 viewed as bool: argmax along a contiguous bool row is a byte search.
    by_column = cv2.threshold(cv2.transpose(filled), 0, 1, cv2.THRESH_BINARY)[1]
    first = by_column.view(bool).argmax(axis=1)
    cols = by_column[np.arange(len(first)), first].view(bool)  # (argmax is 0 in an empty column)
    top = first[cols]
    bottom = (h - 1 - cv2.flip(by_column, 1).view(bool).argmax(axis=1))[cols]
    inner = slice(int(0.03 * len(top)), max(int(0.97 * len(top)), 1))
    jumps = 0
    for edge in (top[inner], bottom[inner]):
        if len(edge) <= JUMP_SPAN:
            continue
        step = np.abs(edge[JUMP_SPAN:] - edge[:-JUMP_SPAN]) > JUMP_SHARE * h
        jumps += int(np.count_nonzero(step[1:] > step[:-1]) + step[0])
    return jumps


def outline_features(ink: np.ndarray, traced: TracedOutline | None = None) -> dict[str, float]:
    """The structural measurements of an outline mask that :func:`check_outline` judges.

    Args:
        ink: ``uint8 [H, W]`` outline mask.
        traced: ``shared.preprocess.trace_outline(ink)`` when the caller has it already (the model's
            preprocessing computes it too).

    Returns:
        ``components`` (ink pieces after bridging 1-px gaps, ignoring specks under 0.5 % of the ink),
        ``main_share`` (the largest piece's share of the ink), ``holes`` (enclosed background regions of
        at least 0.05 % of the image), ``main_hole_share`` (the largest hole's share of all enclosed area),
        ``enclosed_share`` (enclosed area over the ink's bounding box), ``width_share``/``height_share`` (the
        ink's bounding box over the image), ``multi_run_columns`` (share of the box's columns crossing the
        line three or more times), ``empty_columns`` (share with no ink), ``single_run_columns``,
        ``ink_density`` (ink over the box), ``envelope_jumps`` (sharp jumps of the filled drawing's top
        and bottom edge) and ``line_width`` (px).

    Raises:
        ValueError: the mask holds no ink (:func:`shared.cards.decode_card_png` never returns one).
    """
    traced = traced if traced is not None else trace_outline(ink)
    binary = traced.binary
    height, width = binary.shape
    ink_px = cv2.countNonZero(binary)
    if ink_px == 0:
        raise ValueError("the outline mask holds no ink")
    x, y, w, h = cv2.boundingRect(binary)
    pieces, main_share, hole_areas = _pieces_and_holes(binary, (x, y, w, h), ink_px)
    hole_areas = hole_areas[hole_areas >= 0.0005 * height * width]
    runs = _column_runs(binary[y:y + h, x:x + w])
    return {
        "components": float(pieces),
        "main_share": main_share,
        "holes": float(len(hole_areas)),
        "main_hole_share": float(hole_areas.max() / hole_areas.sum()) if len(hole_areas) else 0.0,
        "enclosed_share": float(hole_areas.sum() / max(1, w * h)),
        "width_share": w / width,
        "height_share": h / height,
        "multi_run_columns": np.count_nonzero(runs >= 3) / len(runs),  # (np.mean's value: a count over a count)
        "empty_columns": np.count_nonzero(runs == 0) / len(runs),
        "single_run_columns": np.count_nonzero(runs == 1) / len(runs),
        "ink_density": ink_px / max(1, w * h),
        "envelope_jumps": float(_envelope_jumps(traced.filled[y:y + h, x:x + w])),
        "line_width": float(traced.line_width),
    }


def check_outline(ink: np.ndarray, traced: TracedOutline | None = None) -> CardCheck:
    """Judge whether an outline mask looks like one dynamometer card.

    Args:
        ink: ``uint8 [H, W]`` outline mask (:func:`shared.cards.decode_card_png`).
        traced: ``shared.preprocess.trace_outline(ink)`` when the caller has it already.

    Returns:
        :class:`CardCheck`; ``reasons`` name every rule broken.

    Raises:
        ValueError: the mask holds no ink.
    """
    f = outline_features(ink, traced)
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
