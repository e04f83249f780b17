"""Card I/O: decode card PNGs, read raw-data CSVs, render a card in the competition PNG format.

Every input that is not a usable card raises :class:`CardError` with a message a person understands;
callers map it to an HTTP 422, a skipped batch row or a one-line CLI error.

CLI::

    python -m shared.cards render CARD.csv --out CARD.png [--margin 10] [--line-width 2]
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shared.atomic import atomic_write_bytes, atomic_write_text
from shared.png_decode import PngHeader, decode_alpha8, decode_rgba8

log = logging.getLogger(__name__)

# The competition format: 400 x 190 (W x H) RGBA, outline in the alpha channel.
CARD_WIDTH = 400
CARD_HEIGHT = 190

# Limits checked from the PNG header, before any pixel is decoded (decompression bombs).
MAX_PNG_BYTES = 20 * 1024 * 1024
MAX_PNG_SIDE = 8192
MAX_PNG_PIXELS = 16_000_000
MIN_PNG_SIDE = 16

# Limits for raw-data CSVs.
MAX_CSV_BYTES = 8 * 1024 * 1024
MAX_CSV_POINTS = 100_000
MIN_CARD_POINTS = 20

# An "ink" pixel is one at least this strong (0..255) in the outline mask.
INK_THRESHOLD = 64
MIN_INK_PIXELS = 20
MIN_CURVE_EXTENT_PX = 8

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
POSITION_HEADER = "位移(m)"
LOAD_HEADER = "载荷(kN)"

# Header words (lower case) that identify the position and load columns of a raw-data CSV.
_POSITION_WORDS = ("位移", "displacement", "position", "disp", "stroke", "pos")
_LOAD_WORDS = ("载荷", "负荷", "load", "force", "kn")


class CardError(ValueError):
    """The input is not a usable dynamometer card (bad file, no curve, out of limits)."""


@dataclass(frozen=True)
class Card:
    """One stroke of a surface card: polished-rod position (m) and load (kN), same length."""

    position: np.ndarray
    load: np.ndarray
    strokes_in_file: int = 1

    def __len__(self) -> int:
        return len(self.position)


# --------------------------------------------------------------------------------------------
# PNG decoding
# --------------------------------------------------------------------------------------------


def _read_source(source: bytes | bytearray | memoryview | str | os.PathLike, limit: int, what: str) -> bytes:
    """Return the bytes of ``source`` (bytes or a file path), refusing more than ``limit`` bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise CardError(f"cannot read {what} file {path.name}: {exc.strerror or exc}") from exc
        if size > limit:
            raise CardError(f"{what} file is {size:,} bytes; the limit is {limit:,}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CardError(f"cannot read {what} file {path.name}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise CardError(f"{what} is {len(data):,} bytes; the limit is {limit:,}")
    if not data:
        raise CardError(f"{what} is empty")
    return data


def read_png_header(data: bytes) -> PngHeader:
    """Parse and check the PNG signature and IHDR chunk without decoding any pixels.

    Raises:
        CardError: not a PNG, a damaged header, or dimensions over the limits.
    """
    if not data.startswith(PNG_SIGNATURE):
        kind = _sniff_kind(data)
        raise CardError(f"not a PNG image{f' (looks like {kind})' if kind else ''}")
    if len(data) < 33:
        raise CardError("truncated PNG: the header is incomplete")
    length, chunk_type = struct.unpack(">I4s", data[8:16])
    if chunk_type != b"IHDR" or length != 13:
        raise CardError("damaged PNG: the first chunk is not a valid IHDR header")
    ihdr = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(data[12:29]) & 0xFFFFFFFF != crc:
        raise CardError("damaged PNG: the header checksum (CRC) does not match")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", ihdr[:10])
    if width == 0 or height == 0:
        raise CardError("PNG has zero width or height")
    if width > MAX_PNG_SIDE or height > MAX_PNG_SIDE or width * height > MAX_PNG_PIXELS:
        raise CardError(
            f"PNG is {width} x {height} pixels; the limit is {MAX_PNG_SIDE} per side and "
            f"{MAX_PNG_PIXELS:,} pixels in all"
        )
    if width < MIN_PNG_SIDE or height < MIN_PNG_SIDE:
        raise CardError(f"PNG is {width} x {height} pixels, too small to hold a card")
    return PngHeader(width, height, bit_depth, color_type)


def _sniff_kind(data: bytes) -> str:
    """Name a few common non-PNG formats so the error message can say what was sent."""
    signatures = {
        b"\xff\xd8\xff": "a JPEG image",
        b"GIF8": "a GIF image",
        b"BM": "a BMP image",
        b"PK\x03\x04": "a zip archive",
        b"%PDF": "a PDF document",
        b"RIFF": "a RIFF/WebP file",
    }
    for magic, name in signatures.items():
        if data.startswith(magic):
            return name
    head = data[:512]
    if head and b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            pass
    return ""


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Scale a 16-bit image to 8 bits; leave 8-bit images as they are."""
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise CardError(f"unsupported PNG sample type {img.dtype}")
    return img


def alpha_outline(alpha: np.ndarray) -> np.ndarray | None:
    """The outline mask when an image's alpha plane holds it, as in the competition PNGs; else ``None``.

    The alpha holds the outline when it varies and less than half of it is ink; an alpha that is the same
    everywhere, or mostly opaque (a background plate), says nothing about the line, which is then in the
    colours (``None``: :func:`ink_from_image` reads them).

    Raises:
        CardError: the image is fully transparent.
    """
    low, high = cv2.minMaxLoc(alpha)[:2]
    if high == 0:
        raise CardError("image is fully transparent: there is no card outline in it")
    if low != high and cv2.countNonZero(ink_binary(alpha)) / alpha.size < 0.5:
        return np.ascontiguousarray(alpha)
    return None


def ink_from_image(img: np.ndarray) -> np.ndarray:
    """Extract the outline ("ink") mask from a decoded image, 0 = background, 255 = line.

    The competition PNGs carry the outline in the alpha channel and nothing in the colours. Images
    without a useful alpha channel (RGB, grey, palette, or RGBA that is opaque everywhere) are read
    as dark ink on a light background, or light ink on a dark one.
    """
    img = _to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        raise CardError(f"unsupported PNG layout with shape {img.shape}")
    alpha = img[:, :, 3] if img.ndim == 3 and img.shape[2] == 4 else None

    def grey() -> np.ndarray:
        return img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_BGR2GRAY)

    if alpha is not None:
        ink = alpha_outline(alpha)
        if ink is not None:
            return ink
        low, high = cv2.minMaxLoc(alpha)[:2]
        if low != high:
            # Mostly opaque: the alpha holds a background plate, the line is in the colours.
            darkness = 255 - grey().astype(np.int32)
            return (darkness * alpha.astype(np.int32) // 255).astype(np.uint8)
    gray = grey()
    if float(np.median(gray)) < 128:
        return np.ascontiguousarray(gray)  # light ink on a dark background
    return (255 - gray).astype(np.uint8)


def ink_binary(ink: np.ndarray) -> np.ndarray:
    """The outline as a 0/255 ``uint8`` mask: pixels at least :data:`INK_THRESHOLD` strong."""
    return cv2.threshold(ink, INK_THRESHOLD - 1, 255, cv2.THRESH_BINARY)[1]


def check_ink(ink: np.ndarray) -> None:
    """Refuse masks that hold no curve: blank, a dot, or mostly ink.

    Raises:
        CardError: with the reason.
    """
    strong = ink_binary(ink)
    count = cv2.countNonZero(strong)
    if count < MIN_INK_PIXELS:
        raise CardError("image has no card outline in it (blank or nearly blank)")
    if count > 0.6 * ink.size:
        raise CardError("image is mostly ink: it is not a card outline")
    _, _, width, height = cv2.boundingRect(strong)
    if width <= MIN_CURVE_EXTENT_PX and height <= MIN_CURVE_EXTENT_PX:
        raise CardError("image holds only a dot, not a card outline")


def decode_card_png(source: bytes | str | os.PathLike) -> np.ndarray:
    """Decode a card PNG explicitly as RGBA and return its outline mask.

    Args:
        source: PNG bytes or a path to a PNG file.

    Returns:
        ``uint8`` array ``[H, W]`` at the image's own size: 0 background, up to 255 on the line
        (anti-aliased edges below 255), taken from the alpha channel when there is one.

    Raises:
        CardError: empty, not a PNG, damaged or truncated, over the size limits, or no curve in it.
    """
    data = _read_source(source, MAX_PNG_BYTES, "PNG")
    header = read_png_header(data)
    # The card format (8-bit RGBA, outline in the alpha): decode the alpha plane alone. The same ink as
    # the whole image would give, bit for bit; anything else is decoded whole below.
    alpha = decode_alpha8(data, header)
    ink = alpha_outline(alpha) if alpha is not None else None
    if ink is None:
        img = decode_rgba8(data, header)  # other RGBA cards, fast; None for anything else
        if img is None:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise CardError("damaged or truncated PNG: the image data cannot be decoded")
        ink = ink_from_image(img)
    check_ink(ink)
    return ink


# --------------------------------------------------------------------------------------------
# CSV reading
# --------------------------------------------------------------------------------------------


def _decode_text(data: bytes) -> str:
    if b"\x00" in data[:4096]:
        raise CardError("file is binary data, not a CSV text file")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CardError("CSV is neither UTF-8 nor GBK text")


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell.strip())
    except ValueError:
        return None


def _find_column(header: list[str], words: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for word in words:
        for i, h in enumerate(lowered):
            if word in h:
                return i
    return None


def _split_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise CardError("CSV is empty")
    if len(lines) > MAX_CSV_POINTS + 1:
        raise CardError(f"CSV has {len(lines):,} rows; the limit is {MAX_CSV_POINTS:,} points")
    first = lines[0]
    delimiter = next((d for d in (",", "\t", ";") if d in first), None)
    if delimiter is None:
        return [line.split() for line in lines]
    return [row for row in csv.reader(lines, delimiter=delimiter)]


def parse_card_csv_text(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse CSV text into (position, load) arrays, all rows, strokes not yet split.

    Accepts a ``位移(m)``/``载荷(kN)`` header (also ``kn``/``KN``, English ``displacement``/``position``
    and ``load``) or a header-less file of two numeric columns (an extra leading index column is dropped).

    Raises:
        CardError: missing columns, non-numeric cells, NaN/inf, or too few points.
    """
    rows = _split_rows(text)
    header = rows[0]
    has_header = any(_parse_float(cell) is None for cell in header if cell.strip())
    if has_header:
        body = rows[1:]
        pos_col = _find_column(header, _POSITION_WORDS)
        load_col = _find_column(header, _LOAD_WORDS)
        if pos_col is None or load_col is None or pos_col == load_col:
            if len(header) == 2:
                pos_col, load_col = 0, 1
            else:
                raise CardError(
                    f"CSV header {', '.join(h.strip() for h in header)!s} has no position and load columns "
                    f"(expected {POSITION_HEADER} and {LOAD_HEADER}, or displacement/position and load)"
                )
    else:
        body = rows
        width = len(header)
        if width < 2:
            raise CardError("CSV needs two columns: position and load")
        pos_col, load_col = 0, 1
        if width >= 3:
            first = [_parse_float(r[0]) if r else None for r in body[:50]]
            if all(v is not None for v in first) and np.all(np.diff(np.asarray(first, float)) == 1):
                pos_col, load_col = 1, 2  # a leading row-number column
    if len(body) < MIN_CARD_POINTS:
        raise CardError(f"CSV has {len(body)} data rows; a card needs at least {MIN_CARD_POINTS} points")
    need = max(pos_col, load_col)
    position = np.empty(len(body))
    load = np.empty(len(body))
    for i, row in enumerate(body):
        if len(row) <= need:
            raise CardError(f"CSV row {i + 2 if has_header else i + 1} has {len(row)} columns, expected {need + 1}")
        p, f = _parse_float(row[pos_col]), _parse_float(row[load_col])
        if p is None or f is None:
            bad = row[pos_col] if p is None else row[load_col]
            raise CardError(f"CSV row {i + 2 if has_header else i + 1}: {bad.strip()[:40]!r} is not a number")
        position[i], load[i] = p, f
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(load))):
        raise CardError("CSV holds NaN or infinite values")
    return position, load


def split_strokes(position: np.ndarray, load: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a series that stacks several strokes into single strokes (bottom to bottom).

    A stroke boundary is the lowest point of each visit to the bottom of the stroke. A file with
    fewer than two complete strokes is returned whole, as one stroke.
    """
    span = float(position.max() - position.min())
    if span <= 0:
        return [(position, load)]
    near_bottom = position <= position.min() + 0.05 * span
    # Runs of consecutive samples near the bottom; the boundary is the minimum of each run.
    edges = np.flatnonzero(np.diff(near_bottom.astype(np.int8)))
    starts = [0] if near_bottom[0] else []
    starts += [e + 1 for e in edges if not near_bottom[e]]
    ends = [e + 1 for e in edges if near_bottom[e]]
    if near_bottom[-1]:
        ends.append(len(position))
    cuts = [s + int(np.argmin(position[s:e])) for s, e in zip(starts, ends)]
    strokes = [
        (position[a : b + 1], load[a : b + 1]) for a, b in zip(cuts, cuts[1:]) if b - a + 1 >= MIN_CARD_POINTS
    ]
    if len(strokes) < 2:
        return [(position, load)]
    return strokes


def read_card_csv(source: bytes | str | os.PathLike) -> Card:
    """Read a raw-data CSV (GBK or UTF-8, with or without BOM) and return one stroke.

    Files that stack several strokes are split and the first complete stroke is returned
    (``Card.strokes_in_file`` says how many there were).

    Raises:
        CardError: unreadable text, missing columns, bad numbers, too few/many points, no extent.
    """
    data = _read_source(source, MAX_CSV_BYTES, "CSV")
    position, load = parse_card_csv_text(_decode_text(data))
    strokes = split_strokes(position, load)
    position, load = strokes[0]
    if np.ptp(position) <= 0:
        raise CardError("CSV position column is constant: the card has no stroke")
    if np.ptp(load) <= 0:
        raise CardError("CSV load column is constant: the card has no load variation")
    return Card(position.astype(np.float64), load.astype(np.float64), len(strokes))


def card_csv_text(position: np.ndarray, load: np.ndarray, decimals: int = 4) -> str:
    """Format a card as CSV text with the competition header ``位移(m),载荷(kN)``."""
    buf = io.StringIO()
    buf.write(f"{POSITION_HEADER},{LOAD_HEADER}\n")
    for p, f in zip(np.asarray(position, float), np.asarray(load, float)):
        buf.write(f"{p:.{decimals}f},{f:.{decimals}f}\n")
    return buf.getvalue()


def write_card_csv(path: str | os.PathLike, position: np.ndarray, load: np.ndarray) -> None:
    """Write a card CSV atomically, UTF-8 with BOM (opens correctly in Excel on Chinese Windows)."""
    atomic_write_text(path, card_csv_text(position, load), encoding="utf-8-sig")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_SHIFT = 4  # sub-pixel bits for cv2 drawing
MIN_PADDING_RUN = 4  # trailing (0, 0) samples from this many on are recorder padding


def checked_card_arrays(position, load) -> tuple[np.ndarray, np.ndarray]:
    """Position and load as 1-D ``float64`` arrays, checked to be one drawable stroke.

    Trailing recorder padding (:func:`trailing_padding`) is dropped first.

    Raises:
        CardError: different lengths, too few points, NaN/inf, or no extent in position or load.
    """
    position = np.asarray(position, dtype=np.float64).ravel()
    load = np.asarray(load, dtype=np.float64).ravel()
    if position.shape != load.shape:
        raise CardError(f"position and load differ in length ({position.size} vs {load.size})")
    if position.size < MIN_CARD_POINTS:
        raise CardError(f"a card needs at least {MIN_CARD_POINTS} points, got {position.size}")
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(load))):
        raise CardError("card holds NaN or infinite values")
    pad = trailing_padding(position, load)
    if pad:
        position, load = position[:-pad], load[:-pad]
        if position.size < MIN_CARD_POINTS:
            raise CardError(f"a card needs at least {MIN_CARD_POINTS} points, got {position.size} "
                            f"before {pad} trailing (0, 0) padding samples")
    if np.ptp(position) <= 0 or np.ptp(load) <= 0:
        raise CardError("card has no extent in position or load")
    return position, load


def trailing_padding(position: np.ndarray, load: np.ndarray) -> int:
    """How many samples at the end of a stroke are recorder padding: a run of four or more exact ``(0, 0)``.

    Some recorders pad a short stroke to a fixed length with zeros (every bottom-tagging card of the
    field set is a 200-sample stroke plus 50 such samples). Kept, the padding draws a false line to the
    corner of the card and fills a fifth of a resampled series with nothing. Shorter runs are kept: a
    pump tagging bottom can unload the load cell right at the bottom of the stroke, so two or three
    real ``(0, 0)`` readings happen (3 of 9,600 simulated cards end in two).
    """
    zero = (position == 0) & (load == 0)
    run = int(np.argmin(zero[::-1])) if not zero.all() else zero.size
    return run if run >= MIN_PADDING_RUN else 0


def render_card_ink(
    position: np.ndarray,
    load: np.ndarray,
    *,
    width: int = CARD_WIDTH,
    height: int = CARD_HEIGHT,
    margin: int = 10,
    line_width: int = 2,
    antialias: bool = True,
) -> np.ndarray:
    """Draw a card's closed outline, anti-aliased, into a ``uint8 [height, width]`` mask.

    Position runs left to right, load bottom to top, each scaled to fill the area inside ``margin``.
    ``antialias=False`` draws 8-connected hard-edged lines, as some recorders' renderers do.

    Raises:
        CardError: arrays of different length, too few points, non-finite values or no extent.
    """
    position, load = checked_card_arrays(position, load)
    p_span, f_span = np.ptp(position), np.ptp(load)
    if not (0 <= margin and 2 * margin + 8 < min(width, height)):
        raise ValueError(f"margin {margin} does not fit a {width} x {height} image")
    x = margin + (position - position.min()) / p_span * (width - 1 - 2 * margin)
    y = (height - 1 - margin) - (load - load.min()) / f_span * (height - 1 - 2 * margin)
    pts = np.round(np.stack([x, y], axis=1) * (1 << _SHIFT)).astype(np.int32)
    canvas = np.zeros((height, width), np.uint8)
    line_type = cv2.LINE_AA if antialias else cv2.LINE_8
    cv2.polylines(canvas, [pts], True, 255, thickness=max(1, int(line_width)), lineType=line_type, shift=_SHIFT)
    return canvas


def render_card_png(
    position: np.ndarray,
    load: np.ndarray,
    *,
    width: int = CARD_WIDTH,
    height: int = CARD_HEIGHT,
    margin: int = 10,
    line_width: int = 2,
    antialias: bool = True,
) -> bytes:
    """Render a card to the competition PNG format: RGBA, black colour channels, outline in alpha.

    Returns:
        PNG bytes (deterministic for the same inputs).

    Raises:
        CardError: as :func:`render_card_ink`.
    """
    alpha = render_card_ink(position, load, width=width, height=height, margin=margin, line_width=line_width,
                            antialias=antialias)
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[:, :, 3] = alpha
    ok, buf = cv2.imencode(".png", rgba)
    if not ok:  # pragma: no cover - cv2 only fails here on an impossible image
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m shared.cards render CARD.csv --out CARD.png``."""
    parser = argparse.ArgumentParser(prog="python -m shared.cards", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render a raw-data CSV to the competition PNG format")
    render.add_argument("csv", help="card CSV (位移(m), 载荷(kN))")
    render.add_argument("--out", required=True, help="output PNG path")
    render.add_argument("--margin", type=int, default=10, help="blank border in pixels (default 10)")
    render.add_argument("--line-width", type=int, default=2, help="line width in pixels (default 2)")
    args = parser.parse_args(argv)
    try:
        card = read_card_csv(args.csv)
        png = render_card_png(card.position, card.load, margin=args.margin, line_width=args.line_width)
    except (CardError, ValueError) as exc:
        print(f"error: {args.csv}: {exc}", file=sys.stderr)
        return 2
    atomic_write_bytes(args.out, png)
    print(f"wrote {args.out} ({len(card)} points, {card.strokes_in_file} stroke(s) in file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
