"""Pictures in the card format that are not dynamometer cards: what a careless user might upload.

``notcard_images(seed)`` draws a deterministic set (24 kinds × 3 variants = 72 images by default) of
400 × 190 PNGs: text, smileys, stars, grids, spirals, scribbles, dot clouds, bar charts, circles,
lines, random walks, sine waves, filled blobs, checkerboards, arrows, polygons, axes with a line chart,
salt-and-pepper noise, a photo-like gradient, a lone tick mark, a QR-like block pattern, a sawtooth,
handwriting-like loops and concentric circles. Most carry the drawing in the alpha channel like a
competition card (black colour channels); every 7th is an opaque RGB image (dark ink on white) and
every 11th a grey one, as screenshots and scans arrive.

A different ``seed`` gives a different set of the same kinds. Seeds in use, kept apart so that no picture
a model is trained on is one it is measured on: training's "other" class (``--other-class``,
:data:`TRAINING_SEEDS`, :mod:`training.other_class`) draws from 100 and up; the tests use 0-9 (``tests/notcards.py``
re-exports this module for them); ``scripts/open_set_study.py`` measures on 2 and 3 and trains its outlier
exposure on 10 and 11.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WIDTH, HEIGHT = 400, 190
_SHIFT = 4  # sub-pixel bits for cv2 drawing
# The not-a-card pictures training's "other" class learns from (training.other_class): disjoint from the
# seeds the tests (0-9) and the open-set study (2, 3 measured; 10, 11 trained) use.
TRAINING_SEEDS = (100, 101)
_WORDS = ("HELLO", "test card", "Q3 report", "pump 7", "OK", "abc123", "DO NOT USE", "well 42-B", "x = y + 1",
          "Monday", "NaN", "figure 2")


@dataclass(frozen=True)
class NotCard:
    """One generated picture: ``kind`` (what it shows), a unique ``name`` and the PNG bytes."""

    name: str
    kind: str
    png: bytes


def _pts(xy: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(xy, np.float64) * (1 << _SHIFT)).astype(np.int32)


def _polyline(img: np.ndarray, xy: np.ndarray, closed: bool, width: int) -> None:
    cv2.polylines(img, [_pts(xy)], closed, 255, thickness=width, lineType=cv2.LINE_AA, shift=_SHIFT)


def _text(img, rng, w):
    for _ in range(int(rng.integers(1, 4))):
        word = _WORDS[int(rng.integers(len(_WORDS)))]
        scale = float(rng.uniform(0.8, 2.2))
        org = (int(rng.integers(5, 120)), int(rng.integers(40, HEIGHT - 10)))
        font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX]))
        cv2.putText(img, word, org, font, scale, 255, max(1, w), cv2.LINE_AA)


def _smiley(img, rng, w):
    r = float(rng.uniform(50, 85))
    c = np.array([rng.uniform(r + 5, WIDTH - r - 5), HEIGHT / 2])
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    _polyline(img, c + r * np.c_[np.cos(t), np.sin(t)], True, w)
    for dx in (-0.35, 0.35):
        cv2.circle(img, tuple(int(v) for v in c + [dx * r, -0.3 * r]), max(3, int(0.08 * r)), 255, -1, cv2.LINE_AA)
    s = np.linspace(0.2 * np.pi, 0.8 * np.pi, 40)
    _polyline(img, c + 0.6 * r * np.c_[np.cos(s), np.sin(s)], False, w)


def _star(img, rng, w):
    points = int(rng.integers(5, 8))
    k = np.arange(2 * points)
    radius = np.where(k % 2 == 0, 1.0, float(rng.uniform(0.35, 0.55)))
    t = np.pi * k / points - np.pi / 2
    sx = float(rng.choice([85.0, 120.0, 185.0]))  # round, wide, stretched to the frame
    xy = np.c_[WIDTH / 2 + sx * radius * np.cos(t), HEIGHT / 2 + 85 * radius * np.sin(t)]
    _polyline(img, xy, True, w)


def _grid(img, rng, w):
    step = int(rng.integers(20, 60))
    for x in range(int(rng.integers(5, 20)), WIDTH, step):
        cv2.line(img, (x, 5), (x, HEIGHT - 5), 255, w, cv2.LINE_AA)
    for y in range(int(rng.integers(5, 20)), HEIGHT, step):
        cv2.line(img, (5, y), (WIDTH - 5, y), 255, w, cv2.LINE_AA)


def _spiral(img, rng, w):
    turns = float(rng.uniform(2.5, 5))
    t = np.linspace(0, turns * 2 * np.pi, 600)
    r = t / t[-1]
    _polyline(img, np.c_[WIDTH / 2 + 185 * r * np.cos(t), HEIGHT / 2 + 88 * r * np.sin(t)], False, w)


def _smooth_path(rng, n: int, spread: float) -> np.ndarray:
    knots = rng.uniform([10, 10], [WIDTH - 10, HEIGHT - 10], size=(int(rng.integers(5, 10)), 2))
    t = np.linspace(0, len(knots) - 1, n)
    xy = np.c_[np.interp(t, np.arange(len(knots)), knots[:, 0]), np.interp(t, np.arange(len(knots)), knots[:, 1])]
    kernel = np.ones(int(spread)) / spread
    return np.c_[np.convolve(xy[:, 0], kernel, "same"), np.convolve(xy[:, 1], kernel, "same")][int(spread):-int(spread)]


def _scribble(img, rng, w):
    for _ in range(int(rng.integers(2, 5))):
        _polyline(img, _smooth_path(rng, 300, 15), False, w)


def _dots(img, rng, w):
    n = int(rng.integers(40, 300))
    centre = rng.uniform([100, 60], [300, 130])
    pts = centre + rng.normal(0, [70, 35], size=(n, 2))
    for x, y in pts:
        cv2.circle(img, (int(x), int(y)), int(rng.integers(1, 4)), 255, -1, cv2.LINE_AA)


def _bars(img, rng, w):
    n = int(rng.integers(4, 10))
    width = (WIDTH - 40) // n
    cv2.line(img, (15, HEIGHT - 10), (WIDTH - 10, HEIGHT - 10), 255, w, cv2.LINE_AA)
    cv2.line(img, (15, 10), (15, HEIGHT - 10), 255, w, cv2.LINE_AA)
    filled = bool(rng.random() < 0.5)
    for i in range(n):
        top = int(rng.integers(20, HEIGHT - 30))
        x0 = 25 + i * width
        cv2.rectangle(img, (x0, top), (x0 + int(0.7 * width), HEIGHT - 11), 255, -1 if filled else w, cv2.LINE_AA)


def _circles(img, rng, w):
    for _ in range(int(rng.integers(1, 5))):
        r = int(rng.integers(15, 90))
        c = (int(rng.integers(r, WIDTH - r)), int(rng.integers(min(r, HEIGHT // 2), max(HEIGHT - r, HEIGHT // 2 + 1))))
        cv2.circle(img, c, r, 255, w, cv2.LINE_AA)


def _lines(img, rng, w):
    for _ in range(int(rng.integers(1, 7))):
        a = rng.uniform([0, 0], [WIDTH, HEIGHT])
        b = rng.uniform([0, 0], [WIDTH, HEIGHT])
        _polyline(img, np.stack([a, b]), False, w)


def _random_walk(img, rng, w):
    steps = rng.normal(0, 1, size=(400, 2)).cumsum(axis=0)
    steps -= steps.min(axis=0)
    steps /= np.maximum(steps.max(axis=0), 1e-9)
    _polyline(img, 10 + steps * [WIDTH - 20, HEIGHT - 20], False, w)


def _sine(img, rng, w):
    x = np.linspace(10, WIDTH - 10, 400)
    cycles = float(rng.uniform(0.5, 4))
    y = HEIGHT / 2 + float(rng.uniform(30, 80)) * np.sin(2 * np.pi * cycles * (x - 10) / (WIDTH - 20) + rng.uniform(0, 6))
    _polyline(img, np.c_[x, y], False, w)


def _blob(img, rng, w):
    for _ in range(int(rng.integers(1, 4))):
        c = (int(rng.integers(60, WIDTH - 60)), int(rng.integers(50, HEIGHT - 50)))
        axes = (int(rng.integers(20, 90)), int(rng.integers(15, 60)))
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)


def _checkerboard(img, rng, w):
    s = int(rng.integers(12, 40))
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    board = (((xx // s) + (yy // s)) % 2 == 0) & (xx > 20) & (xx < WIDTH - 20) & (yy > 10) & (yy < HEIGHT - 10)
    if rng.random() < 0.5:  # just the squares' outlines
        edges = cv2.morphologyEx(board.astype(np.uint8) * 255, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        img[...] = np.maximum(img, edges)
    else:
        img[board] = 255


def _arrow(img, rng, w):
    for _ in range(int(rng.integers(1, 4))):
        a = rng.uniform([20, 20], [WIDTH - 20, HEIGHT - 20])
        b = rng.uniform([20, 20], [WIDTH - 20, HEIGHT - 20])
        cv2.arrowedLine(img, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, w, cv2.LINE_AA, tipLength=0.2)


def _polygon(img, rng, w):
    n = int(rng.choice([3, 4, 6, 8]))
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)
    r = float(rng.uniform(40, 85))
    c = rng.uniform([r + 10, HEIGHT / 2 - 5], [WIDTH - r - 10, HEIGHT / 2 + 5])
    _polyline(img, c + r * np.c_[np.cos(t), np.sin(t)], True, w)


def _line_chart(img, rng, w):
    cv2.line(img, (20, HEIGHT - 15), (WIDTH - 10, HEIGHT - 15), 255, w, cv2.LINE_AA)
    cv2.line(img, (20, 10), (20, HEIGHT - 15), 255, w, cv2.LINE_AA)
    for x in range(40, WIDTH - 10, 40):
        cv2.line(img, (x, HEIGHT - 15), (x, HEIGHT - 10), 255, 1, cv2.LINE_AA)
    values = np.cumsum(rng.normal(0, 1, 30))
    values = (values - values.min()) / max(np.ptp(values), 1e-9)
    _polyline(img, np.c_[np.linspace(25, WIDTH - 15, 30), HEIGHT - 25 - values * (HEIGHT - 45)], False, w)


def _noise(img, rng, w):
    img[rng.random((HEIGHT, WIDTH)) < rng.uniform(0.02, 0.15)] = 255


def _gradient(img, rng, w):
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    angle = rng.uniform(0, np.pi)
    ramp = np.cos(angle) * xx / WIDTH + np.sin(angle) * yy / HEIGHT
    img[...] = np.clip(255 * (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9), 0, 255).astype(np.uint8)


def _tick(img, rng, w):
    x, y = int(rng.integers(30, WIDTH - 30)), int(rng.integers(30, HEIGHT - 30))
    cv2.line(img, (x - 4, y), (x, y + 4), 255, w, cv2.LINE_AA)
    cv2.line(img, (x, y + 4), (x + 7, y - 6), 255, w, cv2.LINE_AA)


def _blocks(img, rng, w):
    s = int(rng.integers(6, 14))
    cells = rng.random((HEIGHT // s, HEIGHT // s)) < 0.45
    x0 = int(rng.integers(10, WIDTH - HEIGHT))
    big = np.kron(cells, np.ones((s, s), bool))
    img[: big.shape[0], x0 : x0 + big.shape[1]][big] = 255


def _sawtooth(img, rng, w):
    x = np.linspace(10, WIDTH - 10, 800)
    period = float(rng.uniform(30, 120))
    y = HEIGHT - 30 - ((x / period) % 1.0) * float(rng.uniform(60, 140))
    _polyline(img, np.c_[x, y], False, w)


def _loops(img, rng, w):
    t = np.linspace(0, 1, 600)
    n = float(rng.uniform(4, 9))
    x = 20 + (WIDTH - 60) * t + 18 * np.cos(2 * np.pi * n * t)
    y = HEIGHT / 2 + 35 * np.sin(2 * np.pi * n * t) + 20 * np.sin(2 * np.pi * t * rng.uniform(0.5, 2))
    _polyline(img, np.c_[x, y], False, w)


def _rings(img, rng, w):
    c = (int(rng.integers(100, WIDTH - 100)), HEIGHT // 2)
    for r in range(int(rng.integers(8, 15)), 92, int(rng.integers(10, 20))):
        cv2.circle(img, c, r, 255, w, cv2.LINE_AA)


KINDS = {
    "text": _text, "smiley": _smiley, "star": _star, "grid": _grid, "spiral": _spiral, "scribble": _scribble,
    "dot-cloud": _dots, "bar-chart": _bars, "circles": _circles, "lines": _lines, "random-walk": _random_walk,
    "sine-wave": _sine, "filled-blobs": _blob, "checkerboard": _checkerboard, "arrows": _arrow,
    "polygon": _polygon, "line-chart": _line_chart, "noise": _noise, "gradient": _gradient, "tick-mark": _tick,
    "block-pattern": _blocks, "sawtooth": _sawtooth, "handwriting-loops": _loops, "concentric-rings": _rings,
}


def _encode(ink: np.ndarray, layout: str) -> bytes:
    """PNG bytes of an ink mask: ``rgba`` (ink in alpha, black colours), ``rgb`` or ``grey`` (dark ink on white)."""
    if layout == "rgba":
        img = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
        img[:, :, 3] = ink
    elif layout == "rgb":
        img = np.repeat((255 - ink)[:, :, None], 3, axis=2)
        img[:, :, 0] = np.minimum(img[:, :, 0], 255 - ink // 3)  # a tint, as a screenshot would have
    else:
        img = 255 - ink
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - cv2 only fails on an impossible image
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def notcard_images(seed: int = 0, variants: int = 3) -> list[NotCard]:
    """Draw ``len(KINDS) * variants`` not-a-card pictures; the same arguments give the same bytes.

    Args:
        seed: selects the random set (sizes, positions, words, line widths).
        variants: pictures per kind.

    Returns:
        :class:`NotCard` list, kinds in :data:`KINDS` order.
    """
    out = []
    for k, (kind, draw) in enumerate(KINDS.items()):
        for v in range(variants):
            rng = np.random.default_rng(np.random.SeedSequence((seed, k, v)))
            ink = np.zeros((HEIGHT, WIDTH), np.uint8)
            draw(ink, rng, int(rng.integers(1, 5)))
            index = len(out)
            layout = "rgb" if index % 7 == 3 else "grey" if index % 11 == 5 else "rgba"
            out.append(NotCard(f"{kind}-{seed}-{v}", kind, _encode(ink, layout)))
    return out
