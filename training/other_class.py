"""The 13th output, "other" (none of the twelve): which cards teach it (``--other-class``).

Outlier exposure (Hendrycks et al., "Deep Anomaly Detection with Outlier Exposure", ICLR 2019): the network
gets one output more than there are conditions and learns it from examples of what is *not* one of them.
Measured by ``scripts/open_set_study.py`` on the field set's five other conditions, each left out of
training in turn: AUROC 0.756 (image) / 0.743 (series) against 0.56-0.68 for max-softmax, energy and
Mahalanobis scores of a twelve-output network, which is why the shipped models learn it.

A run with ``--other-class`` has, beside its ``--data`` sources (:mod:`training.sources`), these sources of
class "other" (label index :data:`training.classes.OTHER` = 12, after the twelve codes):

* ``<name>-other`` for every field-format CSV source (the ``field`` alias: the vendored
  ``data/field/field-cards.csv``): its rows without one of our codes, i.e. cards of conditions outside the
  twelve (491 in the vendored set: double valve leak, tubing leak, heavy oil, broken rod, flowing well),
  written by :func:`field_other_to_folder` as ``<condition>/<id>.png + .csv`` so each card's name says its
  condition. ``--folds`` folds them with their source: every one is then scored by a network that never saw it.
* ``notcards`` for an image network: generated pictures in the card format that are not cards at all
  (:mod:`training.notcards`, seeds :data:`training.notcards.TRAINING_SEEDS`, disjoint from the tests' and the
  study's), written by :func:`notcards_to_folder`. All of them train (no holdout: they are not real cards, and
  the structural check :mod:`shared.card_check` catches most of them before the model anyway). A series or dual
  network gets none: such a picture has no samples.

The twelve labels' figures (accuracy, confusion, per-class report) stay over the twelve; "other" is reported
on its own (:func:`training.metrics.other_figures`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from shared.atomic import atomic_write_bytes, atomic_write_text
from shared.cards import CardError, render_card_png, write_card_csv
from shared.labels import CODES
from training.classes import OTHER, OTHER_CODE
from training.data import CACHE_FORMAT, CardSet, default_cache_dir
from training.notcards import TRAINING_SEEDS, notcard_images

NOTCARDS = "notcards"  # the name of the generated not-a-card source


def other_rows(csv_path: str | os.PathLike) -> int:
    """How many rows of a field-format CSV have no code of ours (cards of other conditions)."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return sum(1 for row in csv.DictReader(fh) if (row.get("code") or "").strip() not in CODES)


def field_other_to_folder(csv_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The rows of a field-format CSV *without* one of our codes, as a folder ``<condition>/<id>.png + .csv``.

    The counterpart of :func:`training.data.field_csv_to_folder` (which writes the rows *with* a code); the
    condition folder is the row's ``source_label`` (``other`` when empty), so a card's name says what it is.
    Written once into the cache, keyed by the file's size and time.

    Raises:
        FileNotFoundError: no such CSV.
    """
    csv_path = Path(csv_path)
    st = csv_path.stat()
    out = Path(cache_dir or default_cache_dir()) / f"field-other-{st.st_size}-{st.st_mtime_ns}-v{CACHE_FORMAT}"
    if (out / ".complete").is_file():
        return out
    written = 0
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if (row.get("code") or "").strip() in CODES:
                continue
            condition = "".join(ch for ch in (row.get("source_label") or "").strip() if ch.isalnum() or ch in "_-")
            folder = out / (condition or OTHER_CODE)
            folder.mkdir(parents=True, exist_ok=True)
            pos = np.array(row["position_m"].split(), float)
            load = np.array(row["load_kN"].split(), float)
            try:
                atomic_write_bytes(folder / f"{row['id']}.png", render_card_png(pos, load))
            except CardError:  # an unreadable row is left out, as field_csv_to_folder does
                continue
            write_card_csv(folder / f"{row['id']}.csv", pos, load)
            written += 1
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / ".complete", f"{written}\n")
    return out


def notcards_to_folder(seeds: tuple[int, ...] = TRAINING_SEEDS, cache_dir: str | os.PathLike | None = None) -> Path:
    """The generated not-a-card pictures of ``seeds`` (:func:`training.notcards.notcard_images`) as ``other/<name>.png``.

    Written once into the cache; the generator is deterministic, so the key is the seeds and the format.
    """
    out = Path(cache_dir or default_cache_dir()) / f"notcards-{'-'.join(map(str, seeds))}-v{CACHE_FORMAT}"
    if (out / ".complete").is_file():
        return out
    folder = out / OTHER_CODE
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [p for seed in seeds for p in notcard_images(seed)]
    for p in pictures:
        atomic_write_bytes(folder / f"{p.name}.png", p.png)
    atomic_write_text(out / ".complete", f"{len(pictures)}\n")
    return out


def as_other(cs: CardSet) -> CardSet:
    """The cards of ``cs`` (read without labels) labelled "other"; the report counts them under ``other``."""
    cs.labels = np.full(len(cs), OTHER, np.int64)
    cs.report = {**cs.report, "per_class": {**{c: 0 for c in CODES}, OTHER_CODE: len(cs)}, "empty_classes": []}
    return cs


def condition_of(name: str) -> str:
    """The condition folder of an "other" card's name (``field-other/ROD_BROKEN/field0042.png`` -> ``ROD_BROKEN``)."""
    parts = name.replace("\\", "/").split("/")
    return parts[-2] if len(parts) >= 2 else OTHER_CODE
