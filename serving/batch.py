"""Score every card of a ``test.zip`` or a folder with an exported model; write a predictions CSV.

    python -m serving.batch INPUT --out predictions.csv [--model DIR] [--batch-size N] [--shard K/N]

INPUT is a zip or a folder, flat or with class sub-folders (``A01`` ... ``A12``); cards are read
with the shared safe reader (``shared.dataset_io``). One row per card (:func:`serving.answers.csv_header`)::

    id,label,name,confidence,unknown,unknown_score,review,second_label,second_probability,model,model_version,
    input,fillage,fullness,peak_load_kN,...,work_kJ,peak_load_rel,...,area_rel,A01,...,A12,unknown_reasons,error

``id`` is the file stem; ``model`` the kind of model that answered (image, series, dual), ``input`` what it
read (png, csv, pair); ``unknown`` and ``review`` are 1/0 (docs/SERVING.md); the measures come from the CSV
in kN/m/kJ (``_kN``, ``_m``, ``_kJ`` columns) or, for a PNG alone, as fractions of the image (``_rel``).
``--advice`` adds each answer's likely cause and usual remedy (Chinese, English) and their sources. The file is UTF-8 with a byte-order mark, so Excel shows the Chinese condition
names (``--no-bom`` for plain UTF-8). Each card is routed and prepared as in the service (:mod:`serving.routing`):
with a dual model loaded a PNG + CSV pair goes to it, with a series model a lone CSV goes to it, else
the image model reads the PNG (or the CSV, rendered). A card that cannot be read gets an ``error`` and
empty prediction columns; it never stops the run. The CSV is written atomically; its rows are the
service's answers (:mod:`serving.answers`). At the end a summary (cards per label and per model, errors,
cards answered unknown -- not a card, or none of the twelve --, cards to check by hand, and accuracy when
INPUT is labelled) is printed. The models, preprocessing and batching are those of the
web service, so both give the same probabilities for the same card.

One pipeline (:func:`score_cards`) serves one model or several: worker processes do all the per-card
work of a chunk (routing, PNG decode + fill, series preprocessing) while this process runs the
networks on the chunks they have finished.
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from serving.answers import LOW_CONFIDENCE, answer, csv_header, csv_row, needs_review
from serving.card_facts import CardFacts
from serving.routing import Prepared, Router, card_files, skipped_card_members
from shared.atomic import atomic_output_file
from shared.cards import CardError
from shared.dataset_io import ArchiveError, CardFile, CardSource, iter_cards

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One scored card: the network's output or an error, which model answered (``image|series|dual``), and
    what the card's files say (structural check, measures)."""

    id: str
    file: str
    true_label: str | None
    outputs: np.ndarray | None = None
    facts: CardFacts | None = None
    error: str = ""
    model_kind: str = ""
    input_kind: str = ""  # what that model read: png, csv or pair


def _init_worker() -> None:
    import cv2  # noqa: PLC0415

    cv2.setNumThreads(0)  # one process per core already; cv2's own pool would only compete


def _prepare_chunk(router: Router, items: list[tuple[bytes | None, bytes | None] | str]) -> list[Prepared | str]:
    """Worker: all the per-card CPU work of one chunk -- route, decode, fill, series -- errors as strings.

    ``items`` are ``(png, csv)`` byte pairs (either may be None) or, for a card already known to be
    unreadable, its error message. Each card comes back as its :class:`serving.routing.Prepared` (small and
    picklable) or its error message.
    """
    out: list[Prepared | str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(router.prepare(*item))
        except CardError as exc:
            out.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - a card that breaks the decoder is that card's error row
            out.append(f"cannot read the card: {type(exc).__name__}: {exc}")
    return out


def _card_item(card: CardFile) -> tuple[bytes | None, bytes | None] | str:
    try:
        return card_files(card)
    except CardError as exc:
        return str(exc)


def make_pool(workers: int) -> ProcessPoolExecutor | None:
    """Processes that route, decode and fill cards (``None`` for ``workers <= 1``: the caller's process does it).

    Processes, not threads: the per-card work is many short OpenCV and numpy calls, and the Python
    between them holds the GIL. ``spawn``: the workers import only numpy and cv2, never Paddle, so it
    is safe to start them before or after the predictor exists.
    """
    if workers <= 1:
        return None
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
    for _ in range(workers):  # start the workers now, while the caller loads the model
        pool.submit(_init_worker)
    return pool


def score_cards(
    models, source: CardSource, batch_size: int, progress=None, report_skipped: bool = True, workers: int = 1,
    pool: ProcessPoolExecutor | None = None,
) -> Iterator[Row]:
    """Yield one :class:`Row` per card of ``source``, in the source's order, each from the model that reads it.

    The one batch-scoring pipeline, for one model or several. Cards are read here (the safe reader)
    in chunks of ``batch_size``; ``workers`` processes do all the per-card work of a chunk (route and
    prepare it as the service does -- :meth:`serving.routing.Router.prepare` --: decode and fill the PNG
    or rendered CSV, preprocess the series) and return small arrays; here each chunk's inputs are
    predicted per model kind (:meth:`serving.predictor.Predictor.predict_cards`). The network runs on
    one chunk while the workers prepare the next ones, so decoding -- the slow part -- overlaps
    inference and every worker is busy. At most ``2 * workers + 2`` chunks are
    in flight, so memory does not grow with the number of cards.

    Args:
        models: a :class:`serving.model_set.ModelSet` (anything with ``by_kind``), or one predictor.
        source: an opened :class:`shared.dataset_io.CardSource`.
        batch_size: cards per chunk (and at most per predictor call).
        progress: optional tqdm bar, advanced once per card.
        report_skipped: end with error rows for card files the safe reader refused (the reader
            lists them for the whole archive, so of several shards only the last reports them).
        workers: processes that prepare cards (1: all in this process).
        pool: an executor from :func:`make_pool` to use instead of starting one here.
    """
    by_kind = getattr(models, "by_kind", None) or {models.kind: models}
    router = Router(tuple(p.inputs for p in by_kind.values()))
    seen: set[tuple[str, str]] = set()
    own_pool = pool is None and workers > 1
    if own_pool:
        pool = make_pool(workers)
    in_flight: deque = deque()
    limit = 2 * max(workers, 1) + 2

    def submit(chunk: list[CardFile]) -> None:
        rows = [Row(card.id, card.name, card.label) for card in chunk]
        items = [_card_item(card) for card in chunk]
        job = pool.submit(_prepare_chunk, router, items) if pool is not None else _prepare_chunk(router, items)
        in_flight.append((rows, job))

    def finish() -> list[Row]:
        rows, job = in_flight.popleft()
        prepared = job.result() if pool is not None else job
        batches: dict[str, list[tuple[Row, Any]]] = {}
        for row, card in zip(rows, prepared):
            if isinstance(card, str):
                row.error = card
            else:
                row.input_kind, row.facts = card.used, card.facts
                batches.setdefault(card.kind, []).append((row, card.input))
        for kind, items in batches.items():
            outputs = by_kind[kind].predict_cards([x for _, x in items])
            for (row, _), out in zip(items, outputs):
                row.outputs, row.model_kind = out, kind
        if progress is not None:
            progress.update(len(rows))
        return rows

    try:
        chunk: list[CardFile] = []
        for card in source:
            seen.add((card.folder, card.id))
            chunk.append(card)
            if len(chunk) >= batch_size:
                submit(chunk)
                chunk = []
                while len(in_flight) >= limit:
                    yield from finish()
        if chunk:
            submit(chunk)
        while in_flight:
            yield from finish()
    finally:
        if own_pool:
            pool.shutdown(wait=True, cancel_futures=True)
    if not report_skipped:
        return
    for card_id, name, reason in skipped_card_members(source, seen):
        yield Row(card_id, name, None, error=f"{name}: skipped: {reason}")


def _write_rows(writer, models, rows: Iterator[Row], summary: Counter, truth: Counter, answered: Counter,
                low_confidence: float = LOW_CONFIDENCE, with_advice: bool = False) -> None:
    codes = models.primary.codes
    for row in rows:
        if row.outputs is None:
            writer.writerow(csv_row(row.id, codes, None, row.error, row.input_kind, with_advice))
            summary["<error>"] += 1
            continue
        answered[row.model_kind] += 1
        card_answer = answer(models.by_kind[row.model_kind], row.outputs, row.facts, low_confidence=low_confidence)
        label = card_answer["label"]
        summary[label] += 1
        summary["<review>"] += int(needs_review(card_answer))
        summary["<unknown>"] += int(card_answer["unknown"])
        if row.true_label is not None:
            truth["labelled"] += 1
            truth["correct"] += int(label == row.true_label)
        writer.writerow(csv_row(row.id, codes, card_answer, used=row.input_kind, with_advice=with_advice))


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
        help="exported model folder(s), comma-separated: one image model and optionally a series and a dual "
             "model (default $CARDSENSE_MODEL_DIR or models/default, plus $CARDSENSE_EXTRA_MODEL_DIRS or the "
             "shipped models/series and models/dual); PNG + CSV pairs go to the dual model, lone CSVs to the "
             "series model",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="cards per inference call (default 32)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default=os.environ.get("CARDSENSE_DEVICE", "auto"))
    parser.add_argument(
        "--cpu-threads", type=int, default=0,
        help="math-library threads on CPU (default 0: 1 when worker processes fill the cards, else all cores)",
    )
    parser.add_argument(
        "--shard", type=_shard, default=None, metavar="K/N",
        help="score only the K-th of N equal slices of the sorted cards (0 <= K < N), e.g. one per pod of an "
             "indexed Job; the shard outputs concatenated in K order equal the unsharded file",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="processes decoding and filling cards while the network runs (default: all cores; 1: none)",
    )
    parser.add_argument(
        "--low-confidence", type=_probability, default=LOW_CONFIDENCE, metavar="P",
        help=f"for a model whose meta.json has no fitted review rule: send answers with a confidence below P "
             f"to review (column review, counted in the summary; default {LOW_CONFIDENCE}); a model with a "
             f"fitted rule uses its own",
    )
    parser.add_argument(
        "--advice", action="store_true",
        help="add each answer's likely cause and usual remedy (Chinese and English) and their sources as columns",
    )
    parser.add_argument(
        "--no-bom", action="store_true",
        help="write plain UTF-8 (default: UTF-8 with a byte-order mark, which Excel needs to show Chinese names)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _rule_text(rule: dict[str, Any]) -> str:
    """A review rule as the summary says it."""
    if rule["rule"] == "low_confidence":
        return f"confidence below {rule['min_top']:g}, the fallback rule"
    return f"top below {rule['min_top']:.3g} or margin below {rule['min_margin']:.3g}, fitted in meta.json"


def _probability(value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 0 to 1") from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 0 to 1")
    return p


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
    try:
        source = iter_cards(args.input, shard=args.shard)
    except ArchiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pool = make_pool(args.workers)  # the workers start while Paddle is imported and the model loads
    try:
        return _score(args, source, pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _score(args, source: CardSource, pool: ProcessPoolExecutor | None) -> int:
    from serving.config import DEFAULT_MODEL_DIR, extra_model_dirs  # noqa: PLC0415
    # Heavy (Paddle): imported once the worker processes are starting, never in them (they import this module).
    from serving.model_set import ModelSet  # noqa: PLC0415
    from serving.predictor import StartupError  # noqa: PLC0415

    # With worker processes filling cards, one math thread leaves the other core(s) to them.
    cpu_threads = args.cpu_threads or (1 if pool is not None else os.cpu_count() or 1)
    folders = [f.strip() for f in (args.model or str(DEFAULT_MODEL_DIR)).split(",") if f.strip()]
    if not args.model or "CARDSENSE_EXTRA_MODEL_DIRS" in os.environ:
        folders += [str(d) for d in extra_model_dirs() if str(d) not in folders]
    try:
        models = ModelSet.load(folders, device=args.device, cpu_threads=cpu_threads, pool_size=1,
                               batch_sizes=sorted({1, args.batch_size}))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        source.close()
        return 2
    predictor = models.primary

    from tqdm import tqdm  # noqa: PLC0415

    last_shard = args.shard is None or args.shard[0] == args.shard[1] - 1
    summary: Counter[str] = Counter()
    truth: Counter[str] = Counter()
    answered: Counter[str] = Counter()  # cards per model kind
    started = time.perf_counter()
    with source, tqdm(total=len(source), unit="card", disable=args.no_progress, dynamic_ncols=True) as bar:
        # utf-8-sig: the byte-order mark is how Excel knows the file is UTF-8 (else it reads the ANSI code page).
        encoding = "utf-8" if args.no_bom else "utf-8-sig"
        with atomic_output_file(args.out, "w", newline="", encoding=encoding) as fh:
            writer = csv.writer(fh)
            writer.writerow(csv_header(predictor.codes, args.advice))
            # One pipeline for one model or several: each card goes to the model that reads it.
            rows = score_cards(models, source, args.batch_size, bar, report_skipped=last_shard,
                               workers=args.workers, pool=pool)
            _write_rows(writer, models, rows, summary, truth, answered, args.low_confidence, args.advice)
    elapsed = time.perf_counter() - started

    errors = summary.pop("<error>", 0)
    review = summary.pop("<review>", 0)
    unknown = summary.pop("<unknown>", 0)
    total = sum(summary.values()) + errors
    print(f"\n{total} card(s) scored in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} cards/s) -> {args.out}")
    for kind, p in models.by_kind.items():
        print(f"{kind} model {p.name} ({p.version}) on {p.device}: {answered[kind]} card(s)")
    names = {x["code"]: x["name"] for x in predictor.labels}
    for code in predictor.codes:
        if summary[code]:
            print(f"  {code}   {summary[code]:>7}  {names[code]}")
    print(f"  errors {errors:>7}")
    print(f"unknown: {unknown} card(s) not a card or none of the twelve (column unknown; why: unknown_reasons)")
    by_rule: dict[str, list[str]] = {}  # models that follow the same rule are named together
    for kind, p in models.by_kind.items():
        by_rule.setdefault(_rule_text(p.output.review_rule(args.low_confidence)), []).append(kind)
    rules = "; ".join(f"{', '.join(kinds)}: {text}" for text, kinds in by_rule.items())
    print(f"review: {review} card(s) to check by hand (column review; {rules})")
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
