"""Write a simulated dataset in the competition layout.

    python -m training.simulate --out DIR --per-class N [--test M] [--seed S] [--zip] [--workers W] [--no-randomise]

writes ``DIR/train/A01 … A12/<id>.csv + <id>.png``, ``DIR/test/<id>.csv + <id>.png``,
``DIR/test_labels.csv`` (``id,label``), ``DIR/simulator.json`` (the arguments, for provenance) and,
with ``--zip``, ``DIR/train.zip`` and ``DIR/test.zip``. Each card passes through a randomly drawn
recorder and renderer (``training.simulator.recorder``: load-cell offset/gain, position-sensor
nonlinearity, 100–1,000 samples, start phase, padding, clipping, line width, margin, anti-aliasing)
unless ``--no-randomise``. Same arguments → byte-identical files,
whatever the number of workers: every card's randomness comes from (seed, class, index), and the
batches the physics runs in are fixed by the arguments alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from shared.atomic import atomic_directory
from shared.cards import render_card_png, write_card_csv
from shared.labels import CODES, label_index

log = logging.getLogger(__name__)

BATCH = 384  # cards simulated together; part of the output definition (see module docstring)
TEST_INDEX_OFFSET = 10_000_000  # test cards draw from (seed, class, offset + i): never a train card
MARKER = "simulator.json"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
RECORDER_STREAM = 7919  # fourth SeedSequence word of the recorder/renderer draws


def _spec_keys(per_class: int, test_count: int, seed: int) -> list[tuple[str, str, int, str]]:
    """(split, condition, rng index, id) of every card; test ids are shuffled so they hide the label."""
    keys = [("train", c, i, f"{c.lower()}_{i:05d}") for c in CODES for i in range(per_class)]
    order = np.random.default_rng(np.random.SeedSequence((int(seed), 977))).permutation(test_count)
    for i in range(test_count):
        keys.append(("test", CODES[i % len(CODES)], TEST_INDEX_OFFSET + i, f"{int(order[i]) + 1:05d}"))
    return keys


def _make_specs(job: tuple[int, list[tuple[str, str, int, str]]]):
    from training.simulator import card_rng, make_spec

    seed, keys = job
    return [make_spec(cond, card_rng(seed, cond, idx)) for _, cond, idx, _ in keys]


def recorder_rng(seed: int, condition: str, index: int) -> np.random.Generator:
    """The recorder/renderer generator of card ``index`` of ``condition``: a stream of its own, so that
    switching the randomisation off leaves the physics of every card unchanged."""
    words = (int(seed), label_index(condition), int(index), RECORDER_STREAM)
    return np.random.default_rng(np.random.SeedSequence(words))


def _simulate_chunk(job: tuple[list, list, int, bool]):
    """Worker: simulate one batch and return ``(key, position, load, png bytes)`` per card."""
    from training.simulator import run_specs
    from training.simulator.recorder import Recording, record

    keys, specs, seed, randomise = job
    out = []
    for key, card in zip(keys, run_specs(specs)):
        if randomise:
            rec = record(card.position_m, card.load_kN, recorder_rng(seed, key[1], key[2]))
        else:
            rec = Recording(card.position_m, card.load_kN)
        position = np.round(rec.position, 3)
        load = np.round(rec.load, 2)
        out.append((key, position, load, render_card_png(position, load, **rec.render_kwargs())))
    return out


def _write_zip(path: Path, root: Path, sub: str) -> None:
    """Deterministic zip of ``root/sub``: sorted entries, fixed dates and permissions."""
    files = sorted(p for p in (root / sub).rglob("*") if p.is_file())
    dirs = sorted({p.parent for p in files})
    with zipfile.ZipFile(path, "w") as zf:
        for d in dirs:
            info = zipfile.ZipInfo(d.relative_to(root).as_posix() + "/", ZIP_DATE)
            info.external_attr = (0o40755 << 16) | 0x10
            zf.writestr(info, b"")
        for f in files:
            info = zipfile.ZipInfo(f.relative_to(root).as_posix(), ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if f.suffix == ".png" else zipfile.ZIP_DEFLATED
            zf.writestr(info, f.read_bytes())


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MARKER).is_file())):
        raise FileExistsError(f"{out_dir} exists and is not an earlier simulator output; refusing to replace it")


def generate_dataset(out_dir: str | os.PathLike, per_class: int, test_count: int = 0, seed: int = 0,
                     make_zip: bool = False, workers: int | None = None, progress: bool = True,
                     randomise: bool = True) -> Path:
    """Simulate a labelled dataset in the competition layout (see the module docstring).

    The folder is built beside ``out_dir`` and moved into place when complete, so a crash never
    leaves a half-written dataset; an existing earlier simulator output is replaced.

    Args:
        out_dir: the dataset folder to (re)create.
        per_class: training cards per condition.
        test_count: unlabelled test cards (classes balanced, ids shuffled).
        seed: dataset seed.
        make_zip: also write ``train.zip`` / ``test.zip``.
        workers: processes (default: up to 2, never more than the CPUs); 1 runs in-process.
        progress: show a tqdm progress bar.
        randomise: pass every card through a randomly drawn recorder and renderer
            (``training.simulator.recorder``); False writes the clean physics, drawn the default way.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: negative counts or nothing to do.
        FileExistsError: ``out_dir`` holds something that is not a simulator output.
    """
    from tqdm import tqdm

    from training.simulator.rod import discretisation

    out_dir = Path(out_dir)
    if per_class < 0 or test_count < 0:
        raise ValueError("--per-class and --test must not be negative")
    if per_class == 0 and test_count == 0:
        raise ValueError("nothing to generate: --per-class and --test are both 0")
    _check_target(out_dir)
    workers = max(1, min(workers or 2, os.cpu_count() or 1))

    keys = _spec_keys(per_class, test_count, seed)
    spec_jobs = [(seed, keys[i:i + 500]) for i in range(0, len(keys), 500)]
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        mapper = pool.imap if pool else map
        specs = [s for part in mapper(_make_specs, spec_jobs) for s in part]
        # Batch wells with similar step counts together; the order depends on the arguments only.
        order = sorted(range(len(keys)), key=lambda i: (discretisation(specs[i].params)[1], i))
        chunks = [([keys[i] for i in order[j:j + BATCH]], [specs[i] for i in order[j:j + BATCH]], seed, randomise)
                  for j in range(0, len(order), BATCH)]
        log.info("simulating %d cards in %d batches on %d worker(s)", len(keys), len(chunks), workers)
        labels = []
        with atomic_directory(out_dir) as tmp:
            bar = tqdm(total=len(keys), unit="card", disable=not progress, desc="simulate")
            results = pool.imap_unordered(_simulate_chunk, chunks) if pool else map(_simulate_chunk, chunks)
            for part in results:
                for (split, code, _, card_id), position, load, png in part:
                    folder = tmp / "train" / code if split == "train" else tmp / "test"
                    folder.mkdir(parents=True, exist_ok=True)
                    write_card_csv(folder / f"{card_id}.csv", position, load)
                    (folder / f"{card_id}.png").write_bytes(png)
                    if split == "test":
                        labels.append((card_id, code))
                bar.update(len(part))
            bar.close()
            if test_count:
                text = "id,label\n" + "".join(f"{i},{c}\n" for i, c in sorted(labels))
                (tmp / "test_labels.csv").write_text(text, encoding="utf-8")
            if make_zip:
                if per_class:
                    _write_zip(tmp / "train.zip", tmp, "train")
                if test_count:
                    _write_zip(tmp / "test.zip", tmp, "test")
            meta = {"generator": "training.simulate", "per_class": per_class, "test": test_count, "seed": seed,
                    "zip": bool(make_zip), "randomise": bool(randomise), "classes": list(CODES)}
            (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    finally:
        if pool:
            pool.close()
            pool.join()
    return out_dir


def get_args_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.simulate",
                                 description="Write simulated dynamometer cards in the competition layout.")
    ap.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    ap.add_argument("--per-class", type=int, required=True, help="training cards per condition")
    ap.add_argument("--test", type=int, default=0, help="unlabelled test cards (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zip", action="store_true", help="also write train.zip and test.zip")
    ap.add_argument("--workers", type=int, default=None, help="processes (default 2)")
    ap.add_argument("--no-randomise", action="store_true",
                    help="write the clean physics: no recorder/renderer variety (default: randomised)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = generate_dataset(args.out, args.per_class, args.test, args.seed, args.zip, args.workers,
                               progress=not args.no_progress, randomise=not args.no_randomise)
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
