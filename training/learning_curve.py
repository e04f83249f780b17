"""The field learning curve: how good a model gets from k real cards per class, fine-tuned vs from scratch.

``python training/run.py learning-curve --base MODEL_DIR [--ks 3 5 10 20] [--splits 3]``

For each random split (seeded) and each ``k``, ``k`` cards per class of the field set (the cards with one
of our codes) are the training cards and **all the other field cards** are the test cards; the samples are
nested (the 3 cards of a class are among its 5, …) so the curve moves with ``k``, not with the draw. Each
*arm* trains on them with its own flags of ``run.py train`` — by default ``finetune`` (``--init BASE``, so
the finetune preset) and ``scratch`` (the default recipe, a fresh network of the base's input kind).
No run has a holdout: each trains its recipe's length and keeps the last epoch, so the test cards take no
part in training or model selection. An arm may add sources (``--data field sim:0.3``: simulated cards
replayed beside the real ones); only the field cards are counted in ``k``.

Prints a table (mean ± sample std over the splits, per arm and ``k``) and writes every run's figures
(accuracy, per-class recall, epochs) to a JSON file.

The honest base is a model that never saw a field card (trained on the simulator only).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import atomic_write_text
from shared.labels import CODES
from training.metrics import per_class_report, twelve_way
from training.pipeline import assemble_run, fit_network, ingest_sources, score_cards
from training.recipe import fit_length_to_data, resolve_recipe
from training.sources import DataSpecError, split_by_source
from training.warm_start import read_init

FIELD = "field"
DEFAULT_ARMS = ("finetune=--init {base}", "scratch=--input {kind}")


def nested_sample(labels: np.ndarray, ks: list[int], seed: int) -> dict[int, np.ndarray]:
    """For each ``k``, ``k`` card positions per class (all of a class that has fewer), nested across ``k``.

    Returns:
        ``k`` -> sorted positions into ``labels``.
    """
    rng = np.random.default_rng(np.random.SeedSequence((seed, 5000)))
    orders = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    return {k: np.sort(np.concatenate([o[:k] for o in orders.values()])) for k in ks}


def parse_arm(text: str, base: str, kind: str) -> tuple[str, list[str]]:
    """``"name=--flag value …"`` -> (name, flags), with ``{base}`` and ``{kind}`` filled in.

    Raises:
        DataSpecError: no ``name=``.
    """
    name, sep, flags = text.partition("=")
    if not sep or not name.strip():
        raise DataSpecError(f"--arm {text!r}: write it as NAME=FLAGS, e.g. 'ft-lr3e-4=--init {{base}} --lr 3e-4'")
    return name.strip(), shlex.split(flags.format(base=base, kind=kind))


def run_arm(name: str, flags: list[str], args: argparse.Namespace, parse_train_args, ks: list[int],
            seeds: list[int], runs_dir: Path) -> list[dict[str, Any]]:
    """Every (split, k) run of one arm. ``parse_train_args``: ``run.py train``'s parser (argv -> Namespace)."""
    targs = parse_train_args(["train", "--data", FIELD, *flags, "--no-export", "--no-vdl", "--no-progress",
                              *(["--cache-dir", args.cache_dir] if args.cache_dir else [])])
    init = read_init(targs.init) if targs.init else None
    recipe = resolve_recipe(targs, init)
    sources = ingest_sources(targs, recipe, progress=False)
    names = [s.name for s in sources.specs]
    if FIELD not in names:
        raise DataSpecError(f"arm {name}: its --data must include 'field' (got {', '.join(names)})")
    f = names.index(FIELD)
    field_idx = sources.indices(f)
    labels = sources.cards.labels
    # the other sources (simulated replay) give their training split; nothing is held out for selection
    train_split, _ = split_by_source(sources, recipe.holdout, recipe.split, recipe.well_pattern, recipe.seed)
    init_state = init.state() if init is not None else None
    results = []
    for seed in seeds:
        chosen = nested_sample(labels[field_idx], ks, seed)
        for k in ks:
            train_field = field_idx[chosen[k]]
            test = np.setdiff1d(field_idx, train_field)
            pools = [train_field if s == f else train_split[s] for s in range(len(names))]
            data = assemble_run(sources, recipe, pools, np.zeros(0, np.int64))
            r = fit_length_to_data(targs, recipe, len(data.balanced), announce=False)
            start = time.perf_counter()
            net, summary = fit_network(r, data, runs_dir / name / f"split{seed}-k{k}", init_state=init_state,
                                       progress=False)
            t = twelve_way(score_cards(net, r, sources, test), labels[test])  # the twelve conditions' figures
            acc, cm = t["acc"], t["confusion"]
            results.append({"arm": name, "split": seed, "k": k, "train_cards": int(len(train_field)),
                            "test_cards": int(len(test)), "acc": round(acc, 4), "epochs": summary["epoch"],
                            "seconds": round(time.perf_counter() - start, 1),
                            "recall": {c: v["recall"] for c, v in per_class_report(cm).items() if v["support"]}})
            print(f"{name:>14} split {seed} k {k:>2}: accuracy {acc:.4f} on {len(test)} test cards "
                  f"({summary['epoch']} epochs, {results[-1]['seconds']:.0f} s)", flush=True)
    return results


def summarise(results: list[dict[str, Any]], arms: list[str], ks: list[int]) -> dict[str, dict[str, Any]]:
    """``arm`` -> ``k`` -> mean, sample std and the per-split accuracies (and mean per-class recall)."""
    table: dict[str, dict[str, Any]] = {}
    for arm in arms:
        for k in ks:
            rows = [r for r in results if r["arm"] == arm and r["k"] == k]
            accs = np.array([r["acc"] for r in rows])
            recall = {c: round(float(np.mean([r["recall"][c] for r in rows if c in r["recall"]])), 4)
                      for c in CODES if any(c in r["recall"] for r in rows)}
            table.setdefault(arm, {})[str(k)] = {
                "mean": round(float(accs.mean()), 4), "std": round(float(accs.std(ddof=1)), 4) if len(accs) > 1 else 0.0,
                "splits": accs.tolist(), "recall": recall}
    return table


def format_table(table: dict[str, dict[str, Any]], ks: list[int]) -> str:
    """Rows ``k``, one column per arm: mean ± std."""
    arms = list(table)
    widths = [max(16, len(a)) + 2 for a in arms]
    lines = ["cards/class " + "".join(f"{a:>{w}}" for a, w in zip(arms, widths))]
    for k in ks:
        cells = [f"{table[a][str(k)]['mean']:.3f} ± {table[a][str(k)]['std']:.3f}" for a in arms]
        lines.append(f"{k:>11} " + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def learning_curve(args: argparse.Namespace, parse_train_args) -> dict[str, Any]:
    """The ``learning-curve`` command: every arm, every split and ``k``; table printed, JSON written.

    Raises:
        training.warm_start.InitError: a base that cannot be fine-tuned; DataSpecError: a bad arm.
    """
    base = read_init(args.base)
    arms = [parse_arm(a, str(base.folder), base.kind) for a in (args.arm or DEFAULT_ARMS)]
    seeds = list(range(args.seed, args.seed + args.splits))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs_dir = Path(args.runs_dir) / f"learning-curve-{stamp}"
    out = Path(args.out) if args.out else runs_dir / "learning_curve.json"
    print(f"learning curve: base {base.folder} ({base.architecture}, {base.kind}); k = {args.ks}; "
          f"splits {seeds}; arms {', '.join(n for n, _ in arms)}", flush=True)
    results = []
    for name, flags in arms:
        results += run_arm(name, flags, args, parse_train_args, args.ks, seeds, runs_dir)
    table = summarise(results, [n for n, _ in arms], args.ks)
    doc = {"base": base.provenance(), "ks": args.ks, "splits": seeds,
           "arms": {n: " ".join(shlex.quote(x) for x in flags) for n, flags in arms},
           "protocol": "k field cards per class train (nested samples per split); all other field cards test; "
                       "no holdout: each run trains its recipe's length and keeps the last epoch",
           "table": table, "runs": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, ensure_ascii=False, indent=1))
    print("\n" + format_table(table, args.ks) + f"\n\n(mean ± std over {len(seeds)} splits; JSON: {out})", flush=True)
    return doc
