"""Score every card of a ``test.zip`` or a folder with an exported model; write a predictions CSV.

    python -m serving.batch INPUT --out predictions.csv [--model DIR] [--batch-size N] [--shard K/N]

INPUT is a zip or a folder, flat or with class sub-folders (``A01`` ... ``A12``); cards are read
with the shared safe reader (``shared.dataset_io``). One row per card::

    id,label,name,confidence,A01,...,A12,error

``id`` is the file stem; the PNG is used when a card has one, else its CSV. A card that cannot be
read gets an ``error`` and empty prediction columns; it never stops the run. The CSV is written
atomically. At the end a summary (cards per label, errors, and accuracy when INPUT is labelled)
is printed. The model, preprocessing and batching are those of the web service, so both give the
same probabilities for the same card.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import numpy as np

from shared.atomic import atomic_output_file
from shared.cards import CardError
from shared.dataset_io import CARD_SUFFIXES, ArchiveError, CardFile, CardSource, iter_cards

log = logging.getLogger(__name__)

PROB_FORMAT = ".8f"


def card_payload(card: CardFile) -> tuple[str, bytes]:
    """Which file of a card is scored: ``("png", bytes)`` if it has a PNG, else ``("csv", bytes)``.

    Raises:
        CardError: the card has neither file readable (the message says why).
    """
    if card.png is not None:
        return "png", card.png
    if card.csv is not None:
        return "csv", card.csv
    reason = "; ".join(card.errors) or "no PNG or CSV file"
    raise CardError(f"card {card.id} cannot be read: {reason}")


def skipped_card_members(source: CardSource, seen_ids: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Members the safe reader refused that look like card files: ``(id, name, reason)``.

    They are cards that could not be read (too big, encrypted, unsafe name, ...) and are reported as
    error rows; other refused members (a README, a nested zip) go to the summary only.
    """
    out = []
    for problem in source.problems:
        pure = PurePosixPath(problem.name.replace("\\", "/"))
        if pure.suffix.lower() in CARD_SUFFIXES:
            folder = pure.parent.name
            if (folder, pure.stem) not in seen_ids:
                out.append((pure.stem, problem.name, problem.reason))
    return out


@dataclass
class Row:
    """One scored card: probabilities or an error."""

    id: str
    file: str
    true_label: str | None
    probs: np.ndarray | None = None
    error: str = ""


def score_source(
    predictor, source: CardSource, batch_size: int, progress=None, report_skipped: bool = True, workers: int = 1
) -> Iterator[Row]:
    """Yield one :class:`Row` per card of ``source``, in the source's order, predicting in batches.

    Args:
        predictor: a :class:`serving.predictor.Predictor`.
        source: an opened :class:`shared.dataset_io.CardSource`.
        batch_size: cards per predictor call.
        progress: optional tqdm bar, advanced once per card.
        report_skipped: end with error rows for card files the safe reader refused (the reader
            lists them for the whole archive, so of several shards only the last reports them).
        workers: threads that decode and preprocess cards (OpenCV releases the GIL); decoding,
            not the network, is the slow part of batch scoring.
    """
    seen: set[tuple[str, str]] = set()

    def prepare(card: CardFile) -> tuple[Row, np.ndarray | None]:
        row = Row(card.id, card.name, card.label)
        try:
            kind, data = card_payload(card)
            return row, predictor.prepare(data, kind)
        except CardError as exc:
            row.error = str(exc)
            return row, None

    def score(chunk: list[CardFile], pool) -> list[Row]:
        prepared = list(pool.map(prepare, chunk)) if pool is not None else [prepare(c) for c in chunk]
        good = [(row, x) for row, x in prepared if x is not None]
        if good:
            probs = predictor.predict(np.stack([x for _, x in good]))
            for (row, _), p in zip(good, probs):
                row.probs = p
        if progress is not None:
            progress.update(len(chunk))
        return [row for row, _ in prepared]

    pool = ThreadPoolExecutor(workers, thread_name_prefix="prepare") if workers > 1 else None
    try:
        chunk: list[CardFile] = []
        for card in source:
            seen.add((card.folder, card.id))
            chunk.append(card)
            if len(chunk) >= batch_size:
                yield from score(chunk, pool)
                chunk = []
        if chunk:
            yield from score(chunk, pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if not report_skipped:
        return
    for card_id, name, reason in skipped_card_members(source, seen):
        yield Row(card_id, name, None, error=f"{name}: skipped: {reason}")


def _write_rows(writer, predictor, rows: Iterator[Row], summary: Counter, truth: Counter) -> None:
    codes = predictor.codes
    names = {x["code"]: x["name"] for x in predictor.labels}
    for row in rows:
        if row.probs is None:
            writer.writerow([row.id, "", "", "", *([""] * len(codes)), row.error])
            summary["<error>"] += 1
            continue
        best = int(np.argmax(row.probs))
        label = codes[best]
        summary[label] += 1
        if row.true_label is not None:
            truth["labelled"] += 1
            truth["correct"] += int(label == row.true_label)
        writer.writerow(
            [row.id, label, names[label], format(float(row.probs[best]), PROB_FORMAT),
             *(format(float(p), PROB_FORMAT) for p in row.probs), ""]
        )


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of the batch scorer."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.batch",
        description="Classify every card of a test.zip or folder and write a predictions CSV.",
    )
    parser.add_argument("input", help="test.zip, train.zip or a folder of cards (flat or with A01..A12 sub-folders)")
    parser.add_argument("--out", default="predictions.csv", help="output CSV (written atomically; default predictions.csv)")
    parser.add_argument(
        "--model", default=os.environ.get("CARDSENSE_MODEL_DIR") or None,
        help="exported model folder (default $CARDSENSE_MODEL_DIR or models/default)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="cards per inference call (default 32)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default=os.environ.get("CARDSENSE_DEVICE", "auto"))
    parser.add_argument(
        "--cpu-threads", type=int, default=os.cpu_count() or 1, help="math-library threads on CPU (default: all cores)"
    )
    parser.add_argument(
        "--shard", type=_shard, default=None, metavar="K/N",
        help="score only the K-th of N equal slices of the sorted cards (0 <= K < N), e.g. one per pod of an "
             "indexed Job; the shard outputs concatenated in K order equal the unsharded file",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="threads decoding cards (default: all cores)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _shard(value: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {value!r}: expected K/N, e.g. 0/8") from None
    if not (n >= 1 and 0 <= k < n):
        raise argparse.ArgumentTypeError(f"--shard {value!r}: need 0 <= K < N")
    return k, n


def main(argv: list[str] | None = None) -> int:
    """Run the batch scorer; returns the exit status (0 ok, 2 unreadable input or model)."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1 or args.workers < 1:
        print("error: --batch-size and --workers must be at least 1", file=sys.stderr)
        return 2
    import cv2  # noqa: PLC0415

    cv2.setNumThreads(0)  # Paddle uses the cores; cv2's pool would only compete
    from serving.config import DEFAULT_MODEL_DIR  # noqa: PLC0415
    from serving.predictor import Predictor, StartupError  # noqa: PLC0415 - heavy (Paddle)

    try:
        source = iter_cards(args.input, shard=args.shard)
    except ArchiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        predictor = Predictor(
            args.model or DEFAULT_MODEL_DIR, device=args.device, cpu_threads=args.cpu_threads,
            pool_size=1, batch_sizes=sorted({1, args.batch_size}),
        )
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        source.close()
        return 2

    from tqdm import tqdm  # noqa: PLC0415

    last_shard = args.shard is None or args.shard[0] == args.shard[1] - 1
    summary: Counter[str] = Counter()
    truth: Counter[str] = Counter()
    started = time.perf_counter()
    with source, tqdm(total=len(source), unit="card", disable=args.no_progress, dynamic_ncols=True) as bar:
        with atomic_output_file(args.out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "label", "name", "confidence", *predictor.codes, "error"])
            _write_rows(writer, predictor, score_source(
                predictor, source, args.batch_size, bar, report_skipped=last_shard, workers=args.workers
            ), summary, truth)
    elapsed = time.perf_counter() - started

    total = sum(summary.values())
    errors = summary.pop("<error>", 0)
    print(f"\n{total} card(s) scored in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} cards/s) -> {args.out}")
    print(f"model {predictor.name} ({predictor.version}) on {predictor.device}")
    names = {x["code"]: x["name"] for x in predictor.labels}
    for code in predictor.codes:
        if summary[code]:
            print(f"  {code}   {summary[code]:>7}  {names[code]}")
    print(f"  errors {errors:>7}")
    if source.problem_counts:
        print("skipped archive members:")
        for reason, count in source.problem_counts.most_common():
            print(f"  {count:>7}  {reason}")
    if truth["labelled"]:
        acc = truth["correct"] / truth["labelled"]
        print(f"accuracy {acc:.4f} ({truth['correct']}/{truth['labelled']} labelled cards; read errors excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
