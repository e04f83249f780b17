"""What was uploaded: one card's bytes and whether it is a PNG or a CSV, or a zip of cards.

Only classification by type lives here; decoding, zip reading and preprocessing are in ``shared/``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

import cv2
import numpy as np

from serving.errors import ApiError
from shared.cards import PNG_SIGNATURE

PNG_TYPES = frozenset({"image/png", "image/x-png", "image/apng"})
CSV_TYPES = frozenset(
    {"text/csv", "text/plain", "application/csv", "text/comma-separated-values", "application/vnd.ms-excel"}
)
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
PNG_SUFFIXES = frozenset({".png"})
CSV_SUFFIXES = frozenset({".csv", ".txt"})
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

# Formats that are certainly not a card, named in the 415 message.
_OTHER_MAGIC = {
    b"\xff\xd8\xff": "JPEG image",
    b"GIF8": "GIF image",
    b"BM": "BMP image",
    b"%PDF": "PDF document",
    b"RIFF": "RIFF/WebP file",
    b"\x1f\x8b": "gzip archive",
    b"PK\x03\x04": "zip archive",
    b"PK\x05\x06": "zip archive",
    b"II*\x00": "TIFF image",
    b"MM\x00*": "TIFF image",
    b"7z\xbc\xaf": "7z archive",
    b"Rar!": "RAR archive",
}


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name (may be empty for a raw body), declared media type and bytes."""

    filename: str
    content_type: str
    data: bytes

    @property
    def suffix(self) -> str:
        """Lower-case file extension, from the last path component of the client's name."""
        return PurePosixPath(PureWindowsPath(self.filename).name).suffix.lower()

    @property
    def stem(self) -> str:
        """File name without folders and extension: the card id."""
        return PurePosixPath(PureWindowsPath(self.filename).name).stem


def media_type(value: str | None) -> str:
    """``"Text/CSV; charset=gbk"`` -> ``"text/csv"``."""
    return (value or "").split(";", 1)[0].strip().lower()


def is_zip(upload: Upload) -> bool:
    """A zip archive by content, or by name/type when the content says nothing else."""
    if upload.data.startswith(ZIP_MAGIC):
        return True
    return upload.suffix == ".zip" or media_type(upload.content_type) in ZIP_TYPES


def card_kind(upload: Upload) -> str:
    """Decide whether an upload is handled as a PNG or a CSV card.

    The content decides when it is unambiguous (the PNG signature); otherwise the declared name or
    media type; a generic upload (``application/octet-stream``, no name) that is text is a CSV.

    Returns:
        ``"png"`` or ``"csv"``.

    Raises:
        ApiError: 415 when the upload is another kind of file.
    """
    data = upload.data
    if data.startswith(PNG_SIGNATURE):
        return "png"
    ctype = media_type(upload.content_type)
    suffix = upload.suffix
    if suffix in PNG_SUFFIXES or ctype in PNG_TYPES:
        return "png"  # claims to be a PNG: the decoder says what is wrong with it (422)
    other = next((name for magic, name in _OTHER_MAGIC.items() if data.startswith(magic)), None)
    if suffix in CSV_SUFFIXES or ctype in CSV_TYPES:
        if other is None:
            return "csv"
    elif suffix or ctype not in GENERIC_TYPES:
        what = f"{ctype or 'unknown type'}" + (f", file {suffix}" if suffix else "")
        raise ApiError(415, "unsupported_media_type", f"unsupported upload ({what}); send a card as PNG or CSV")
    if other is not None:
        raise ApiError(415, "unsupported_media_type", f"the upload is a {other}; send a card as PNG or CSV")
    if b"\x00" in data[:4096]:
        raise ApiError(415, "unsupported_media_type", "the upload is binary data; send a card as PNG or CSV")
    return "csv"


def png_data_url(png: bytes) -> str:
    """``data:image/png;base64,...`` for a web page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def grey_png(image: np.ndarray) -> bytes:
    """Encode a ``uint8 [H, W]`` image as an 8-bit grey PNG."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image, dtype=np.uint8))
    if not ok:  # pragma: no cover - cv2 fails here only on impossible images
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def outline_png(ink: np.ndarray) -> bytes:
    """The card outline as dark ink on white (the competition PNGs hold it in alpha only)."""
    return grey_png(255 - np.asarray(ink, dtype=np.uint8))
