"""Request bodies -> cards: what a ``/classify`` or ``/classify/batch`` request carries, as each card's PNG and CSV.

* :func:`read_single_card` -- the one card of ``POST /classify`` (field ``file`` or the raw body, plus the
  optional ``series`` CSV of the same card);
* :func:`read_batch_uploads` and :func:`iter_batch_cards` -- the cards of ``POST /classify/batch`` (loose
  files, paired by name when a dual model is loaded, and zips);
* :func:`card_kind` -- whether an upload is a PNG or a CSV card (content first, then name and type).

Every refusal is an :class:`serving.errors.ApiError` (4xx JSON). Decoding, zip reading and preprocessing are in
``shared/``; where a card goes from here is :mod:`serving.routing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Iterator, NamedTuple

from flask import Request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from serving.errors import ApiError
from serving.routing import card_files, skipped_card_members
from shared.cards import PNG_SIGNATURE, CardError
from shared.dataset_io import ArchiveError, iter_cards

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


# ---------------------------------------------------------------------------------- POST /classify


@dataclass(frozen=True)
class CardUpload:
    """The card of a ``/classify`` request: its PNG and/or CSV, and the names they were sent with."""

    png: bytes | None
    csv: bytes | None
    filename: str = ""
    series_filename: str = ""


def _read_file(storage: FileStorage) -> Upload:
    return Upload(storage.filename or "", storage.mimetype or "", storage.read())


def _body_type(request: Request) -> str:
    """The request's media type; a form-urlencoded body (what ``curl --data-binary`` sends without
    ``-H Content-Type``) cannot carry a file, so it is taken as an undeclared raw body and sniffed."""
    ctype = media_type(request.content_type)
    return "" if ctype == "application/x-www-form-urlencoded" else ctype


def _raw_body(request: Request) -> bytes:
    """The request body, refusing one over the route's limit also when it is sent chunked.

    werkzeug stops reading a chunked body (no Content-Length) at ``max_content_length`` and
    returns what it has; a body that fills the limit exactly is taken as one that went past it.
    """
    data = request.get_data(cache=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()
    return data


def _single_upload(request: Request) -> Upload:
    """The one file of a /classify request, from the multipart field ``file`` or the raw body."""
    ctype = _body_type(request)
    if ctype == "multipart/form-data":
        files = request.files.getlist("file")
        if not files:
            others = sorted(request.files.keys())
            hint = f" (got field(s) {', '.join(others)})" if others else ""
            raise ApiError(400, "missing_file", f"no multipart field 'file' with a card{hint}")
        if len(files) > 1:
            raise ApiError(400, "too_many_files", "send one card to /classify; use /classify/batch for several")
        upload = _read_file(files[0])
        if not upload.data:
            raise ApiError(400, "empty_file", "the field 'file' holds an empty file")
        return upload
    data = _raw_body(request)
    if not data:
        raise ApiError(
            400, "missing_file",
            "no card in the request: send multipart field 'file', or the card as the body with "
            "Content-Type image/png or text/csv",
        )
    return Upload("", ctype, data)


def _series_upload(request: Request, file_kind: str) -> Upload | None:
    """The optional multipart field ``series``: the CSV of the same card as the PNG in ``file``.

    Raises:
        ApiError: 400 for two ``series`` files, an empty one, or ``file`` not being a PNG; 415 if it is no CSV.
    """
    if _body_type(request) != "multipart/form-data":
        return None
    files = request.files.getlist("series")
    if not files:
        return None
    if len(files) > 1:
        raise ApiError(400, "too_many_files", "send one 'series' CSV with the card's PNG")
    series = _read_file(files[0])
    if not series.data:
        raise ApiError(400, "empty_file", "the field 'series' holds an empty file")
    if card_kind(series) != "csv":
        raise ApiError(415, "unsupported_media_type", "the field 'series' takes the card's CSV (position/load)")
    if file_kind != "png":
        raise ApiError(400, "invalid_parameter", "with a 'series' CSV, the field 'file' must be the card's PNG")
    return series


def read_single_card(request: Request) -> CardUpload:
    """The card of a ``POST /classify`` request: the field ``file`` (or the raw body) and the optional ``series``.

    Raises:
        ApiError: 400 for a missing, empty or extra file; 413 for a chunked body over the limit; 415 for a zip
            (it belongs to /classify/batch) or a file that is neither a PNG nor a CSV.
    """
    upload = _single_upload(request)
    if is_zip(upload) and upload.data.startswith(ZIP_MAGIC):
        raise ApiError(415, "unsupported_media_type", "the upload is a zip archive; send zips to /classify/batch")
    kind = card_kind(upload)
    series = _series_upload(request, kind)
    return CardUpload(
        png=upload.data if kind == "png" else None,
        csv=series.data if series is not None else (upload.data if kind == "csv" else None),
        filename=upload.filename,
        series_filename=series.filename if series is not None else "",
    )


# ---------------------------------------------------------------------------------- POST /classify/batch


class BatchCard(NamedTuple):
    """One card of a batch request: its id and file name, and its files or why it cannot be read."""

    id: str
    file: str
    png: bytes | None
    csv: bytes | None
    error: dict | None  # {"code", "message"} of an unreadable card


def read_batch_uploads(request: Request) -> list[Upload]:
    """All files of a ``/classify/batch`` request (multipart, any field name) or its raw body.

    Raises:
        ApiError: 400 for a request without files; 413 for a chunked body over the limit.
    """
    ctype = _body_type(request)
    if ctype == "multipart/form-data":
        uploads = [_read_file(f) for _, f in request.files.items(multi=True)]
        if not uploads:
            raise ApiError(400, "missing_file", "no files in the request: send one or more cards or a zip (multipart)")
        return uploads
    data = _raw_body(request)
    if not data:
        raise ApiError(400, "missing_file", "empty request: send cards as multipart files or one zip as the body")
    return [Upload("", ctype, data)]


def iter_batch_cards(uploads: list[Upload], limit: int, pair_files: bool = False) -> Iterator[BatchCard]:
    """Every card of a batch request, in upload order, each with its files or its error.

    Zips are read in memory with the shared safe reader (``shared.dataset_io``), which pairs
    ``<id>.png`` with ``<id>.csv``; refused card members come out as errors. Loose files are one card
    each, except that with ``pair_files`` (a dual model is loaded) a PNG and a CSV of the same name
    are one card.

    Raises:
        ApiError: 413 past ``limit`` cards, 422 for a zip that cannot be opened at all.
    """
    count = 0

    def bump(n: int = 1) -> None:
        nonlocal count
        count += n
        if count > limit:
            raise ApiError(413, "too_many_cards", f"a batch holds at most {limit} cards; split the upload")

    loose: list[tuple[Upload, str | None, dict | None]] = []
    for upload in uploads:
        if is_zip(upload):
            continue
        if not upload.data:
            loose.append((upload, None, {"code": "empty_file", "message": "the file is empty"}))
            continue
        try:
            loose.append((upload, card_kind(upload), None))
        except ApiError as exc:
            loose.append((upload, None, exc.to_dict()))
    partner: dict[int, int] = {}
    if pair_files:
        by_stem: dict[str, dict[str, int]] = {}
        for i, (upload, kind, error) in enumerate(loose):
            if error is None and upload.stem:
                by_stem.setdefault(upload.stem, {}).setdefault(kind, i)
        for kinds in by_stem.values():
            if "png" in kinds and "csv" in kinds:
                partner[kinds["png"]] = kinds["csv"]
                partner[kinds["csv"]] = kinds["png"]

    done: set[int] = set()
    loose_index = {id(u): i for i, (u, _, _) in enumerate(loose)}
    for upload in uploads:
        if not is_zip(upload):
            i = loose_index[id(upload)]
            if i in done:
                continue
            _, kind, error = loose[i]
            bump()
            if error is not None:
                yield BatchCard(upload.stem, upload.filename, None, None, error)
            elif i in partner:
                j = partner[i]
                done.add(j)
                png, csv = (loose[i][0], loose[j][0]) if kind == "png" else (loose[j][0], loose[i][0])
                yield BatchCard(png.stem, png.filename, png.data, csv.data, None)
            else:
                yield BatchCard(upload.stem, upload.filename, upload.data if kind == "png" else None,
                                upload.data if kind == "csv" else None, None)
            continue
        try:
            source = iter_cards(upload.data)
        except ArchiveError as exc:
            name = f" {upload.filename}" if upload.filename else ""
            raise ApiError(422, "invalid_zip", f"cannot read the zip{name}: {exc}") from None
        with source:
            bump(len(source))
            seen = set()
            for card in source:
                seen.add((card.folder, card.id))
                try:
                    png, csv = card_files(card)  # the card has a readable file at all (else: why not)
                except CardError as exc:
                    yield BatchCard(card.id, card.name, None, None, {"code": "invalid_card", "message": str(exc)})
                    continue
                yield BatchCard(card.id, card.name, png, csv, None)
            for card_id, name, reason in skipped_card_members(source, seen):
                bump()
                yield BatchCard(card_id, name, None, None, {"code": "skipped_member", "message": f"{name}: {reason}"})
