"""Ingest, split, balance and cache the cards a training run uses.

Stages (each a plain function):

* :func:`resolve_source` turns ``--data`` (``sim``, a ``train.zip`` or an extracted folder) into a path,
  generating the simulated set into the cache the first time; :func:`field_csv_to_folder` writes the
  field cards' CSV (one card per row) as such a folder.
* :func:`load_data` reads every card once through the shared safe reader
  (:func:`shared.dataset_io.iter_cards`) and the shared preprocessing, and caches the model inputs as
  ``uint8`` (the shared tail produces ``filled / 255``, so ``uint8`` holds it exactly). Unreadable cards,
  unknown folders and empty classes are counted and listed (bounded), never raised mid-epoch.
* :func:`split_indices` (per class, sorted, deterministic; optionally by well) and :func:`oversample`.

Training-only augmentation lives beside, one module per input: :mod:`training.image_augment`,
:mod:`training.series_augment`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from shared.cards import CardError, decode_card_png, read_card_csv, render_card_png, write_card_csv
from shared.dataset_io import iter_cards
from shared.labels import CODES
from shared.preprocess import PreprocessConfig, card_ink, preprocess_ink
from training.classes import OTHER, OTHER_CODE, label_code

log = logging.getLogger(__name__)

MAX_LISTED = 50  # bad cards listed by name in reports; all are counted
CACHE_FORMAT = 3  # bump when the cache layout or the card reading changes (3: trailing (0, 0) padding dropped)
DEFAULT_SIM = {"per_class": 800, "seed": 20240601}
# The public field cards, vendored (data/field/README.md: source, licence, columns); --data field reads them.
FIELD_CARDS = Path(__file__).resolve().parents[1] / "data" / "field" / "field-cards.csv"
DEFAULT_WELL_PATTERN = r"^(.+?)[_\-]"
EXAMPLES_PER_CLASS = 3


@dataclass
class CardSet:
    """The ingested cards of one source.

    ``inputs[i]`` is the model input of card ``i`` times 255 (``uint8 [H, W]``); ``ink[i]`` (only when
    requested) its outline mask, for augmentation.
    """

    names: list[str]
    ids: list[str]
    labels: np.ndarray  # int64 [N]
    inputs: np.ndarray  # uint8 [N, H, W]
    ink: np.ndarray | None
    report: dict[str, Any]
    fingerprint: str
    source: str
    preprocess: dict[str, Any] = field(default_factory=dict)
    example_idx: list[int] = field(default_factory=list)  # a few cards per class, for VisualDL images
    example_ink: np.ndarray | None = None  # their outline masks, uint8 [k, H, W]
    # raw (position, load) of each card with a usable CSV (None for the others), only when asked for:
    # what the renderer augmentation re-draws (training.series_data.load_strokes, training.render_augment)
    strokes: list | None = None

    def examples(self) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """code -> [(outline mask, model input)] for the example cards (raw vs preprocessed)."""
        out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for k, i in enumerate(self.example_idx):
            code = label_code(int(self.labels[i]))
            out.setdefault(code, []).append((self.example_ink[k], self.model_input([i])[0]))
        return out

    def __len__(self) -> int:
        return len(self.names)

    def model_input(self, idx) -> np.ndarray:
        """float32 ``[n, 1, H, W]`` for the given indices, exactly what the shared preprocessing returns."""
        return (self.inputs[idx].astype(np.float32) / np.float32(255.0))[:, None]


# ------------------------------------------------------------------------------------------
# Source
# ------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$CARDSENSE_CACHE`` or ``<repo>/.cache`` (ignored by git)."""
    env = os.environ.get("CARDSENSE_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".cache"


def resolve_source(data: str, cache_dir: str | os.PathLike | None = None, sim_per_class: int | None = None,
                   sim_seed: int | None = None, progress: bool = True) -> Path:
    """Return the path to read cards from; ``"sim"`` generates the simulated set once into the cache.

    Raises:
        FileNotFoundError: ``data`` is neither ``sim`` nor an existing zip or folder.
    """
    if data != "sim":
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"--data {data!r}: no such zip or folder (or use 'sim' for simulated cards)")
        return path
    per_class = sim_per_class or DEFAULT_SIM["per_class"]
    seed = DEFAULT_SIM["seed"] if sim_seed is None else sim_seed
    cache_dir = Path(cache_dir or default_cache_dir())
    out = cache_dir / f"sim-{per_class}-{seed}-{simulator_digest()}"
    train = out / "train"
    if not (out / "simulator.json").is_file() or not train.is_dir():
        from training.simulate import generate_dataset

        log.info("generating the simulated dataset (%d cards per class, seed %d) into %s", per_class, seed, out)
        generate_dataset(out, per_class, seed=seed, progress=progress)
    return train


def field_csv_to_folder(csv_path: str | os.PathLike = FIELD_CARDS, out_dir: str | os.PathLike | None = None,
                        cache_dir: str | os.PathLike | None = None) -> Path:
    """Turn ``field-cards.csv`` (one card per row, series only) into a competition-layout folder.

    Only rows with one of our condition codes are written (``<out>/<code>/<id>.png + .csv``); the PNG is
    drawn by :func:`shared.cards.render_card_png`, the renderer the competition format assumes.

    Args:
        csv_path: the field-format CSV (default the vendored ``data/field/field-cards.csv``).
        out_dir: the folder to write; default a folder in ``cache_dir`` keyed by the file's size and time.
        cache_dir: the cache (default :func:`default_cache_dir`).
    """
    csv_path = Path(csv_path)
    st = csv_path.stat()
    out = Path(out_dir or Path(cache_dir or default_cache_dir()) / f"field-{st.st_size}-{st.st_mtime_ns}-v{CACHE_FORMAT}")
    if (out / ".complete").is_file():
        return out
    written = 0
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code = (row.get("code") or "").strip()
            if code not in CODES:
                continue
            pos = np.array(row["position_m"].split(), float)
            load = np.array(row["load_kN"].split(), float)
            folder = out / code
            folder.mkdir(parents=True, exist_ok=True)
            try:
                atomic_write_bytes(folder / f"{row['id']}.png", render_card_png(pos, load))
            except CardError as exc:
                log.warning("field card %s not rendered: %s", row["id"], exc)
                continue
            write_card_csv(folder / f"{row['id']}.csv", pos, load)
            written += 1
    atomic_write_text(out / ".complete", f"{written}\n")
    return out


def simulator_digest() -> str:
    """Short hash of the simulator's source, so a changed simulator never reuses stale cached cards."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha1()
    for f in sorted([root / "simulate.py", *(root / "simulator").glob("*.py")]):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:8]


def _quick_key(path: Path) -> str:
    """A cheap identity of a source (names, sizes, mtimes) to find its cache; content is fingerprinted on ingest."""
    h = hashlib.sha1()
    h.update(str(path.resolve()).encode())
    if path.is_file():
        st = path.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for f in sorted(filenames):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{os.path.relpath(os.path.join(dirpath, f), path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# Ingest
# ------------------------------------------------------------------------------------------


def _card_ink(card) -> tuple[np.ndarray | None, str | None, list[str]]:
    """Outline mask of a card: from its PNG, else rendered from its CSV. Returns (ink, kind, errors)."""
    errors = list(card.errors)
    if card.png is not None:
        try:
            return decode_card_png(card.png), "png", errors
        except CardError as exc:
            errors.append(f"png: {exc}")
    if card.csv is not None:
        try:
            return card_ink(read_card_csv(card.csv)), "csv", errors
        except CardError as exc:
            errors.append(f"csv: {exc}")
    if card.png is None and card.csv is None and not errors:
        errors.append("no readable .png or .csv")
    return None, None, errors


def inks_resized(ink: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """An outline mask at the configured input size (competition PNGs already are)."""
    if ink.shape == (config.height, config.width):
        return ink
    return cv2.resize(ink, (config.width, config.height), interpolation=cv2.INTER_AREA)


def load_data(source: str | os.PathLike, config: PreprocessConfig | None = None,
              cache_dir: str | os.PathLike | None = None, keep_ink: bool = False, labelled: bool = True,
              progress: bool = True, use_cache: bool = True) -> CardSet:
    """Read, preprocess and cache every card of ``source`` (zip or folder).

    Args:
        source: a competition ``train.zip``/``test.zip`` or folder of cards.
        config: shared preprocessing configuration (default method when None).
        cache_dir: where the arrays are cached (keyed by source identity and preprocessing version).
        keep_ink: also keep the outline masks (needed for augmentation).
        labelled: keep only cards whose folder is a condition code (training); else keep all (label -1).
        progress: show a tqdm bar.
        use_cache: read/write the cache.

    Returns:
        A :class:`CardSet`; ``report`` counts cards per class, skipped cards by reason (with a bounded list
        of names), unknown folders and empty classes.

    Raises:
        shared.dataset_io.ArchiveError: the source as a whole is unreadable (not a zip/folder, a zip bomb).
        ValueError: no usable card at all.
    """
    from tqdm import tqdm

    config = config or PreprocessConfig()
    source = Path(source)
    cache = None
    if use_cache:
        key = f"{_quick_key(source)}-{config.version}-{config.height}x{config.width}-{int(labelled)}-v{CACHE_FORMAT}"
        cache = Path(cache_dir or default_cache_dir()) / "ingest" / key
        if (cache / "index.json").is_file() and (not keep_ink or (cache / "ink.npy").is_file()):
            return _load_cache(cache, keep_ink)

    names, ids, labels, inputs, inks = [], [], [], [], []
    example_idx, example_ink, per_label_examples = [], [], Counter()
    skipped: Counter[str] = Counter()
    listed: list[dict[str, str]] = []
    unknown_folders: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    digest = hashlib.sha256()
    with iter_cards(source) as cards:
        bar = tqdm(cards, total=len(cards), desc="ingest", unit="card", disable=not progress, mininterval=1.0)
        for card in bar:
            if card.label is None and labelled:
                unknown_folders[card.folder or "(top level)"] += 1
                continue
            ink, kind, errors = _card_ink(card)
            arr = None
            if ink is not None:
                try:
                    arr = preprocess_ink(ink, config)
                except CardError as exc:
                    errors.append(f"{kind}: {exc}")
            if arr is None:
                reason = errors[-1].split(":")[0] if errors else "unreadable"
                skipped[reason] += 1
                if len(listed) < MAX_LISTED:
                    listed.append({"name": card.name, "error": "; ".join(errors)})
                continue
            kinds[kind] += 1
            if per_label_examples[card.label] < EXAMPLES_PER_CLASS:
                per_label_examples[card.label] += 1
                example_idx.append(len(names))
                example_ink.append(inks_resized(ink, config))
            names.append(card.name)
            ids.append(card.id)
            labels.append(CODES.index(card.label) if card.label is not None else -1)
            inputs.append(np.rint(arr[0] * 255.0).astype(np.uint8))
            if keep_ink:
                inks.append(inks_resized(ink, config))
            digest.update(f"{card.name}\0{card.label}\0".encode())
            digest.update(hashlib.sha1((card.png or b"") + b"\0" + (card.csv or b"")).digest())
        problems = [{"name": p.name, "reason": p.reason} for p in cards.problems[:MAX_LISTED]]
        problem_counts = dict(cards.problem_counts)

    if not names:
        raise ValueError(f"{source}: no usable card found (skipped: {dict(skipped) or 'none'}; "
                         f"unknown folders: {dict(unknown_folders) or 'none'})")
    labels_arr = np.asarray(labels, np.int64)
    per_class = {code: int((labels_arr == i).sum()) for i, code in enumerate(CODES)}
    report = {
        "source": str(source),
        "cards": len(names),
        "per_class": per_class,
        "empty_classes": [c for c, n in per_class.items() if n == 0] if labelled else [],
        "unknown_folders": dict(unknown_folders),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(skipped),
        "skipped_listed": listed,
        "archive_problems": problem_counts,
        "archive_problems_listed": problems,
        "read_from": dict(kinds),
    }
    cs = CardSet(names=names, ids=ids, labels=labels_arr, inputs=np.stack(inputs),
                 ink=np.stack(inks) if keep_ink else None, report=report, fingerprint=digest.hexdigest()[:20],
                 source=str(source), preprocess=config.to_dict(), example_idx=example_idx,
                 example_ink=np.stack(example_ink))
    if cache is not None:
        _write_cache(cache, cs)
    return cs


def _write_cache(cache: Path, cs: CardSet) -> None:
    try:
        with atomic_directory(cache) as tmp:
            np.save(tmp / "inputs.npy", cs.inputs)
            np.save(tmp / "example_ink.npy", cs.example_ink)
            if cs.ink is not None:
                np.save(tmp / "ink.npy", cs.ink)
            index = {"names": cs.names, "ids": cs.ids, "labels": cs.labels.tolist(), "report": cs.report,
                     "fingerprint": cs.fingerprint, "source": cs.source, "preprocess": cs.preprocess,
                     "example_idx": cs.example_idx}
            atomic_write_text(tmp / "index.json", json.dumps(index, ensure_ascii=False))
    except OSError as exc:  # a read-only cache is not a reason to fail the run
        log.warning("could not write the ingest cache %s: %s", cache, exc)


def _load_cache(cache: Path, keep_ink: bool) -> CardSet:
    index = json.loads((cache / "index.json").read_text(encoding="utf-8"))
    inputs = np.load(cache / "inputs.npy", mmap_mode="r")
    ink = np.load(cache / "ink.npy", mmap_mode="r") if keep_ink else None
    log.info("ingest: %d cards from cache %s", len(index["names"]), cache)
    return CardSet(names=index["names"], ids=index["ids"], labels=np.asarray(index["labels"], np.int64),
                   inputs=np.asarray(inputs), ink=None if ink is None else np.asarray(ink), report=index["report"],
                   fingerprint=index["fingerprint"], source=index["source"], preprocess=index["preprocess"],
                   example_idx=index["example_idx"], example_ink=np.load(cache / "example_ink.npy"))


def format_ingest_report(report: dict[str, Any]) -> str:
    """One human-readable paragraph about what ingest read and skipped."""
    lines = [f"ingest: {report['cards']} cards from {report['source']}",
             "  per class: " + ", ".join(f"{c} {n}" for c, n in report["per_class"].items())]
    if report.get("empty_classes"):
        lines.append(f"  empty classes (no usable card): {', '.join(report['empty_classes'])}")
    if report.get("unknown_folders"):
        lines.append("  ignored folders (not a condition code): "
                     + ", ".join(f"{k} ({v} cards)" for k, v in report["unknown_folders"].items()))
    if report.get("skipped"):
        lines.append(f"  skipped {report['skipped']} unreadable cards: {report['skipped_by_reason']}")
        for item in report["skipped_listed"][:10]:
            lines.append(f"    {item['name']}: {item['error']}")
        if report["skipped"] > 10:
            lines.append(f"    … {report['skipped'] - 10} more (see data_report.json)")
    if report.get("archive_problems"):
        lines.append(f"  archive members skipped: {report['archive_problems']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Split and balance
# ------------------------------------------------------------------------------------------


def well_of(name: str, pattern: str = DEFAULT_WELL_PATTERN) -> str:
    """Well id from a card file name (first regex group on the file stem), or the stem itself."""
    stem = Path(name.replace("\\", "/")).stem
    m = re.search(pattern, stem)
    return m.group(1) if m and m.groups() else stem


def _unit_hash(text: str, seed: int) -> float:
    h = hashlib.sha1(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_indices(names: list[str], labels: np.ndarray, holdout: float = 0.1, by: str = "card",
                  well_pattern: str = DEFAULT_WELL_PATTERN, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train / holdout split.

    ``by="card"``: per class, cards sorted by name, the first ``int(n * (1 - holdout))`` train, the rest
    holdout (the notebook's rule). ``by="well"``: every well id (see :func:`well_of`) goes wholly to one
    side, chosen by a hash of the id, so no well is on both sides and the result does not depend on
    file order.

    Raises:
        ValueError: holdout outside [0, 1) or an unknown ``by``.
    """
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    labels = np.asarray(labels)
    train, test = [], []
    if by == "card":
        for c in np.unique(labels):
            idx = sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: names[i])
            n_train = int(len(idx) * (1 - holdout))
            if holdout > 0 and n_train == len(idx) and len(idx) > 1:
                n_train -= 1  # every class with two or more cards has a holdout card
            n_train = max(n_train, min(len(idx), 1))  # a lone card is better used for training
            train += idx[:n_train]
            test += idx[n_train:]
    elif by == "well":
        for i, name in enumerate(names):
            (test if _unit_hash(well_of(name, well_pattern), seed) < holdout else train).append(i)
    else:
        raise ValueError(f"unknown split {by!r}; choose 'card' or 'well'")
    return np.asarray(sorted(train), np.int64), np.asarray(sorted(test), np.int64)


def oversample(train_idx: np.ndarray, labels: np.ndarray, target: int | None, seed: int = 0) -> np.ndarray:
    """Top every class of the training side up to ``target`` cards by random repeats (the notebook's balancing).

    Classes already at or above ``target`` keep all their cards; ``target`` None or 0 returns ``train_idx``.
    """
    if not target:
        return np.asarray(train_idx, np.int64)
    rng = np.random.default_rng(np.random.SeedSequence((seed, 7500)))
    labels = np.asarray(labels)
    out = [np.asarray(train_idx, np.int64)]
    for c in np.unique(labels[train_idx]):
        idx = train_idx[labels[train_idx] == c]
        if 0 < len(idx) < target:
            out.append(rng.choice(idx, target - len(idx), replace=True))
    return np.concatenate(out)


def write_lists(run_dir: Path, cs: CardSet, train_idx: np.ndarray, test_idx: np.ndarray) -> None:
    """``train.txt`` / ``test.txt``: ``<card path in the source> <label index>`` per line (the notebook's format)."""
    for fname, idx in (("train.txt", train_idx), ("test.txt", test_idx)):
        text = "".join(f"{cs.names[i]} {int(cs.labels[i])}\n" for i in idx)
        atomic_write_text(run_dir / fname, text)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Cards per condition code (and ``other`` when there are cards of that class)."""
    labels = np.asarray(labels)
    counts = {code: int((labels == i).sum()) for i, code in enumerate(CODES)}
    if (labels == OTHER).any():
        counts[OTHER_CODE] = int((labels == OTHER).sum())
    return counts
