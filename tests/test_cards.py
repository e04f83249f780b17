"""Card I/O: PNG decoding (every format and every refusal), CSV reading, rendering, CLI."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.cards import (
    CardError,
    card_csv_text,
    decode_card_png,
    read_card_csv,
    render_card_ink,
    render_card_png,
    split_strokes,
)
from tests.shapes import SHAPES, fluid_pound_card, normal_card

ROOT = Path(__file__).resolve().parents[1]


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


@pytest.fixture(scope="module")
def ink() -> np.ndarray:
    return render_card_ink(*normal_card())


# ---------------------------------------------------------------- decoding: accepted formats


def test_competition_png_outline_comes_from_alpha(ink):
    png = render_card_png(*normal_card())
    rgba = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (190, 400, 4)
    assert not rgba[:, :, :3].any(), "colour channels carry nothing"
    assert np.array_equal(decode_card_png(png), ink)
    assert np.array_equal(decode_card_png(png), rgba[:, :, 3])


@pytest.mark.parametrize("variant", ["grey", "rgb", "rgb16", "grey16", "grey_alpha", "palette", "opaque_rgba", "dark_bg"])
def test_pngs_without_useful_alpha_are_read_from_ink(ink, variant):
    light = 255 - ink
    if variant == "grey":
        png = _png(light)
    elif variant == "rgb":
        png = _png(np.dstack([light] * 3))
    elif variant == "rgb16":
        png = _png(np.dstack([light.astype(np.uint16) * 257] * 3))
    elif variant == "grey16":
        png = _png(light.astype(np.uint16) * 257)
    elif variant == "opaque_rgba":
        png = _png(np.dstack([light] * 3 + [np.full_like(ink, 255)]))
    elif variant == "dark_bg":
        png = _png(ink)
    elif variant == "grey_alpha":
        png = _png(np.dstack([np.zeros_like(ink)] * 3 + [ink]))
    else:  # palette PNG, written by hand: two-colour palette, 8-bit indices
        idx = (ink >= 128).astype(np.uint8)
        raw = b"".join(b"\x00" + row.tobytes() for row in idx)
        ihdr = struct.pack(">IIBBBBB", ink.shape[1], ink.shape[0], 8, 3, 0, 0, 0)
        png = (
            b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"PLTE", bytes([255, 255, 255, 0, 0, 0]))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
        )
    decoded = decode_card_png(png)
    strong = decoded >= 128
    assert decoded.shape == ink.shape
    # The recovered line is the drawn line (up to anti-aliasing thresholds).
    assert (strong & (ink >= 128)).sum() / max(1, (strong | (ink >= 128)).sum()) > 0.8


def test_other_sizes_decode_at_their_own_size():
    big = render_card_ink(*normal_card(), width=800, height=380, margin=30, line_width=3)
    assert decode_card_png(_png(np.dstack([np.zeros_like(big)] * 3 + [big]))).shape == (380, 800)


def test_decode_accepts_a_path(tmp_path):
    path = tmp_path / "card.png"
    path.write_bytes(render_card_png(*normal_card()))
    assert decode_card_png(path).shape == (190, 400)


# ---------------------------------------------------------------- decoding: refusals


def _bomb_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + _chunk(b"IEND", b"")


def _bad_inputs() -> dict[str, tuple[bytes, str]]:
    good = render_card_png(*normal_card())
    idat = good.index(b"IDAT")
    corrupt_crc = bytearray(good)
    corrupt_crc[idat + 10] ^= 0xFF  # flip a byte inside IDAT: its CRC no longer matches
    bad_ihdr = bytearray(good)
    bad_ihdr[20] ^= 0x01
    jpeg = cv2.imencode(".jpg", np.full((50, 50, 3), 200, np.uint8))[1].tobytes()
    dot = np.zeros((190, 400, 4), np.uint8)
    dot[90:96, 200:206, 3] = 255
    return {
        "empty": (b"", "empty"),
        "text": (b"position,load\n1,2\n", "not a PNG"),
        "jpeg": (jpeg, "JPEG"),
        "gif": (b"GIF89a" + b"\x00" * 40, "GIF"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "header_only": (good[:20], "truncated"),
        "corrupt_crc": (bytes(corrupt_crc), "damaged"),
        "bad_ihdr_crc": (bytes(bad_ihdr), "CRC"),
        "bomb": (_bomb_header(30000, 30000), "limit"),
        "tiny": (_png(np.zeros((4, 4), np.uint8)), "too small"),
        "transparent": (_png(np.zeros((190, 400, 4), np.uint8)), "transparent"),
        "blank_white": (_png(np.full((190, 400), 255, np.uint8)), "no card outline"),
        "all_black": (_png(np.zeros((190, 400, 3), np.uint8)), "no card outline"),
        "dot": (_png(dot), "dot"),
    }


@pytest.mark.parametrize("name", sorted(_bad_inputs()))
def test_bad_pngs_raise_card_error_with_a_reason(name):
    data, words = _bad_inputs()[name]
    with pytest.raises(CardError) as info:
        decode_card_png(data)
    assert words.lower() in str(info.value).lower()


def test_missing_file_is_a_card_error(tmp_path):
    with pytest.raises(CardError, match="cannot read"):
        decode_card_png(tmp_path / "nope.png")


# ---------------------------------------------------------------- CSV


def _csv_bytes(header: str | None, pos, load, encoding="utf-8", sep=",") -> bytes:
    lines = [] if header is None else [header]
    lines += [f"{p:.4f}{sep}{f:.4f}" for p, f in zip(pos, load)]
    return "\n".join(lines).encode(encoding)


@pytest.mark.parametrize(
    "header,encoding",
    [
        ("位移(m),载荷(kN)", "gbk"),
        ("位移(m),载荷(kN)", "utf-8-sig"),
        ("位移(m),载荷(kN)", "utf-8"),
        ("位移(m),载荷(kn)", "gbk"),
        ("位移(m),载荷(KN)", "utf-8"),
        ("displacement,load", "utf-8"),
        ("Position (m),Load (kN)", "utf-8"),
        (None, "utf-8"),
    ],
)
def test_csv_headers_and_encodings(header, encoding):
    pos, load = normal_card()
    card = read_card_csv(_csv_bytes(header, pos, load, encoding))
    np.testing.assert_allclose(card.position, np.round(pos, 4))
    np.testing.assert_allclose(card.load, np.round(load, 4))


def test_csv_with_columns_swapped_by_header():
    pos, load = normal_card()
    data = "载荷(kN),位移(m)\n" + "\n".join(f"{f},{p}" for p, f in zip(pos, load))
    card = read_card_csv(data.encode("gbk"))
    np.testing.assert_allclose(card.position, pos)


def test_csv_with_leading_row_numbers_and_tabs():
    pos, load = normal_card()
    data = "\n".join(f"{i + 1}\t{p}\t{f}" for i, (p, f) in enumerate(zip(pos, load)))
    card = read_card_csv(data.encode())
    np.testing.assert_allclose(card.load, load)


def test_stacked_strokes_are_split_into_one():
    pos, load = normal_card(200)
    three_p = np.concatenate([pos, pos, pos[:120]])
    three_f = np.concatenate([load, load + 1.0, load[:120]])
    card = read_card_csv(_csv_bytes("位移(m),载荷(kN)", three_p, three_f))
    assert card.strokes_in_file >= 2
    assert 190 <= len(card) <= 205
    assert abs(card.load.mean() - load.mean()) < 1.0
    single = split_strokes(pos, load)
    assert len(single) == 1 and len(single[0][0]) == len(pos)


@pytest.mark.parametrize(
    "data,words",
    [
        (b"", "empty"),
        (b"\x00\x01\x02\xff" * 100, "binary"),
        ("位移(m),载荷(kN)\n".encode() + b"1.0,nan\n" * 30, "NaN"),
        ("位移(m),载荷(kN)\n".encode() + b"1.0,inf\n" * 30, "NaN or infinite"),
        ("位移(m),载荷(kN)\n".encode() + b"1.0,abc\n" * 30, "not a number"),
        ("位移(m),载荷(kN)\n1.0,2.0\n".encode(), "at least"),
        (b"time,pressure,temp\n" + b"1,2,3\n" * 30, "no position and load"),
        (b"1.0\n" * 30, "two columns"),
        ("位移(m),载荷(kN)\n".encode() + b"1.0,2.0\n" * 30, "constant"),
        (b"\xff\xfe\xfa" * 10 + b"\n" * 30, "neither UTF-8 nor GBK"),
    ],
)
def test_bad_csvs_raise_card_error(data, words):
    with pytest.raises(CardError) as info:
        read_card_csv(data)
    assert words.lower() in str(info.value).lower()


def test_huge_csv_is_refused_without_parsing_it_all():
    data = "位移(m),载荷(kN)\n".encode() + b"1.0,2.0\n" * 1_000_000
    with pytest.raises(CardError, match="limit"):
        read_card_csv(data)


def test_csv_round_trip_through_writer(tmp_path):
    from shared.cards import write_card_csv

    pos, load = fluid_pound_card()
    path = tmp_path / "c.csv"
    write_card_csv(path, pos, load)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    card = read_card_csv(path)
    np.testing.assert_allclose(card.load, load, atol=1e-4)
    assert card_csv_text(pos, load).splitlines()[0] == "位移(m),载荷(kN)"



def test_trailing_zero_padding_is_not_part_of_the_card():
    """A stroke padded to a fixed length with (0, 0) samples draws and resamples like the stroke alone."""
    from shared.cards import checked_card_arrays, render_card_ink, trailing_padding
    from shared.series import preprocess_series

    pos, load = fluid_pound_card()
    padded_pos, padded_load = np.r_[pos, np.zeros(50)], np.r_[load, np.zeros(50)]
    assert trailing_padding(padded_pos, padded_load) == 50
    got_pos, got_load = checked_card_arrays(padded_pos, padded_load)
    np.testing.assert_array_equal(got_pos, pos)
    np.testing.assert_array_equal(got_load, load)
    card = read_card_csv(card_csv_text(padded_pos, padded_load).encode())  # through the CSV reader as well
    plain = read_card_csv(card_csv_text(pos, load).encode())
    np.testing.assert_array_equal(render_card_ink(card.position, card.load), render_card_ink(plain.position, plain.load))
    np.testing.assert_array_equal(preprocess_series(card), preprocess_series(plain))
    # the padding changed the picture before: a line to the bottom-left corner
    assert (render_card_ink(np.r_[pos, 0.0], np.r_[load, 0.0]) != render_card_ink(pos, load)).any()
    # up to three (0, 0) can be real readings (load cell unloaded at the bottom) and stay;
    # zeros in only one column are data
    assert trailing_padding(np.r_[pos, 0.0, 0.0, 0.0], np.r_[load, 0.0, 0.0, 0.0]) == 0
    assert trailing_padding(np.r_[pos, np.zeros(4)], np.r_[load, np.zeros(4)]) == 4
    assert trailing_padding(np.r_[pos, 0.0, 0.0, 0.0, 0.0], np.r_[load, 1.0, 0.0, 0.0, 0.0]) == 0
    with pytest.raises(CardError, match="trailing"):
        checked_card_arrays(np.r_[pos[:3], np.zeros(20)], np.r_[load[:3], np.zeros(20)])


# ---------------------------------------------------------------- rendering and CLI


def test_render_is_deterministic_and_fills_the_frame():
    a = render_card_png(*normal_card())
    assert a == render_card_png(*normal_card())
    ink = render_card_ink(*normal_card(), margin=10)
    ys, xs = np.nonzero(ink >= 64)
    assert xs.min() <= 11 and xs.max() >= 388 and ys.min() <= 11 and ys.max() >= 178


def test_render_refuses_degenerate_cards():
    with pytest.raises(CardError):
        render_card_png(np.zeros(100), np.arange(100.0))
    with pytest.raises(CardError):
        render_card_png(np.arange(5.0), np.arange(5.0))
    with pytest.raises(CardError):
        render_card_png(np.arange(50.0), np.arange(49.0))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_render_cli(tmp_path):
    pos, load = fluid_pound_card()
    src = tmp_path / "卡片.csv"
    src.write_bytes(_csv_bytes("位移(m),载荷(kN)", pos, load, "gbk"))
    out = tmp_path / "card.png"
    result = _run("-m", "shared.cards", "render", str(src), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert decode_card_png(out).shape == (190, 400)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,x\n")
    result = _run("-m", "shared.cards", "render", str(bad), "--out", str(tmp_path / "bad.png"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_renders_and_decodes(shape):
    assert decode_card_png(render_card_png(*SHAPES[shape]())).max() == 255
