"""Benchmark 3: training samples/s of the default recipe and of ``--preset seed`` (the training CLI as
users run it), against the notebook-style loop on the same network (``bench.baselines train``)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench.common import REPO, load, median, python, run_timed
from bench.data import base_cards

# (label, training CLI flags, network, fill method of the notebook-style loop, its batch size)
RECIPES = (
    ("default recipe (cardnet)", [], "cardnet", "default", 64),
    ("--preset seed (cnn01)", ["--preset", "seed", "--per-class-target", "0"], "cnn01", "legacy", 128),
)


def run_cli(flags: list[str], per_class: int, epochs: int, tmp: Path) -> dict:
    name = f"bench-{len(list(tmp.iterdir()))}"
    run = run_timed([python(), str(REPO / "training" / "run.py"), "--data", "sim", "--sim-per-class", str(per_class),
                     "--epochs", str(epochs), "--patience", "0", "--no-export", "--no-vdl", "--no-graph",
                     "--no-progress", "--runs-dir", str(tmp), "--logdir", str(tmp / "log"), "--name", name, *flags])
    history = json.loads((tmp / name / "history.json").read_text())
    return {"samples_per_s": median([h["samples_per_s"] for h in history]), "wall_s": run.wall}


def run_notebook(folder: Path, model: str, method: str, batch: int, steps: int) -> dict:
    run = run_timed([python(), "-m", "bench.baselines", "train", str(folder), "--model", model, "--method", method,
                     "--steps", str(steps), "--batch-size", str(batch)])
    return json.loads(run.stdout.strip().splitlines()[-1])


def bench_train(per_class: int, epochs: int, steps: int, repeats: int, log=print) -> list[dict]:
    """Per recipe: the CLI in one process and with ``--procs`` = cores (data-parallel, same global batch),
    interleaved with the notebook-style loop; medians of ``repeats``."""
    base = base_cards(per_class)
    folder = base[0].parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="cardsense-bench-train-"))
    procs = os.cpu_count() or 1
    rows = []
    for label, flags, model, method, batch in RECIPES:
        cli, multi, nb = [], [], []
        for _ in range(repeats):
            nb.append(run_notebook(folder, model, method, batch, steps)["samples_per_s"])
            log(f"  notebook loop {model}: {nb[-1]:.1f} samples/s (load {load()})")
            cli.append(run_cli(flags, per_class, epochs, tmp)["samples_per_s"])
            log(f"  {label}: {cli[-1]:.1f} samples/s (load {load()})")
            if procs > 1:
                multi.append(run_cli([*flags, "--procs", str(procs)], per_class, epochs, tmp)["samples_per_s"])
                log(f"  {label} --procs {procs}: {multi[-1]:.1f} samples/s (load {load()})")
        rows.append({"recipe": label, "model": model, "cli_samples_s": median(cli), "notebook_samples_s": median(nb),
                     "procs": procs, "cli_procs_samples_s": median(multi) if multi else None,
                     "all_cli": cli, "all_cli_procs": multi, "all_notebook": nb})
    return rows
