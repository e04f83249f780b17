"""Fast decoding of the common card PNG: 8-bit RGBA, not interlaced, rows filtered None/Sub/Up.

Most of ``cv2.imdecode``'s time on a card goes to zlib inflate; ISA-L inflates the same data about five
times faster. Our renderer (and ``cv2.imencode``) writes every row with the Sub filter, which numpy and a
few cv2 copies undo cheaply. :func:`decode_rgba8` does that for the common card format and returns the
very array ``cv2.imdecode(..., cv2.IMREAD_UNCHANGED)`` would (BGRA order). For anything else — other colour types
or depths, interlacing, Average/Paeth rows, unusual chunks, damaged or inconsistent data — it declines
(returns ``None``) and the caller decodes with cv2, so results and error messages stay cv2's.
:func:`decode_alpha8` returns the alpha plane alone, where a card's outline is, for the card reader's
fastest path.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from isal import igzip_lib

_RGBA = 6
_CHANNELS = 4

# Ancillary chunks that carry only metadata: cv2 ignores them, so the fast path may skip them too. Any
# other chunk (gAMA, tRNS, acTL of an animated PNG, private chunks, ...) sends the file to cv2.
_METADATA_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"tIME", b"pHYs"})


@dataclass(frozen=True)
class PngHeader:
    """What the IHDR chunk of a PNG says about the image (:func:`shared.cards.read_png_header` reads and checks it).

    It lives here, below ``shared.cards``, so that the fast decoder can take it without importing the card
    reader that calls it.
    """

    width: int
    height: int
    bit_depth: int
    color_type: int


def decode_rgba8(data: bytes, header: PngHeader) -> np.ndarray | None:
    """Decode a well-formed 8-bit RGBA, non-interlaced PNG whose rows use only filters 0, 1 and 2.

    Args:
        data: the whole PNG file; its signature and IHDR must already have passed
            :func:`shared.cards.read_png_header`.
        header: what :func:`shared.cards.read_png_header` returned for ``data``.

    Returns:
        ``uint8 [H, W, 4]`` in BGRA order, bit-identical to ``cv2.imdecode(..., IMREAD_UNCHANGED)``;
        or ``None`` when the file is not on the fast path (the caller then uses cv2).
    """
    inflated = _filtered_rows(data, header)
    if inflated is None:
        return None
    raw, filters = inflated
    height, width = header.height, header.width
    stride = 1 + _CHANNELS * width
    pixels = np.frombuffer(raw, np.uint8).reshape(height, stride)[:, 1:].reshape(height, width, _CHANNELS)
    if filters.count(1) != height:
        return _undo_mixed_filters(pixels, np.frombuffer(filters, np.uint8))
    # Every row is Sub, as our renderer and cv2.imencode write them. Fresh memory costs a page fault per
    # 4 KiB, about as much as the arithmetic here, so at most two image-sized buffers live at once: swap
    # the channels first (the filter works per channel), free the inflated data for the transposed copy to
    # reuse, and transpose the result back into the first buffer.
    bgra = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    del raw, pixels
    return cv2.transpose(_undo_sub_transposed(bgra), dst=bgra)


def decode_alpha8(data: bytes, header: PngHeader) -> np.ndarray | None:
    """The alpha plane alone of an 8-bit RGBA, non-interlaced PNG whose rows all use the Sub filter.

    A card PNG carries its outline in the alpha channel and nothing in the colours, so the card reader
    needs only this plane: it skips unfiltering, swapping and transposing the three colour channels that
    :func:`decode_rgba8` would return (the inflate, which covers all four, cannot be skipped).

    Args:
        data, header: as for :func:`decode_rgba8`.

    Returns:
        ``uint8 [H, W]``, C-contiguous, bit-identical to ``cv2.imdecode(..., IMREAD_UNCHANGED)[:, :, 3]``;
        or ``None`` when the file is not RGBA with only Sub rows, or anything :func:`decode_rgba8` declines
        (the caller then decodes the whole image).
    """
    inflated = _filtered_rows(data, header)
    if inflated is None:
        return None
    raw, filters = inflated
    height, width = header.height, header.width
    if filters.count(1) != height:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + _CHANNELS * width)
    # Byte 0 of a row is its filter type; the alpha of pixel x is byte 4 + 4x.
    return _undo_sub_plane(np.ascontiguousarray(rows[:, _CHANNELS::_CHANNELS]))


def _filtered_rows(data: bytes, header: PngHeader) -> tuple[bytes, bytes] | None:
    """The inflated, still filtered rows of an 8-bit RGBA PNG on the fast path and their filter bytes, or ``None``."""
    if header.color_type != _RGBA or header.bit_depth != 8:
        return None
    stream = _idat_stream(data)
    if stream is None:
        return None
    stride = 1 + _CHANNELS * header.width
    raw = _inflate(stream, header.height * stride)
    if raw is None:
        return None
    filters = raw[::stride]  # one filter type byte per row
    if max(filters) > 2:  # Average/Paeth (or an invalid filter byte): cv2 handles or rejects it
        return None
    return raw, filters


def _undo_sub_plane(plane: np.ndarray) -> np.ndarray:
    """Undo the Sub filter of one channel's ``[H, W]`` rows (running sums along each row, modulo 256).

    The running sums come from one summed-area table (``cv2.integral``, int32, in C): row ``y``'s running
    sum is the table's row ``y + 1`` minus its row ``y``, and the cast to ``uint8`` wraps modulo 256 as the
    filter does. Measured on card alpha planes: about 2x faster than ``np.cumsum`` along the rows, which
    runs element by element. The table's last entry is the sum of the whole plane, so planes that could
    overflow int32 (over 8.4 million pixels) take ``np.cumsum``.
    """
    if plane.size * 255 >= 2**31:
        return np.cumsum(plane, axis=1, dtype=np.uint8)
    table = cv2.integral(plane, sdepth=cv2.CV_32S)
    np.subtract(table[1:, 1:], table[:-1, 1:], out=plane, casting="unsafe")
    return plane


def _inflate(stream: bytes, size: int) -> bytes | None:
    """Inflate a zlib stream that must hold exactly ``size`` bytes; ``None`` if it does not or is damaged.

    ISA-L with the zlib wrapper (the Adler-32 is checked, as libpng does). The output limit bounds memory
    (a deflate bomb stops there) and one byte over ``size`` reveals too much data. This decompressor
    allocates the limit at once, where ``isal_zlib.decompressobj`` grows its buffer in steps.
    """
    inflater = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_ZLIB)
    try:
        raw = inflater.decompress(stream, size + 1)
    except igzip_lib.IsalError:
        return None
    if len(raw) != size or not inflater.eof or inflater.unused_data:
        return None
    return raw


def _undo_mixed_filters(pixels: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Reconstruct rows filtered None (0), Sub (1) or Up (2); return them in BGRA order."""
    rgba = pixels.copy()
    sub = filters == 1
    if sub.any():
        rgba[sub] = cv2.transpose(_undo_sub_transposed(pixels[sub]))
    # Up rows add the reconstructed row above, so they go top to bottom; row 0's "above" is zeros.
    for y in np.flatnonzero(filters == 2):
        if y:
            np.add(rgba[y], rgba[y - 1], out=rgba[y])
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)


def _idat_stream(data: bytes) -> bytes | None:
    """The concatenated IDAT data of a plainly laid-out PNG, or ``None`` for anything unusual.

    Every chunk's CRC is checked (cv2 refuses a damaged IDAT), the IDAT chunks must be consecutive, and
    the file must end with an empty IEND: whatever deviates is left for cv2 to accept or refuse.
    """
    view = memoryview(data)
    # IHDR: compression method, filter method and interlace method must all be 0 (the standard, flat).
    if data[26:29] != b"\x00\x00\x00":
        return None
    parts: list[memoryview] = []
    idat_done = False
    pos, end = 33, len(data)  # after the signature and the IHDR that read_png_header checked
    while pos + 12 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        stop = pos + 12 + length
        if length > 0x7FFFFFFF or stop > end:
            return None
        (crc,) = struct.unpack_from(">I", data, stop - 4)
        if zlib.crc32(view[pos + 4 : stop - 4]) != crc:
            return None
        if kind == b"IDAT":
            if idat_done:
                return None
            parts.append(view[pos + 8 : stop - 4])
        elif parts:
            idat_done = True
        if kind == b"IEND":
            return b"".join(parts) if parts and length == 0 and stop == end else None
        if kind != b"IDAT" and kind not in _METADATA_CHUNKS:
            return None
        pos = stop
    return None  # truncated: no IEND


def _undo_sub_transposed(pixels: np.ndarray) -> np.ndarray:
    """Undo the Sub filter of ``[H, W, C]`` rows; return the pixels transposed, ``[W, H, C]``.

    Sub stores each byte minus the same channel of the pixel to its left, so the pixels are running sums
    along each row, modulo 256 (uint8 adds wrap the same way). numpy's ``cumsum`` along the pixel axis
    runs element by element (about 1 ms for a card). Instead the image is transposed (cv2, fast) so each
    pixel column is one contiguous run, the columns are cut into blocks of about sqrt(W), and whole-array
    adds make running sums inside the blocks, then of the block totals, then add each block's carry:
    about 2 sqrt(W) numpy calls in all. The result stays transposed: the caller picks where it goes back.
    """
    height, width, channels = pixels.shape
    cols = cv2.transpose(pixels)
    flat = cols.reshape(width, height * channels)
    block = max(1, int(np.sqrt(width)))
    blocks = width // block
    runs = flat[: blocks * block].reshape(blocks, block, height * channels)
    for j in range(1, block):
        np.add(runs[:, j], runs[:, j - 1], out=runs[:, j])
    carry = runs[:, -1].copy()
    for k in range(1, blocks):
        np.add(carry[k], carry[k - 1], out=carry[k])
    runs[1:] += carry[:-1, np.newaxis]
    for x in range(blocks * block, width):  # the last few columns when the blocks do not fill the row
        np.add(flat[x], flat[x - 1], out=flat[x])
    return cols
