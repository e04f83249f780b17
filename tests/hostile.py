"""A corpus of hostile and broken inputs, generated (never committed), shared by the hostile-input tests.

Each entry says whether it is still a usable card (``ok``) or must be refused with a clear error.
The same corpus runs against the shared decoders, the batch scorer and the live service.
"""

from __future__ import annotations

import io
import stat
import warnings
import struct
import zipfile
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from shared.cards import card_csv_text, render_card_ink, render_card_png
from tests.shapes import fluid_pound_card, normal_card


@dataclass(frozen=True)
class Hostile:
    """One corpus entry: a file name, its bytes, and whether it is a usable card."""

    name: str
    data: bytes
    ok: bool
    what: str


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def good_png() -> bytes:
    """A valid competition card (fluid pound)."""
    return render_card_png(*fluid_pound_card())


def good_csv() -> bytes:
    """A valid raw-data card, GBK with the Chinese header."""
    return card_csv_text(*normal_card()).encode("gbk")


def _apng(ink: np.ndarray) -> bytes:
    """An animated PNG: a default image plus an extra frame (acTL/fcTL/fdAT chunks)."""
    base = _png(np.dstack([np.zeros_like(ink)] * 3 + [ink]))
    ihdr_end = 8 + 25
    h, w = ink.shape
    actl = _chunk(b"acTL", struct.pack(">II", 2, 0))
    fctl0 = _chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, w, h, 0, 0, 1, 10, 0, 0))
    idat_at = base.index(b"IDAT") - 4
    raw = b"".join(b"\x00" + bytes(4 * w) for _ in range(h))
    fctl1 = _chunk(b"fcTL", struct.pack(">IIIIIHHBB", 1, w, h, 0, 0, 1, 10, 0, 0))
    fdat = _chunk(b"fdAT", struct.pack(">I", 2) + zlib.compress(raw))
    iend_at = base.index(b"IEND") - 4
    return base[:ihdr_end] + actl + fctl0 + base[idat_at:iend_at] + fctl1 + fdat + base[iend_at:]


def _palette(ink: np.ndarray) -> bytes:
    idx = (ink >= 128).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in idx)
    ihdr = struct.pack(">IIBBBBB", ink.shape[1], ink.shape[0], 8, 3, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"PLTE", bytes([255, 255, 255, 0, 0, 0]))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _bomb_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b""))


def card_corpus() -> list[Hostile]:
    """Hostile and odd card images."""
    ink = render_card_ink(*fluid_pound_card())
    good = good_png()
    crc = bytearray(good)
    crc[good.index(b"IDAT") + 12] ^= 0xFF
    dot = np.zeros((190, 400, 4), np.uint8)
    dot[95:98, 200:203, 3] = 255
    big_ink = render_card_ink(*fluid_pound_card(), width=4000, height=1900, margin=100, line_width=12)
    bmp = cv2.imencode(".bmp", np.dstack([255 - ink] * 3))[1].tobytes()
    jpeg = cv2.imencode(".jpg", np.dstack([255 - ink] * 3))[1].tobytes()
    return [
        Hostile("good.png", good, True, "valid competition card"),
        Hostile("empty.png", b"", False, "empty file"),
        Hostile("text.png", b"this is a text file renamed to png\n", False, "text renamed .png"),
        Hostile("truncated.png", good[: len(good) // 2], False, "truncated PNG"),
        Hostile("crc.png", bytes(crc), False, "PNG with a corrupt CRC"),
        Hostile("bomb.png", _bomb_header(30000, 30000), False, "header claims 30000 x 30000"),
        Hostile("deep16.png", _png(np.dstack([np.zeros_like(ink, np.uint16)] * 3 + [ink.astype(np.uint16) * 257])),
                True, "16-bit RGBA"),
        Hostile("grey.png", _png(255 - ink), True, "grey, no alpha"),
        Hostile("palette.png", _palette(ink), True, "palette PNG"),
        Hostile("rgb.png", _png(np.dstack([255 - ink] * 3)), True, "RGB without alpha"),
        Hostile("animated.png", _apng(ink), True, "animated PNG (first frame is the card)"),
        Hostile("transparent.png", _png(np.zeros((190, 400, 4), np.uint8)), False, "all-transparent image"),
        Hostile("dot.png", _png(dot), False, "a single dot"),
        Hostile("huge.png", _png(np.dstack([np.zeros_like(big_ink)] * 3 + [big_ink])), True, "huge valid image"),
        Hostile("photo.jpg.png", jpeg, False, "JPEG sent as a card"),
        Hostile("anim.gif.png", b"GIF89a" + bytes(200), False, "GIF sent as a card"),
        Hostile("bitmap.bmp.png", bmp, False, "BMP sent as a card"),
    ]


def csv_corpus() -> list[Hostile]:
    """Hostile and odd raw-data CSVs."""
    pos, load = normal_card()
    text = card_csv_text(pos, load)
    rows = text.splitlines()
    return [
        Hostile("good.csv", good_csv(), True, "valid GBK CSV"),
        Hostile("utf8bom.csv", text.encode("utf-8-sig"), True, "UTF-8 with BOM"),
        Hostile("utf16.csv", text.encode("utf-16"), False, "UTF-16 (wrong encoding)"),
        Hostile("nan.csv", (rows[0] + "\n" + "\n".join(r.replace(r.split(",")[1], "nan") for r in rows[1:])).encode(),
                False, "NaN loads"),
        Hostile("inf.csv", (text + "1.0,inf\n").encode(), False, "an infinite load"),
        Hostile("words.csv", (text + "1.0,heavy\n").encode(), False, "text in a number column"),
        Hostile("onerow.csv", (rows[0] + "\n" + rows[1] + "\n").encode(), False, "one row"),
        Hostile("million.csv", (rows[0] + "\n").encode() + b"1.5,30.0\n" * 1_000_000, False, "a million rows"),
        Hostile("junk.csv", bytes(range(256)) * 40, False, "binary junk"),
        Hostile("columns.csv", b"time,pressure,temperature\n" + b"1,2,3\n" * 50, False, "missing columns"),
    ]


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return buf.getvalue()


def archive_corpus() -> dict[str, bytes]:
    """Hostile archives; each also holds one good card ``good.png`` that must still be scored."""
    good = good_png()
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    nested = _zip([("inner/good.png", good)])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("good.png", good)
        zf.writestr(zipfile.ZipInfo("wellXX.png"), good)
    gbk_name = buf.getvalue().replace(b"wellXX", "油井".encode("gbk") + b"XX"[: 6 - len("油井".encode("gbk"))])
    encrypted = bytearray(_zip([("secret.png", good), ("good.png", good)]))
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        encrypted[encrypted.find(sig) + offset] |= 0x1
    dup = io.BytesIO()
    with zipfile.ZipFile(dup, "w") as zf:
        zf.writestr("good.png", good)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zf.writestr("good.png", b"second copy")
    return {
        "zip-slip-parent.zip": _zip([("../../evil.png", good), ("good.png", good)]),
        "zip-slip-absolute.zip": _zip([("/tmp/evil.png", good), ("good.png", good)]),
        "zip-slip-drive.zip": _zip([("C:\\evil.png", good), ("good.png", good)]),
        "symlink.zip": _zip([(link, "/etc/passwd"), ("good.png", good)]),
        "bomb-ratio.zip": _zip([("bomb.csv", b"0" * (30 << 20)), ("good.png", good)]),
        "bomb-members.zip": _zip([(f"empty/{i}.txt", b"") for i in range(5000)] + [("good.png", good)]),
        "nested.zip": _zip([("inner.zip", nested), ("good.png", good)]),
        "duplicates.zip": dup.getvalue(),
        "non-utf8-names.zip": gbk_name,
        "encrypted.zip": bytes(encrypted),
    }
