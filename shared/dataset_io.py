"""Read the cards of a zip or a folder safely, pairing ``<id>.png`` with ``<id>.csv``.

Used by training ingest, the batch scorer and ``/classify/batch`` alike. Nothing is ever extracted
to disk: members are read into memory one card at a time, so no member name can become a path
(zip-slip), and the size limits below stop zip bombs before they are inflated.

Layouts: the competition ``train.zip`` (``train/A01 … A12/<id>.png + <id>.csv``), ``test.zip``
(flat ``test/``), the same as extracted folders, or any folder of cards. The label of a card is its
parent folder's name when that is one of the twelve condition codes.
"""

from __future__ import annotations

import io
import os
import zlib
import stat
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from shared.labels import CODES

CARD_SUFFIXES = (".png", ".csv")
JUNK_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}

MAX_MEMBER_BYTES = 20 * 1024 * 1024  # one card file
MAX_TOTAL_BYTES = 4 * 1024 * 1024 * 1024  # all members, uncompressed
MAX_MEMBERS = 1_000_000
MAX_RATIO = 200  # uncompressed / compressed, for members over 1 MiB
MAX_PROBLEMS_LISTED = 200


class ArchiveError(ValueError):
    """The input as a whole cannot be read (not a zip or folder, a zip bomb, too many members)."""


@dataclass
class CardFile:
    """One card of a source: its id (file stem), label if the folder gives one, and its file bytes."""

    id: str
    label: str | None
    folder: str
    png: bytes | None = None
    csv: bytes | None = None
    name: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """A member that was skipped, and why."""

    name: str
    reason: str


@dataclass
class _Entry:
    folder: str
    stem: str
    suffix: str
    ref: object  # ZipInfo or Path
    name: str


def _zip_member_name(info: zipfile.ZipInfo) -> str:
    """The member name as the archiver meant it: names without the UTF-8 flag are often GBK."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("gbk")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name


def _unsafe_reason(name: str) -> str | None:
    """Why a member name must not be used (absolute, drive letter, parent references), else None."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        return "absolute path in archive"
    if any(part == ".." for part in normalized.split("/")):
        return "path escapes the archive ('..')"
    return None


class CardSource:
    """Iterate the cards of a zip (path, bytes or binary file) or a folder, in a deterministic order.

    After (or during) iteration, ``problems`` lists skipped members (bounded) and ``problem_counts``
    counts them by reason; ``folders`` counts cards per folder name.

    Args:
        source: a ``.zip`` path, a folder path, zip bytes, or a binary file object holding a zip.
        shard: ``(k, n)`` to read only the k-th of n contiguous, equal slices of the sorted cards.

    Raises:
        ArchiveError: the source does not exist, is not a zip or folder, or breaks a whole-archive limit.
    """

    def __init__(self, source: str | os.PathLike | bytes | BinaryIO, shard: tuple[int, int] | None = None):
        self.problems: list[Problem] = []
        self.problem_counts: Counter[str] = Counter()
        self.folders: Counter[str] = Counter()
        self._zip: zipfile.ZipFile | None = None
        self._root: Path | None = None
        if shard is not None:
            k, n = shard
            if not (n >= 1 and 0 <= k < n):
                raise ValueError(f"shard {k}/{n} is not valid: need 0 <= K < N")
        self.shard = shard
        if isinstance(source, (bytes, bytearray)):
            self._open_zip(io.BytesIO(source), "uploaded archive")
        elif hasattr(source, "read"):
            self._open_zip(source, "uploaded archive")
        else:
            path = Path(source)
            if path.is_dir():
                self._root = path
            elif path.is_file():
                self._open_zip(path, path.name)
            else:
                raise ArchiveError(f"{path} does not exist")
        self._cards = self._index()

    # -- reading the index -----------------------------------------------------------------

    def _open_zip(self, file, label: str) -> None:
        try:
            self._zip = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ArchiveError(f"{label} is neither a folder nor a readable zip archive ({exc})") from exc

    def _skip(self, name: str, reason: str) -> None:
        self.problem_counts[reason] += 1
        if len(self.problems) < MAX_PROBLEMS_LISTED:
            self.problems.append(Problem(name, reason))

    def _classify(self, name: str) -> tuple[str, str, str] | None:
        """(folder, stem, suffix) of a card member, or None after recording why it is skipped."""
        parts = [p for p in name.replace("\\", "/").split("/") if p and p != "."]
        if not parts:
            return None
        if any(p == "__MACOSX" or p.startswith(".") for p in parts) or parts[-1].lower() in JUNK_NAMES:
            return None  # archiver junk: ignored silently
        pure = PurePosixPath(parts[-1])
        suffix = pure.suffix.lower()
        if suffix == ".zip":
            self._skip(name, "nested archive (not read)")
            return None
        if suffix not in CARD_SUFFIXES:
            self._skip(name, "not a card file (.png or .csv)")
            return None
        folder = parts[-2] if len(parts) > 1 else ""
        return folder, pure.stem, suffix

    def _index(self) -> list[tuple[str, str, dict[str, _Entry]]]:
        entries: dict[tuple[str, str], dict[str, _Entry]] = {}
        if self._zip is not None:
            infos = self._zip.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ArchiveError(f"archive has {len(infos):,} members; the limit is {MAX_MEMBERS:,}")
            total = sum(i.file_size for i in infos)
            if total > MAX_TOTAL_BYTES:
                raise ArchiveError(
                    f"archive would inflate to {total:,} bytes; the limit is {MAX_TOTAL_BYTES:,} (zip bomb?)"
                )
            seen: set[str] = set()
            for info in infos:
                name = _zip_member_name(info)
                if info.is_dir():
                    continue
                reason = _unsafe_reason(name)
                if reason is None and stat.S_ISLNK(info.external_attr >> 16):
                    reason = "symbolic link in archive"
                if reason is None and info.flag_bits & 0x1:
                    reason = "encrypted member"
                if reason is None and info.file_size > MAX_MEMBER_BYTES:
                    reason = f"member is {info.file_size:,} bytes; the limit is {MAX_MEMBER_BYTES:,}"
                if reason is None and info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(1, info.compress_size):
                    reason = "compression ratio too high (zip bomb?)"
                if reason is None and name in seen:
                    reason = "duplicate member name"
                if reason is not None:
                    self._skip(name, reason)
                    continue
                seen.add(name)
                kind = self._classify(name)
                if kind is not None:
                    folder, stem, suffix = kind
                    entries.setdefault((folder, stem), {})[suffix] = _Entry(folder, stem, suffix, info, name)
        else:
            root = self._root
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
                for filename in sorted(filenames):
                    path = Path(dirpath) / filename
                    name = path.relative_to(root).as_posix()
                    if path.is_symlink():
                        self._skip(name, "symbolic link (not followed)")
                        continue
                    kind = self._classify(name)
                    if kind is not None:
                        folder, stem, suffix = kind
                        entries.setdefault((folder, stem), {})[suffix] = _Entry(folder, stem, suffix, path, name)
        cards = sorted(((folder, stem, files) for (folder, stem), files in entries.items()), key=lambda c: c[:2])
        if self.shard is not None:
            k, n = self.shard
            size = len(cards)
            cards = cards[size * k // n : size * (k + 1) // n]
        for folder, _, _ in cards:
            self.folders[folder] += 1
        return cards

    # -- reading members -------------------------------------------------------------------

    def _read(self, entry: _Entry) -> bytes:
        if self._zip is not None:
            info: zipfile.ZipInfo = entry.ref  # type: ignore[assignment]
            with self._zip.open(info) as fh:
                data = fh.read(MAX_MEMBER_BYTES + 1)
        else:
            path: Path = entry.ref  # type: ignore[assignment]
            if path.stat().st_size > MAX_MEMBER_BYTES:
                raise ValueError(f"file is over {MAX_MEMBER_BYTES:,} bytes")
            data = path.read_bytes()
        if len(data) > MAX_MEMBER_BYTES:
            raise ValueError(f"member inflates past {MAX_MEMBER_BYTES:,} bytes")
        return data

    def __len__(self) -> int:
        return len(self._cards)

    def __iter__(self) -> Iterator[CardFile]:
        for folder, stem, files in self._cards:
            label = folder if folder in CODES else None
            primary = files.get(".png") or files[".csv"]
            card = CardFile(id=stem, label=label, folder=folder, name=primary.name)
            for suffix, entry in files.items():
                try:
                    data = self._read(entry)
                except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, ValueError, RuntimeError, EOFError) as exc:
                    # RuntimeError: zipfile's "encrypted"/"bad password"; BadZipFile/zlib.error: damaged data.
                    card.errors.append(f"{entry.name}: cannot read ({exc})")
                    continue
                if suffix == ".png":
                    card.png = data
                else:
                    card.csv = data
            yield card

    def close(self) -> None:
        """Close the underlying zip file, if any."""
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> "CardSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_cards(source: str | os.PathLike | bytes | BinaryIO, shard: tuple[int, int] | None = None) -> CardSource:
    """Open ``source`` (zip path/bytes/file or folder) as a :class:`CardSource` to iterate its cards."""
    return CardSource(source, shard=shard)
