"""Score every card of a ``test.zip`` or a folder with an exported model; write a predictions CSV.

    python -m serving.batch INPUT --out predictions.csv [--model DIR] [--batch-size N] [--shard K/N]

INPUT is a zip or a folder, flat or with class sub-folders (``A01`` ... ``A12``); cards are read
with the shared safe reader (``shared.dataset_io``). One row per card::

    id,label,name,confidence,A01,...,A12,error

``id`` is the file stem. Each card is routed as in the service (:func:`route_kind`): with a dual
model loaded a PNG + CSV pair goes to it, with a series model a lone CSV goes to it, else the image
model reads the PNG (or the CSV, rendered). A card that cannot be read gets an ``error`` and empty
prediction columns; it never stops the run. The CSV is written atomically. At the end a summary
(cards per label and per model, errors, and accuracy when INPUT is labelled) is printed. The models,
preprocessing and batching are those of the web service, so both give the same probabilities for
the same card.

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
from pathlib import PurePosixPath
from typing import Any, Iterator, Sequence

import numpy as np

from shared.atomic import atomic_output_file
from shared.cards import CardError
from shared.dataset_io import CARD_SUFFIXES, ArchiveError, CardFile, CardSource, iter_cards
from shared.preprocess import PreprocessConfig, filled_card_bytes, to_model_input
from shared.series import SeriesConfig, preprocess_series_csv

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
    """One scored card: probabilities or an error, and which model answered (``image|series|dual``)."""

    id: str
    file: str
    true_label: str | None
    probs: np.ndarray | None = None
    error: str = ""
    model_kind: str = ""
    input_kind: str = ""  # what that model read: png, csv or pair


def _init_worker() -> None:
    import cv2  # noqa: PLC0415

    cv2.setNumThreads(0)  # one process per core already; cv2's own pool would only compete


def route_kind(kinds: Sequence[str], has_png: bool, has_csv: bool) -> tuple[str, str]:
    """The routing rule: which loaded model kind answers a card with these files, and what it reads.

    ``kinds`` are the loaded model kinds (in load order, for the message). Returns ``(kind, input)``
    with input ``png``, ``csv`` or ``pair``: PNG + CSV -> dual if loaded, else the image model on the
    PNG; a lone CSV -> series if loaded, else the image model (the CSV is rendered); a PNG -> image.
    Pure and Paddle-free, so the batch scorer's worker processes route with the very rule the service
    uses (:meth:`serving.routing.ModelSet.route`).

    Raises:
        CardError: no loaded model can read what arrived (e.g. a PNG with only a series model).
    """
    if has_png and has_csv and "dual" in kinds:
        return "dual", "pair"
    if not has_png and has_csv and "series" in kinds:
        return "series", "csv"
    if "image" in kinds:
        return "image", "png" if has_png else "csv"
    if has_csv and "series" in kinds:
        return "series", "csv"
    raise CardError(f"no loaded model reads this card ({'PNG' if has_png else 'nothing'} without CSV); "
                    f"loaded: {', '.join(kinds)}")


@dataclass(frozen=True)
class Plan:
    """What a worker process needs to prepare cards for the loaded models: their kinds and preprocessing.

    Configs only (no predictor, no Paddle), so it pickles to ``spawn`` workers in a few bytes.
    """

    kinds: tuple[str, ...]  # loaded model kinds, in load order
    image: PreprocessConfig | None = None  # the image model's
    series: SeriesConfig | None = None  # the series model's
    dual: tuple[PreprocessConfig, SeriesConfig] | None = None  # the dual model's image and series parts

    @classmethod
    def for_models(cls, by_kind: dict) -> "Plan":
        """The plan for loaded predictors ``{kind: predictor}`` (:attr:`serving.routing.ModelSet.by_kind`)."""
        image, series, dual = by_kind.get("image"), by_kind.get("series"), by_kind.get("dual")
        return cls(
            kinds=tuple(by_kind),
            image=image.preprocess if image is not None else None,
            series=series.series_preprocess if series is not None else None,
            dual=(dual.image_preprocess, dual.series_preprocess) if dual is not None else None,
        )


# A prepared card: (model kind, input kind, input, "") or (None, "", None, error). The input is small and
# picklable: the filled card uint8 [H, W] (image), float32 [C, L] (series) or both as a tuple (dual).
Prepared = tuple[str | None, str, Any, str]


def _prepare_card(plan: Plan, png: bytes | None, csv: bytes | None) -> Prepared:
    kind, used = route_kind(plan.kinds, png is not None, csv is not None)
    if kind == "image":
        return kind, used, filled_card_bytes(png if used == "png" else csv, used, plan.image), ""
    if kind == "series":
        return kind, used, preprocess_series_csv(csv, plan.series), ""
    image_config, series_config = plan.dual
    filled = filled_card_bytes(png, "png", image_config)  # the image first: its error is the one reported
    return kind, used, (filled, preprocess_series_csv(csv, series_config)), ""


def _prepare_chunk(plan: Plan, items: list[tuple[bytes | None, bytes | None] | str]) -> list[Prepared]:
    """Worker: all the per-card CPU work of one chunk -- route, decode, fill, series -- errors as strings.

    ``items`` are ``(png, csv)`` byte pairs (either may be None) or, for a card already known to be
    unreadable, its error message.
    """
    out: list[Prepared] = []
    for item in items:
        if isinstance(item, str):
            out.append((None, "", None, item))
            continue
        try:
            out.append(_prepare_card(plan, *item))
        except CardError as exc:
            out.append((None, "", None, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a card that breaks the decoder is that card's error row
            out.append((None, "", None, f"cannot read the card: {type(exc).__name__}: {exc}"))
    return out


def _card_item(card: CardFile) -> tuple[bytes | None, bytes | None] | str:
    if card.png is None and card.csv is None:
        try:
            card_payload(card)
        except CardError as exc:
            return str(exc)
    return card.png, card.csv


def _stack(kind: str, inputs: list[Any]) -> np.ndarray | dict[str, np.ndarray]:
    """Per-card inputs of one model kind -> its batch (uint8 filled cards are scaled here)."""
    if kind == "image":
        return np.stack([to_model_input(f) for f in inputs])
    if kind == "series":
        return {"series": np.stack(inputs)}
    return {"series": np.stack([s for _, s in inputs]), "image": np.stack([to_model_input(f) for f, _ in inputs])}


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
    in chunks of ``batch_size``; ``workers`` processes do all the per-card work of a chunk (route it
    as the service does -- :func:`route_kind` --, decode and fill the PNG or rendered CSV, preprocess
    the series) and return small arrays; here each chunk's inputs are stacked per model kind and
    predicted. The network runs on one chunk while the workers prepare the next ones, so decoding --
    the slow part -- overlaps inference and every worker is busy. At most ``2 * workers + 2`` chunks are
    in flight, so memory does not grow with the number of cards.

    Args:
        models: a :class:`serving.routing.ModelSet` (anything with ``by_kind``), or one predictor.
        source: an opened :class:`shared.dataset_io.CardSource`.
        batch_size: cards per chunk (and at most per predictor call).
        progress: optional tqdm bar, advanced once per card.
        report_skipped: end with error rows for card files the safe reader refused (the reader
            lists them for the whole archive, so of several shards only the last reports them).
        workers: processes that prepare cards (1: all in this process).
        pool: an executor from :func:`make_pool` to use instead of starting one here.
    """
    by_kind = getattr(models, "by_kind", None) or {models.kind: models}
    plan = Plan.for_models(by_kind)
    seen: set[tuple[str, str]] = set()
    own_pool = pool is None and workers > 1
    if own_pool:
        pool = make_pool(workers)
    in_flight: deque = deque()
    limit = 2 * max(workers, 1) + 2

    def submit(chunk: list[CardFile]) -> None:
        rows = [Row(card.id, card.name, card.label) for card in chunk]
        items = [_card_item(card) for card in chunk]
        job = pool.submit(_prepare_chunk, plan, items) if pool is not None else _prepare_chunk(plan, items)
        in_flight.append((rows, job))

    def finish() -> list[Row]:
        rows, job = in_flight.popleft()
        prepared = job.result() if pool is not None else job
        batches: dict[str, list[tuple[Row, Any]]] = {}
        for row, (kind, used, x, error) in zip(rows, prepared):
            if kind is None:
                row.error = error
            else:
                row.input_kind = used
                batches.setdefault(kind, []).append((row, x))
        for kind, items in batches.items():
            probs = by_kind[kind].predict(_stack(kind, [x for _, x in items]))
            for (row, _), p in zip(items, probs):
                row.probs, row.model_kind = p, kind
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


def score_source(predictor, source: CardSource, batch_size: int, progress=None, report_skipped: bool = True,
                 workers: int = 1, pool: ProcessPoolExecutor | None = None) -> Iterator[Row]:
    """:func:`score_cards` with one predictor (every card to it: the PNG, else the CSV rendered)."""
    return score_cards(predictor, source, batch_size, progress, report_skipped, workers, pool)


def _write_rows(writer, predictor, rows: Iterator[Row], summary: Counter, truth: Counter,
                answered: Counter | None = None) -> None:
    codes = predictor.codes
    names = {x["code"]: x["name"] for x in predictor.labels}
    for row in rows:
        if row.probs is None:
            writer.writerow([row.id, "", "", "", *([""] * len(codes)), row.error])
            summary["<error>"] += 1
            continue
        if answered is not None:
            answered[row.model_kind] += 1
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
    from serving.predictor import StartupError  # noqa: PLC0415 - heavy (Paddle)
    from serving.routing import ModelSet  # noqa: PLC0415

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
        with atomic_output_file(args.out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "label", "name", "confidence", *predictor.codes, "error"])
            # One pipeline for one model or several: each card goes to the model that reads it.
            rows = score_cards(models, source, args.batch_size, bar, report_skipped=last_shard,
                               workers=args.workers, pool=pool)
            _write_rows(writer, predictor, rows, summary, truth, answered)
    elapsed = time.perf_counter() - started

    total = sum(summary.values())
    errors = summary.pop("<error>", 0)
    print(f"\n{total} card(s) scored in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} cards/s) -> {args.out}")
    for kind, p in models.by_kind.items():
        print(f"{kind} model {p.name} ({p.version}) on {p.device}: {answered[kind]} card(s)")
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
