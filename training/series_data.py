"""Series arrays for the cards of a :class:`training.data.CardSet` (``--input series`` and ``--input dual``).

:func:`load_series` reads every card's ``<id>.csv`` once through the shared safe reader and the shared
series preprocessing (:func:`shared.series.preprocess_series_csv`), aligned with the card set's order and
cached like the image arrays (``.cache/ingest/series-<key>/``). A card without a usable CSV gets a
``False`` in the mask and a reason; :func:`restrict` drops those cards (with counts in the report) for
``--input series`` and ``--input dual``. :mod:`training.inputs` turns the arrays into network batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from shared.atomic import atomic_directory, atomic_write_text
from shared.cards import CardError, checked_card_arrays, read_card_csv
from shared.dataset_io import iter_cards
from shared.series import SeriesConfig, preprocess_series_csv
from training.data import CACHE_FORMAT, MAX_LISTED, CardSet, _quick_key, default_cache_dir

log = logging.getLogger(__name__)


def _card_csvs(cs: CardSet, desc: str, progress: bool) -> Iterator[tuple[int, str, bytes | None]]:
    """``(index in cs, name, CSV bytes or None)`` of every card of ``cs``, read again from ``cs.source``."""
    from tqdm import tqdm

    pos = {name: i for i, name in enumerate(cs.names)}
    with iter_cards(Path(cs.source)) as cards:
        for card in tqdm(cards, total=len(cards), desc=desc, unit="card", disable=not progress, mininterval=1.0):
            i = pos.get(card.name)
            if i is not None:
                yield i, card.name, card.csv


def load_series(cs: CardSet, config: SeriesConfig | None = None, cache_dir: str | os.PathLike | None = None,
                progress: bool = True, use_cache: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Series model inputs of every card of ``cs`` (read again from ``cs.source``).

    Returns:
        ``(series float32 [N, 5, L], ok bool [N], report)``; rows with ``ok == False`` are zeros and the
        report counts them by reason (first :data:`training.data.MAX_LISTED` listed by name).
    """
    config = config or SeriesConfig()
    source = Path(cs.source)
    names_key = hashlib.sha1("\n".join(cs.names).encode()).hexdigest()[:12]
    cache = None
    if use_cache:
        key = f"series-{_quick_key(source)}-{names_key}-{config.version}-{config.length}-v{CACHE_FORMAT}"
        cache = Path(cache_dir or default_cache_dir()) / "ingest" / key
        if (cache / "index.json").is_file():
            report = json.loads((cache / "index.json").read_text(encoding="utf-8"))
            return np.load(cache / "series.npy"), np.load(cache / "ok.npy"), report
    series = np.zeros((len(cs), *config.input_shape), np.float32)
    ok = np.zeros(len(cs), bool)
    reasons: Counter[str] = Counter()
    listed = []
    for i, name, csv in _card_csvs(cs, "series", progress):
        if csv is None:
            reasons["no csv"] += 1
            if len(listed) < MAX_LISTED:
                listed.append({"name": name, "error": "no .csv beside the card"})
            continue
        try:
            series[i] = preprocess_series_csv(csv, config)
            ok[i] = True
        except CardError as exc:
            reasons["csv unreadable"] += 1
            if len(listed) < MAX_LISTED:
                listed.append({"name": name, "error": f"csv: {exc}"})
    report = {"with_series": int(ok.sum()), "without_series": int((~ok).sum()), "by_reason": dict(reasons),
              "listed": listed, "series_preprocess": config.to_dict()}
    if cache is not None:
        try:
            with atomic_directory(cache) as tmp:
                np.save(tmp / "series.npy", series)
                np.save(tmp / "ok.npy", ok)
                atomic_write_text(tmp / "index.json", json.dumps(report, ensure_ascii=False))
        except OSError as exc:
            log.warning("could not write the series cache %s: %s", cache, exc)
    return series, ok, report


def restrict(cs: CardSet, keep: np.ndarray) -> CardSet:
    """The cards of ``cs`` where ``keep`` is True (a new :class:`CardSet`; the examples are remapped)."""
    keep = np.asarray(keep, bool)
    if keep.all():
        return cs
    new_pos = np.cumsum(keep) - 1
    ex = [(k, i) for k, i in enumerate(cs.example_idx) if keep[i]]
    return replace(cs, names=[n for n, k in zip(cs.names, keep) if k], ids=[n for n, k in zip(cs.ids, keep) if k],
                   labels=cs.labels[keep], inputs=cs.inputs[keep], ink=None if cs.ink is None else cs.ink[keep],
                   example_idx=[int(new_pos[i]) for _, i in ex],
                   example_ink=cs.example_ink[[k for k, _ in ex]] if ex else cs.example_ink[:0],
                   strokes=None if cs.strokes is None else [st for st, k in zip(cs.strokes, keep) if k])


def cards_with_series(cs: CardSet, config: SeriesConfig | None = None, cache_dir: str | os.PathLike | None = None,
                      progress: bool = True) -> tuple[CardSet, np.ndarray]:
    """The cards of ``cs`` that have a usable CSV, and their series (what series and dual models read).

    Returns:
        ``(cards, series float32 [n, 5, L])``; ``cards.report["series"]`` counts the cards left out, by reason.
    """
    series, ok, report = load_series(cs, config, cache_dir=cache_dir, progress=progress)
    kept = restrict(cs, ok)
    kept.report = {**cs.report, "series": report}
    return kept, series[ok]


def load_strokes(cs: CardSet, progress: bool = True) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """The raw stroke ``(position, load)`` of every card of ``cs`` that has a usable CSV, else None.

    What the training-only renderer augmentation re-draws (:mod:`training.render_augment`); recorder
    padding is dropped as everywhere (:func:`shared.cards.checked_card_arrays`). Only for one-source card
    sets (``cs.source`` is read again), so a multi-source run loads each source's strokes before merging.
    """
    strokes: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(cs)
    for i, _, csv in _card_csvs(cs, "strokes", progress):
        if csv is None:
            continue
        try:
            card = read_card_csv(csv)
            strokes[i] = checked_card_arrays(card.position, card.load)
        except CardError:  # counted by the series report when it matters; the card keeps its PNG
            continue
    return strokes
