"""Gallery of simulated cards: one row per condition, several cards each (surface solid, pump dashed).

    python -m training.simulator.gallery --out docs/cards.png [--per-row 5] [--seed 0]

Drawn with OpenCV/numpy only. Each cell is scaled to its own card (like a field display), the pump
card on the same load axis, placed under the surface card's position range.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from shared.labels import CONDITIONS

from .api import card_rng, make_spec, run_specs

log = logging.getLogger(__name__)

CELL_W, CELL_H, LABEL_W, HEADER_H = 230, 150, 150, 28
SURFACE = (160, 60, 20)  # BGR dark blue
PUMP = (40, 40, 200)  # BGR red


def _dashed(img: np.ndarray, pts: np.ndarray, color, dash: int = 6) -> None:
    """Polyline with every other short segment left out."""
    acc, on = 0.0, True
    for a, b in zip(pts[:-1], pts[1:]):
        seg = float(np.hypot(*(b - a)))
        if on:
            cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), color, 1, cv2.LINE_AA)
        acc += seg
        if acc >= dash:
            acc, on = 0.0, not on


def draw_cell(img: np.ndarray, x0: int, y0: int, w: int, h: int, position, load, pump_position=None,
              pump_load=None, caption: str = "") -> None:
    """Draw one card (and optionally its pump card, dashed) into the box at (x0, y0)."""
    cv2.rectangle(img, (x0 + 2, y0 + 2), (x0 + w - 2, y0 + h - 2), (225, 225, 225), 1)
    m = 12
    xs = [np.asarray(position)]
    ys = [np.asarray(load)]
    if pump_load is not None:
        xs.append(np.asarray(pump_position))
        ys.append(np.asarray(pump_load))
    xmin, xmax = min(a.min() for a in xs), max(a.max() for a in xs)
    ymin, ymax = min(min(a.min() for a in ys), 0.0), max(a.max() for a in ys)
    sx = (w - 2 * m) / max(xmax - xmin, 1e-6)
    sy = (h - 2 * m - 12) / max(ymax - ymin, 1e-6)

    def to_px(px, py):
        return np.stack([x0 + m + (px - xmin) * sx, y0 + h - m - (py - ymin) * sy], axis=1)

    zero = int(y0 + h - m - (0.0 - ymin) * sy)
    cv2.line(img, (x0 + m, zero), (x0 + w - m, zero), (200, 200, 200), 1)
    if pump_load is not None:
        pts = to_px(np.asarray(pump_position), np.asarray(pump_load))
        _dashed(img, np.vstack([pts, pts[:1]]), PUMP)
    pts = to_px(np.asarray(position), np.asarray(load)).astype(np.int32)
    cv2.polylines(img, [pts.reshape(-1, 1, 2)], True, SURFACE, 1, cv2.LINE_AA)
    if caption:
        cv2.putText(img, caption, (x0 + m, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.34, (90, 90, 90), 1, cv2.LINE_AA)


def render_gallery(per_row: int = 5, seed: int = 0) -> np.ndarray:
    """Simulate ``per_row`` cards per condition (severities spread borderline → severe) and draw them."""
    specs = []
    for cond in CONDITIONS:
        for j in range(per_row):
            sev = (j + 0.5) / per_row
            specs.append(make_spec(cond.code, card_rng(seed, cond.code, j), severity=sev))
    cards = run_specs(specs)
    rows = len(CONDITIONS)
    img = np.full((HEADER_H + rows * CELL_H, LABEL_W + per_row * CELL_W, 3), 255, np.uint8)
    cv2.putText(img, "CardSense simulator: surface card (solid blue), pump card (dashed red); kN vs m; "
                "severity grows to the right", (8, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for r, cond in enumerate(CONDITIONS):
        y0 = HEADER_H + r * CELL_H
        cv2.putText(img, cond.code, (8, y0 + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
        words, line = cond.name_en.split(), ""
        yy = y0 + 62
        for word in words:  # wrap the English name
            if len(line) + len(word) > 17:
                cv2.putText(img, line, (8, yy), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
                yy, line = yy + 16, ""
            line = f"{line} {word}".strip()
        cv2.putText(img, line, (8, yy), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
        for j in range(per_row):
            c = cards[r * per_row + j]
            p = c.params
            cap = f"{p.depth_m:.0f}m {p.stroke_m:.1f}m {p.spm:.1f}/min {c.load_kN.min():.0f}-{c.load_kN.max():.0f}kN"
            draw_cell(img, LABEL_W + j * CELL_W, y0, CELL_W, CELL_H, c.position_m, c.load_kN,
                      c.pump_position_m, c.pump_load_kN, cap)
    return img


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: write the gallery PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/cards.png"))
    ap.add_argument("--per-row", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    img = render_gallery(args.per_row, args.seed)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        print("error: PNG encoding failed", file=sys.stderr)
        return 1
    from shared.atomic import atomic_write_bytes
    atomic_write_bytes(args.out, buf.tobytes())
    log.info("wrote %s (%d×%d)", args.out, img.shape[1], img.shape[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
