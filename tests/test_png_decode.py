"""The fast PNG path (shared/png_decode.py) gives exactly what cv2 gives, or declines and cv2 decides.

Real files only: the golden fixtures, cards from the renderer, and PNGs written here byte by byte (chunks,
CRCs, zlib) so each row's filter type is chosen by the test.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.cards import CardError, check_ink, decode_card_png, ink_from_image, read_png_header, render_card_png
from shared.png_decode import decode_rgba8
from tests.conftest import CARD_KINDS, REPO, synthetic_card

FIXTURE_PNGS = sorted((REPO / "tests" / "fixtures").rglob("*.png"))

# ----------------------------------------------------------------------------------------------------
# Helpers: cv2's result, and a PNG writer whose rows use the filter types the test asks for
# ----------------------------------------------------------------------------------------------------


def cv2_image(data: bytes) -> np.ndarray | None:
    """What the cv2 path decodes (``None`` when it cannot)."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def fast_image(data: bytes) -> np.ndarray | None:
    return decode_rgba8(data, read_png_header(data))


def assert_same_image(fast: np.ndarray | None, expected: np.ndarray) -> None:
    assert fast is not None, "the fast path declined"
    assert fast.dtype == expected.dtype and fast.shape == expected.shape
    assert np.array_equal(fast, expected)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_file(width: int, height: int, stream: bytes, *, extra: bytes = b"", idat_parts: int = 1) -> bytes:
    """An 8-bit RGBA PNG around a ready zlib ``stream``, split over ``idat_parts`` IDAT chunks."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    cuts = np.linspace(0, len(stream), idat_parts + 1).astype(int)
    idats = b"".join(chunk(b"IDAT", stream[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + idats + chunk(b"IEND", b"")


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def filtered_rows(rgba: np.ndarray, filters: list[int]) -> bytes:
    """The PNG scanlines of ``rgba`` (``[H, W, 4]`` uint8), row ``y`` filtered with ``filters[y]``."""
    height, width, _ = rgba.shape
    pixels = rgba.reshape(height, width * 4).astype(np.int32)
    out = []
    for y, kind in enumerate(filters):
        x = pixels[y]
        up = pixels[y - 1] if y else np.zeros_like(x)
        left = np.concatenate([np.zeros(4, np.int32), x[:-4]])
        up_left = np.concatenate([np.zeros(4, np.int32), up[:-4]])
        predictor = {0: 0, 1: left, 2: up, 3: (left + up) // 2, 4: _paeth(left, up, up_left)}[kind]
        out.append(bytes([kind]) + ((x - predictor) % 256).astype(np.uint8).tobytes())
    return b"".join(out)


def png_with_filters(rgba: np.ndarray, filters: list[int], **kwargs) -> bytes:
    height, width, _ = rgba.shape
    return png_file(width, height, zlib.compress(filtered_rows(rgba, filters)), **kwargs)


def card_rgba(width: int = 400, height: int = 190, seed: int = 0, noise: bool = False) -> np.ndarray:
    """A rendered card as RGBA pixels (outline in alpha); ``noise`` fills the colour channels randomly."""
    data = render_card_png(*synthetic_card(CARD_KINDS[seed % len(CARD_KINDS)], seed=seed), width=width, height=height)
    rgba = cv2.cvtColor(cv2_image(data), cv2.COLOR_BGRA2RGBA)
    if noise:
        rgba[:, :, :3] = np.random.default_rng(seed).integers(0, 256, rgba[:, :, :3].shape, dtype=np.uint8)
    return rgba


def cv2_path(data: bytes) -> np.ndarray:
    """What ``decode_card_png`` gave before the fast path: cv2 decodes, then the same ink steps."""
    img = cv2_image(data)
    if img is None:
        raise CardError("damaged or truncated PNG: the image data cannot be decoded")
    ink = ink_from_image(img)
    check_ink(ink)
    return ink


def outcome(decode, data: bytes) -> tuple[str, bytes | str]:
    """``("ink", mask bytes)`` or ``("CardError", message)``: comparable across the two paths."""
    try:
        ink = decode(data)
    except CardError as exc:
        return "CardError", str(exc)
    return "ink", ink.tobytes() + str(ink.shape).encode()


def assert_same_as_cv2_path(data: bytes) -> None:
    assert outcome(decode_card_png, data) == outcome(cv2_path, data)


# ----------------------------------------------------------------------------------------------------
# (1) Real cards: fixtures and rendered cards decode bit for bit as with cv2
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURE_PNGS, ids=lambda p: p.name)
def test_fixture_pngs_decode_as_cv2_does(path: Path):
    data = path.read_bytes()
    header = read_png_header(data)
    fast = decode_rgba8(data, header)
    if header.color_type == 6 and header.bit_depth == 8:
        assert_same_image(fast, cv2_image(data))
    else:
        assert fast is None  # grey, 16-bit RGB, ...: cv2 decodes those
    assert_same_as_cv2_path(data)


# Mostly the competition size; a few odd sizes exercise the columns left over after the blocks.
_SIZES = [(400, 190)] * 7 + [(397, 181), (640, 300), (123, 77)]


@pytest.mark.parametrize("batch", range(10))
def test_rendered_cards_decode_bit_identical_to_cv2(batch: int):
    for seed in range(batch * 20, batch * 20 + 20):
        width, height = _SIZES[seed % len(_SIZES)]
        position, load = synthetic_card(CARD_KINDS[seed % len(CARD_KINDS)], seed=seed)
        data = render_card_png(position, load, width=width, height=height, line_width=1 + seed % 3)
        assert_same_image(fast_image(data), cv2_image(data))
        assert_same_as_cv2_path(data)


def test_large_card_decodes_bit_identical_to_cv2():
    position, load = synthetic_card("pound", seed=3)
    data = render_card_png(position, load, width=4000, height=1900, margin=100, line_width=12)
    assert_same_image(fast_image(data), cv2_image(data))


# ----------------------------------------------------------------------------------------------------
# (2) Hand-built PNGs: rows mixing None, Sub and Up over random pixels
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(16, 16), (37, 23), (400, 190), (401, 64)])
@pytest.mark.parametrize("seed", range(3))
def test_mixed_none_sub_up_rows_decode_as_cv2(width: int, height: int, seed: int):
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    filters = [int(f) for f in rng.integers(0, 3, height)]
    filters[0], filters[1], filters[2] = 2, 2, 1  # Up on the first row (it adds zeros), Up after Up
    data = png_with_filters(rgba, filters, idat_parts=1 + seed)
    expected = cv2_image(data)
    assert np.array_equal(expected, cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))  # the writer is right
    assert_same_image(fast_image(data), expected)


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_rows_all_of_one_filter_decode_as_cv2(kind: int):
    rgba = np.random.default_rng(kind).integers(0, 256, (50, 90, 4), dtype=np.uint8)
    data = png_with_filters(rgba, [kind] * 50)
    assert_same_image(fast_image(data), cv2_image(data))


def test_metadata_chunks_are_skipped_as_cv2_skips_them():
    rgba = card_rgba(seed=4, noise=True)
    extra = chunk(b"tEXt", b"Software\x00CardSense") + chunk(b"pHYs", struct.pack(">IIB", 3780, 3780, 1))
    data = png_with_filters(rgba, [1] * rgba.shape[0], extra=extra, idat_parts=3)
    assert_same_image(fast_image(data), cv2_image(data))


# ----------------------------------------------------------------------------------------------------
# (3) Average and Paeth rows, and other layouts, go to cv2 and still decode right
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filters", ["average", "paeth", "all"])
def test_average_and_paeth_rows_fall_back_to_cv2(filters: str):
    rgba = card_rgba(seed=7, noise=True)
    height = rgba.shape[0]
    rng = np.random.default_rng(height)
    kinds = {"average": [3] * height, "paeth": [4] * height, "all": [int(f) for f in rng.integers(0, 5, height)]}
    data = png_with_filters(rgba, kinds[filters])
    assert np.array_equal(cv2_image(data), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))  # the writer is right
    assert fast_image(data) is None
    assert_same_as_cv2_path(data)


def test_other_chunks_and_layouts_fall_back_to_cv2():
    rgba = card_rgba(seed=2)
    height = rgba.shape[0]
    gamma = png_with_filters(rgba, [1] * height, extra=chunk(b"gAMA", struct.pack(">I", 45455)))
    opaque = cv2.imencode(".png", np.dstack([255 - rgba[:, :, 3]] * 3))[1].tobytes()  # RGB, no alpha
    grey = cv2.imencode(".png", rgba[:, :, 3])[1].tobytes()
    deep = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA).astype(np.uint16) * 257)[1].tobytes()
    after_iend = png_with_filters(rgba, [1] * height) + b"trailing bytes"
    for data in (gamma, opaque, grey, deep, after_iend):
        assert fast_image(data) is None
        assert_same_as_cv2_path(data)


# ----------------------------------------------------------------------------------------------------
# (4) Damaged image data: a CardError with the cv2 path's message, never another exception
# ----------------------------------------------------------------------------------------------------


def _damaged() -> dict[str, bytes]:
    rgba = card_rgba(seed=5)
    height, width, _ = rgba.shape
    rows = filtered_rows(rgba, [1] * height)
    stream = zlib.compress(rows)
    good = png_file(width, height, stream)
    idat = good.index(b"IDAT")
    corrupt = bytearray(stream)
    corrupt[len(stream) // 2] ^= 0x5A  # CRCs recomputed: only the deflate data is wrong
    adler = bytearray(stream)
    adler[-1] ^= 0x01
    bad_filter = bytearray(rows)
    bad_filter[(height - 1) * (1 + 4 * width)] = 5
    return {
        "truncated_idat": good[: idat + 4 + len(stream) // 2],
        "truncated_stream": png_file(width, height, stream[: len(stream) // 2]),
        "corrupt_deflate": png_file(width, height, bytes(corrupt)),
        "bad_adler32": png_file(width, height, bytes(adler)),
        "too_little_data_row": png_file(width, height, zlib.compress(rows[: -(1 + 4 * width)])),
        "too_little_data_byte": png_file(width, height, zlib.compress(rows[:-1])),
        "filter_byte_5": png_file(width, height, zlib.compress(bytes(bad_filter))),
        "empty_idat": png_file(width, height, b""),
        "idat_crc": good[: idat + 10] + bytes([good[idat + 10] ^ 0xFF]) + good[idat + 11 :],
        "no_iend": good[:-12],
    }


@pytest.mark.parametrize("name", sorted(_damaged()))
def test_damaged_image_data_raises_card_error(name: str):
    data = _damaged()[name]
    assert fast_image(data) is None
    with pytest.raises(CardError, match="damaged or truncated PNG"):
        decode_card_png(data)


@pytest.mark.parametrize("excess", [1, 1 + 4 * 400, 20_000_000])
def test_too_much_image_data_is_left_to_cv2(excess: int):
    """libpng warns about surplus data and decodes the first rows; the fast path defers to that (and
    stops inflating one byte past the image, so a deflate bomb costs no memory)."""
    rgba = card_rgba(seed=6)
    height, width, _ = rgba.shape
    data = png_file(width, height, zlib.compress(filtered_rows(rgba, [1] * height) + bytes(excess)))
    assert fast_image(data) is None
    assert_same_as_cv2_path(data)


# ----------------------------------------------------------------------------------------------------
# (5) The fast path is really taken for the cards we produce
# ----------------------------------------------------------------------------------------------------


def test_rendered_and_golden_cards_take_the_fast_path():
    rendered = render_card_png(*synthetic_card("normal"))
    assert isinstance(fast_image(rendered), np.ndarray)
    golden = [p for p in FIXTURE_PNGS if "expected" not in p.name and read_png_header(p.read_bytes()).color_type == 6]
    assert golden, "no RGBA golden card found"
    for path in golden:
        assert isinstance(fast_image(path.read_bytes()), np.ndarray), path.name
