"""Benchmark 1: batch scoring, ``python -m serving.batch`` end to end against the notebook-style loop."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from bench.common import Run, load, median, python, run_timed
from bench.data import base_cards, card_folder

SCORED = re.compile(r"(\d+) card\(s\) scored in ([\d.]+) s")


def run_cli(folder: Path, model: str, out: Path, extra: list[str] | None = None) -> Run:
    """One whole CLI run; ``extra`` holds cards, scoring seconds (after start-up) and start-up seconds."""
    run = run_timed([python(), "-m", "serving.batch", str(folder), "--out", str(out), "--model", model,
                     "--no-progress", *(extra or [])])
    m = SCORED.search(run.stdout)
    cards, scoring = int(m.group(1)), float(m.group(2))
    run.extra = {"cards": cards, "scoring_s": scoring, "startup_s": run.wall - scoring}
    return run


def run_notebook(folder: Path, model: str, out: Path) -> Run:
    """One whole run of the notebook-style loop (``bench.baselines score``)."""
    run = run_timed([python(), "-m", "bench.baselines", "score", str(folder), "--model", model, "--out", str(out)])
    run.extra = json.loads(run.stdout.strip().splitlines()[-1])
    run.extra["startup_s"] = run.wall - run.extra["scoring_s"]
    return run


def agreement(cli_csv: Path, nb_csv: Path) -> float:
    """Share of cards where the CLI and the notebook loop give the same label."""
    def labels(path: Path, col: int) -> dict[str, str]:
        rows = path.read_text(encoding="utf-8").splitlines()[1:]
        return {r.split(",")[0]: r.split(",")[col] for r in rows}

    a, b = labels(cli_csv, 1), labels(nb_csv, 1)
    return sum(a[k] == b.get(k) for k in a) / max(len(a), 1)


def bench_batch(model: str, sizes: list[int], headline: int, repeats: int, baseline_repeats: int,
                per_class: int = 100, log=print) -> dict:
    """Headline: ``repeats`` interleaved CLI / notebook runs on ``headline`` cards; then one CLI run per size."""
    base = base_cards(per_class)
    tmp = Path(tempfile.mkdtemp(prefix="cardsense-bench-"))
    folder = card_folder(headline, base)
    cli, nb = [], []
    for r in range(max(repeats, baseline_repeats)):
        if r < baseline_repeats:
            nb.append(run_notebook(folder, model, tmp / "nb.csv"))
            log(f"  notebook loop {headline} cards: {nb[-1].wall:.1f} s (load {load()})")
        if r < repeats:
            cli.append(run_cli(folder, model, tmp / "cli.csv"))
            log(f"  CLI {headline} cards: {cli[-1].wall:.1f} s (load {load()})")
    result = {
        "cards": headline,
        "cli": summarise(cli),
        "notebook": summarise(nb),
        "label_agreement": agreement(tmp / "cli.csv", tmp / "nb.csv"),
        "scaling": [],
    }
    for n in sizes:
        folder_n = card_folder(n, base)
        run = run_cli(folder_n, model, tmp / f"cli-{n}.csv")
        log(f"  CLI {n} cards: {run.wall:.1f} s, peak {run.peak_mib:.0f} MiB (load {load()})")
        result["scaling"].append({"cards": n, **summarise([run])})
    result["scaling"].append({"cards": headline, **result["cli"]})
    result["scaling"].sort(key=lambda s: s["cards"])
    return result


def summarise(runs: list[Run]) -> dict:
    """Medians over repeats: whole-run and steady cards/s, start-up, peak memory."""
    if not runs:
        return {}
    cards = runs[0].extra["cards"]
    return {
        "repeats": len(runs),
        "wall_s": median([r.wall for r in runs]),
        "startup_s": median([r.extra["startup_s"] for r in runs]),
        "end_to_end_cards_s": median([cards / r.wall for r in runs]),
        "steady_cards_s": median([cards / r.extra["scoring_s"] for r in runs]),
        "peak_mib": median([r.peak_mib for r in runs]),
        # CPU time per card (start-up included): how much work, whatever else the machine is doing.
        "cpu_ms_per_card": median([1000 * r.cpu_s / cards for r in runs]),
        "cpu_s": median([r.cpu_s for r in runs]),
        "all_end_to_end": [round(cards / r.wall, 1) for r in runs],
    }
