"""Several sources in one run: ``--data sim field mycards.zip:0.3``.

A source is ``sim`` (the simulated set), ``field`` (the vendored public field cards,
``data/field/field-cards.csv``, the ones with one of our codes), a ``train.zip``, an extracted folder,
or a field-format ``.csv``; ``:SHARE`` after it asks that this fraction of each epoch's training draws
come from it. What this module does, one function per step:

* :func:`parse_sources` reads the ``--data`` words (one-line :class:`DataSpecError` on a bad one);
* :func:`load_sources` ingests each source on its own (and its series for series/dual networks) and
  :func:`merge_cards` concatenates them into one :class:`training.data.CardSet` whose card names are
  prefixed ``<source>/`` (one source keeps its names: a one-source run is exactly what it always was);
* :func:`split_by_source` splits every source into train/holdout on its own (per class, the usual rule),
  so a small real set is not swamped by the simulated one in the holdout either;
* :class:`ShareSampler` draws each epoch's training cards by the shares: a source gets
  ``share x (all training cards)`` draws, reached by repeating its cards (all of them, as often as
  fits, then a random rest) or by a random subset; sources without a share split what is left in
  proportion to their sizes. Without shares the sources are simply concatenated.

With ``--other-class``, :func:`other_sources` adds the sources of class "other" (:mod:`training.other_class`):
``<name>-other`` beside each field-format CSV source (its rows without one of our codes) and, for an image
network, ``notcards`` (generated not-a-card pictures). They have no share of their own: they take part in
what the shared sources leave, in proportion to their sizes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from shared.labels import CODES
from shared.preprocess import PreprocessConfig
from training.classes import OTHER, OTHER_CODE
from training.data import (FIELD_CARDS, CardSet, field_csv_to_folder, format_ingest_report, load_data,
                           resolve_source, split_indices)
from training.other_class import NOTCARDS, as_other, field_other_to_folder, notcards_to_folder, other_rows
from training.series_data import cards_with_series, load_strokes

ALIASES = ("sim", "field")
SHARE_TOLERANCE = 1e-6
ROLES = ("cards", "other", "notcards")  # a --data source; its other-condition cards; generated not-a-card pictures


class DataSpecError(ValueError):
    """A ``--data`` word that names no usable source, or shares that cannot be met."""


@dataclass(frozen=True)
class SourceSpec:
    """One source: its name (``sim``, ``field``, the file's stem, ``<name>-other``, ``notcards``), what was
    given, its share, and its ``role``: ``cards`` (a ``--data`` word), ``other`` (the cards of other
    conditions of the ``cards`` source named ``of``) or ``notcards`` (generated not-a-card pictures)."""

    name: str
    spec: str
    share: float | None = None
    role: str = "cards"
    of: str | None = None

    @property
    def is_sim(self) -> bool:
        """Whether this is the simulated set."""
        return self.spec == "sim" and self.role == "cards"

    @property
    def is_field_format(self) -> bool:
        """A field-format CSV source (``field`` or a ``.csv``): one card per row, rows of other conditions too."""
        return self.role == "cards" and (self.spec == "field" or Path(self.spec).suffix.lower() == ".csv")

    @property
    def is_other(self) -> bool:
        """A source of class "other" (``<name>-other`` or ``notcards``)."""
        return self.role != "cards"


def _split_share(word: str) -> tuple[str, float | None]:
    """``"x.zip:0.3"`` -> ``("x.zip", 0.3)``; a word without a numeric tail after ``:`` has no share."""
    head, sep, tail = word.rpartition(":")
    if not sep or not head:
        return word, None
    try:
        share = float(tail)
    except ValueError:
        return word, None
    if not 0 < share <= 1:
        raise DataSpecError(f"--data {word!r}: a share must be a fraction in (0, 1], got {tail}")
    return head, share


def data_words(data: str | list[str]) -> list[str]:
    """``--data`` as a list of words (one string is one word)."""
    return [data] if isinstance(data, str) else list(data)


def parse_sources(words: str | list[str]) -> list[SourceSpec]:
    """The sources named by ``--data``.

    Args:
        words: ``["sim", "field", "mycards.zip:0.3"]`` (a single string is one word).

    Returns:
        One :class:`SourceSpec` per word, in order.

    Raises:
        DataSpecError: an unknown source (not ``sim``/``field`` and no such zip, folder or ``.csv``), a
            name given twice, or shares out of range / adding up to more than there is.
    """
    words = data_words(words)
    if not words:
        raise DataSpecError("--data needs at least one source: sim, field, a zip, a folder or a field .csv")
    specs = []
    for word in words:
        spec, share = _split_share(word)
        if spec not in ALIASES and not Path(spec).exists():
            raise DataSpecError(f"--data {spec!r}: unknown source; use sim, field, a train.zip, a folder of "
                                f"A01 … A12/ or a field-cards .csv (optionally :SHARE, e.g. field:0.3)")
        name = spec if spec in ALIASES else Path(spec).stem
        specs.append(SourceSpec(name, spec, share))
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataSpecError(f"--data names {', '.join(twice)} more than once (sources are told apart by name)")
    shared = [s.share for s in specs if s.share is not None]
    total = float(sum(shared))
    if shared and len(shared) == len(specs) and abs(total - 1) > SHARE_TOLERANCE:
        raise DataSpecError(f"--data shares add up to {total:g}; when every source has one they must add up to 1")
    if shared and len(shared) < len(specs) and total >= 1 - SHARE_TOLERANCE:
        raise DataSpecError(f"--data shares add up to {total:g}; leave some (< 1) for the sources without one")
    return specs


def other_sources(specs: list[SourceSpec], input_kind: str = "image") -> list[SourceSpec]:
    """The sources of class "other" a ``--other-class`` run adds to ``specs`` (:mod:`training.other_class`).

    ``<name>-other`` for every field-format CSV source that has rows of other conditions, and ``notcards``
    (generated not-a-card pictures) for an image network.

    Raises:
        DataSpecError: a series or dual run without a field-format source with other-condition rows (it
            would have no card of class "other").
    """
    out = []
    for spec in specs:
        if spec.is_field_format and other_rows(FIELD_CARDS if spec.spec == "field" else spec.spec):
            out.append(SourceSpec(f"{spec.name}-{OTHER_CODE}", spec.spec, None, role="other", of=spec.name))
    if input_kind == "image":
        out.append(SourceSpec(NOTCARDS, NOTCARDS, None, role="notcards"))
    if not out:
        raise DataSpecError(f"--other-class: a {input_kind} network learns \"other\" from cards of other conditions: "
                            f"add a field-format CSV with rows without a code (e.g. --data … field)")
    return out


def resolve_path(spec: SourceSpec, cache_dir: str | os.PathLike | None = None, sim_per_class: int | None = None,
                 progress: bool = True) -> Path:
    """The folder or zip to read a source's cards from (``sim`` generated and ``field``/``.csv`` written once;
    a ``<name>-other`` source's rows of other conditions and the not-a-card pictures written once)."""
    if spec.role == "other":
        return field_other_to_folder(FIELD_CARDS if spec.spec == "field" else spec.spec, cache_dir=cache_dir)
    if spec.role == "notcards":
        return notcards_to_folder(cache_dir=cache_dir)
    if spec.is_sim:
        return resolve_source("sim", cache_dir, sim_per_class=sim_per_class, progress=progress)
    if spec.spec == "field":
        return field_csv_to_folder(FIELD_CARDS, cache_dir=cache_dir)
    if Path(spec.spec).suffix.lower() == ".csv":
        return field_csv_to_folder(spec.spec, cache_dir=cache_dir)
    return resolve_source(spec.spec, cache_dir)


@dataclass
class Sources:
    """The cards of every source of a run, merged: ``source_of[i]`` is card ``i``'s source (index into ``specs``)."""

    specs: list[SourceSpec]
    cards: CardSet
    series: np.ndarray | None
    source_of: np.ndarray
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)

    def indices(self, s: int) -> np.ndarray:
        """The card indices of source ``s``."""
        return np.flatnonzero(self.source_of == s)

    def provenance(self) -> list[dict[str, Any]]:
        """Name, what was given, fingerprint, cards and share of each source (config.json, meta.json)."""
        return [{"name": sp.name, "data": sp.spec, "fingerprint": self.reports[sp.name]["fingerprint"],
                 "cards": int((self.source_of == s).sum()), "share": sp.share,
                 **({"role": sp.role, "class": OTHER_CODE} if sp.is_other else {})}
                for s, sp in enumerate(self.specs)]

    def companion(self, s: int) -> int | None:
        """Index of the ``<name>-other`` source of source ``s`` (its cards of other conditions), or None."""
        name = self.specs[s].name
        return next((i for i, sp in enumerate(self.specs) if sp.role == "other" and sp.of == name), None)


def load_sources(specs: list[SourceSpec], config: PreprocessConfig, input_kind: str = "image",
                 cache_dir: str | os.PathLike | None = None, sim_per_class: int | None = None,
                 keep_ink: bool = False, keep_strokes: bool = False, progress: bool = True) -> Sources:
    """Ingest every source on its own (images, and the series for ``series``/``dual``), then merge them.

    Args:
        keep_ink: keep the outline masks (``--augment``); keep_strokes: the raw strokes (``--render-augment``).

    Raises:
        DataSpecError: a series or dual run on a source where no card has a usable CSV.
    """
    parts, series_parts, reports = [], [], {}
    for spec in specs:
        path = resolve_path(spec, cache_dir, sim_per_class, progress)
        # a source of class "other" is read without labels (its folders are conditions outside the twelve)
        cs = load_data(path, config, cache_dir=cache_dir, keep_ink=keep_ink, labelled=not spec.is_other,
                       progress=progress)
        if spec.is_other:
            cs = as_other(cs)
        series = None
        if input_kind != "image":  # cards without a usable CSV are left out, counted in the report
            cs, series = cards_with_series(cs, cache_dir=cache_dir, progress=progress)
            if not len(cs):
                raise DataSpecError(f"--input {input_kind}: no card of {spec.spec} ({path}) has a usable CSV")
        if keep_strokes:
            cs = replace(cs, strokes=load_strokes(cs, progress=progress))
        reports[spec.name] = {**cs.report, "fingerprint": cs.fingerprint}
        parts.append(cs)
        series_parts.append(series)
    cards = merge_cards(parts, [s.name for s in specs])
    source_of = np.concatenate([np.full(len(cs), s, np.int64) for s, cs in enumerate(parts)])
    series = None if input_kind == "image" else np.concatenate(series_parts)
    return Sources(specs, cards, series, source_of, reports)


def merge_cards(parts: list[CardSet], names: list[str]) -> CardSet:
    """One card set from several, in order; card names and ids prefixed ``<source>/`` when there are several.

    Raises:
        ValueError: the parts were preprocessed differently.
    """
    if len(parts) == 1:
        return parts[0]
    if any(p.preprocess != parts[0].preprocess for p in parts):
        raise ValueError("sources preprocessed differently cannot be merged")
    offsets = np.cumsum([0, *[len(p) for p in parts]])
    labels = np.concatenate([p.labels for p in parts])
    per_class = {code: int((labels == i).sum()) for i, code in enumerate(CODES)}
    if (labels == OTHER).any():
        per_class[OTHER_CODE] = int((labels == OTHER).sum())
    report = {"source": " + ".join(names), "cards": int(len(labels)), "per_class": per_class,
              "sources": {n: p.report for n, p in zip(names, parts)}}
    with_ink = all(p.ink is not None for p in parts)
    fingerprint = hashlib.sha256("\0".join(f"{n}:{p.fingerprint}" for n, p in zip(names, parts)).encode())
    return CardSet(
        names=[f"{n}/{x}" for n, p in zip(names, parts) for x in p.names],
        ids=[f"{n}/{x}" for n, p in zip(names, parts) for x in p.ids],
        labels=labels, inputs=np.concatenate([p.inputs for p in parts]),
        ink=np.concatenate([p.ink for p in parts]) if with_ink else None,
        report=report, fingerprint=fingerprint.hexdigest()[:20], source=" + ".join(p.source for p in parts),
        preprocess=parts[0].preprocess,
        example_idx=[int(i + off) for p, off in zip(parts, offsets) for i in p.example_idx],
        example_ink=np.concatenate([p.example_ink for p in parts]),
        strokes=[st for p in parts for st in (p.strokes or [None] * len(p))]
        if any(p.strokes is not None for p in parts) else None,
    )


def format_sources_report(sources: Sources) -> str:
    """The ingest report of each source (one paragraph per source)."""
    return "\n".join(format_ingest_report(sources.reports[s.name]) for s in sources.specs)


def split_by_source(sources: Sources, holdout: float, by: str, well_pattern: str,
                    seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Each source split into train/holdout on its own (:func:`training.data.split_indices`).

    The generated not-a-card pictures (``notcards``) all train: they are no real cards to measure on.

    Returns:
        (training card indices of each source, all holdout indices sorted).
    """
    names, labels = sources.cards.names, sources.cards.labels
    train, holdout_idx = [], []
    for s, spec in enumerate(sources.specs):
        idx = sources.indices(s)
        share = 0.0 if spec.role == "notcards" else holdout
        tr, ho = split_indices([names[i] for i in idx], labels[idx], share, by, well_pattern, seed)
        train.append(idx[tr])
        holdout_idx.append(idx[ho])
    return train, np.sort(np.concatenate(holdout_idx)).astype(np.int64)


class ShareSampler:
    """Each epoch's training draws, so that every source with a share gets that fraction of them.

    ``pools[s]`` are the training cards of source ``s``; an epoch has ``sum(len(pool))`` draws (the
    length of the plain concatenation, so the recipe's epochs mean the same amount of training).
    Draws of epoch ``e`` come from ``(seed, e)``, so a resumed run draws the same cards.
    """

    def __init__(self, pools: list[np.ndarray], shares: list[float | None], seed: int = 0):
        if len(pools) != len(shares):
            raise ValueError("one share (or None) per pool")
        if any(len(p) == 0 for p, sh in zip(pools, shares) if sh):
            raise DataSpecError("a source with a share has no training cards")
        self.pools = [np.asarray(p, np.int64) for p in pools]
        self.seed = seed
        total = sum(len(p) for p in self.pools)
        need = [int(round(sh * total)) if sh else 0 for sh in shares]
        rest = total - sum(need)
        free = [s for s, sh in enumerate(shares) if not sh]
        free_cards = sum(len(self.pools[s]) for s in free)
        for s in free:
            need[s] = int(round(rest * len(self.pools[s]) / free_cards)) if free_cards else 0
        if free and free_cards:  # rounding: the largest free source takes the difference
            need[max(free, key=lambda s: len(self.pools[s]))] += total - sum(need)
        elif not free:
            need[int(np.argmax(need))] += total - sum(need)
        self.need = need

    def __len__(self) -> int:
        return int(sum(self.need))

    def __call__(self, epoch: int) -> np.ndarray:
        """The training card indices of ``epoch`` (unshuffled; the loop shuffles them)."""
        out = []
        for s, (pool, need) in enumerate(zip(self.pools, self.need)):
            if not need:
                continue
            rng = np.random.default_rng(np.random.SeedSequence((self.seed, 3000 + epoch, s)))
            repeats, extra = divmod(need, len(pool))
            out += [np.tile(pool, repeats), rng.choice(pool, extra, replace=False)]
        return np.concatenate(out).astype(np.int64)

    def describe(self, specs: list[SourceSpec]) -> list[dict[str, Any]]:
        """Per source: training cards, draws per epoch and their share of the epoch."""
        return [{"name": sp.name, "train_cards": int(len(p)), "draws_per_epoch": int(n),
                 "epoch_share": round(n / max(len(self), 1), 4)} for sp, p, n in zip(specs, self.pools, self.need)]


def training_draws(pools: list[np.ndarray], specs: list[SourceSpec], seed: int) -> tuple[np.ndarray, ShareSampler | None]:
    """(epoch 0's training indices, the sampler for every epoch or None): plain concatenation without shares."""
    if not any(s.share for s in specs):
        return np.concatenate(pools).astype(np.int64), None
    sampler = ShareSampler(pools, [s.share for s in specs], seed)
    return sampler(0), sampler

