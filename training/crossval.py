"""k-fold cross-validation (``--folds K``): a figure for small sets, and for judging a mix of sources.

The real source of the run (the one that is not ``sim``; or the only source) is dealt into ``K``
stratified folds (:func:`fold_assignment`, deterministic from the seed). For each fold a network is
trained on everything else — every other source's training cards and the other ``K - 1`` folds — and
scored on the held-out fold, which takes no part in training or in choosing the epoch:

* with ``sim`` in the mix, early stopping and the best epoch are chosen on the simulated holdout;
* without it, the recipe's length is trained and the last epoch kept (no holdout at all).

Each card of the folded source is scored exactly once. :func:`run_cross_validation` prints the
per-fold accuracies, their mean ± standard deviation (sample, ``ddof=1``) and the per-class recall and
confusion pooled over the folds, writes them to ``runs/<name>/cv.json`` (with every card's fold and
prediction), logs each fold to VisualDL as its own run (``log/<name>/fold<k>``) and, with ``--export``,
then trains the final model on all the data (the folded source wholly in training) and exports it with
the cross-validated figure in ``meta.json`` → ``metrics.cross_validation``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import atomic_write_text
from shared.labels import CODES
from training import vdl
from training.data import write_lists
from training.distributed import init_distributed, set_device
from training.metrics import accuracy_and_loss, confusion_matrix, per_class_report
from training.pipeline import (MODELS_DIR, assemble_run, fit_network, finite, format_shares, ingest_sources,
                               score_cards, train_run)
from training.recipe import Recipe, fit_length_to_data, resolve_recipe
from training.sources import (DataSpecError, SourceSpec, Sources, format_sources_report, parse_sources,
                              split_by_source)
from training.warm_start import read_init


def fold_assignment(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fold (0 … k-1) of each card: per class a seeded permutation dealt round-robin.

    Each class is dealt on from the fold where the previous one stopped, so the folds' sizes differ by at
    most one card overall and every class is spread as evenly as its count allows.
    """
    labels = np.asarray(labels)
    folds = np.empty(len(labels), np.int64)
    rng = np.random.default_rng(np.random.SeedSequence((seed, 4000 + k)))
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (start + np.arange(len(idx))) % k
        start = (start + len(idx)) % k
    return folds


def folded_source(specs: list[SourceSpec]) -> int:
    """Index of the source to fold: the one that is not ``sim``, or the only source.

    Raises:
        DataSpecError: several real sources (fold one of them: give the others as their own run) or none.
    """
    if len(specs) == 1:
        return 0
    real = [i for i, s in enumerate(specs) if not s.is_sim]
    if len(real) != 1:
        raise DataSpecError(f"--folds folds the one real (non-sim) source; --data names {len(real)}: "
                            f"{', '.join(specs[i].name for i in real) or 'none'}")
    return real[0]


def _fold_data(sources: Sources, recipe: Recipe, f: int, fold_of: np.ndarray, k: int | None,
               other_train: dict[int, np.ndarray], other_holdout: np.ndarray):
    """The run data of fold ``k`` (None: the final model, the folded source wholly in training)."""
    mine = sources.indices(f)
    train = [(mine if k is None else mine[fold_of != k]) if s == f else other_train[s]
             for s in range(len(sources.specs))]
    return assemble_run(sources, recipe, train, other_holdout)


def run_cross_validation(args: argparse.Namespace) -> dict[str, Any]:
    """``--folds K``: train K networks, score each on its held-out fold; write ``cv.json``; with
    ``--export`` train and export the final model on all the data, with the figure in its ``meta.json``.

    Returns:
        The cross-validation report (also ``runs/<name>/cv.json``).

    Raises:
        DataSpecError: no single source to fold, or ``K`` out of range; SystemExit: in several processes.
    """
    set_device(args.device)
    rank, size = init_distributed()
    if size > 1:
        raise SystemExit("error: --folds runs in one process (drop --procs)")
    k_folds = args.folds
    init = read_init(args.init) if getattr(args, "init", None) else None
    recipe = resolve_recipe(args, init)
    folded_source(parse_sources(args.data))  # a bad --data fails before anything is written
    progress = not args.no_progress
    name = args.name or f"cv{k_folds}-{recipe.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.runs_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    sources = ingest_sources(args, recipe, progress=progress)
    print(format_sources_report(sources), flush=True)
    f = folded_source(sources.specs)
    mine = sources.indices(f)
    labels = sources.cards.labels
    if not 2 <= k_folds <= len(mine):
        raise DataSpecError(f"--folds {k_folds}: needs 2 … {len(mine)} (the cards of {sources.specs[f].name})")
    fold_of = fold_assignment(labels[mine], k_folds, recipe.seed)
    # the other sources (sim) split as in any run: their holdout chooses the epoch, never the fold
    train, holdout = split_by_source(sources, recipe.holdout, recipe.split, recipe.well_pattern, recipe.seed)
    other_train = {s: t for s, t in enumerate(train) if s != f}
    other_holdout = holdout[sources.source_of[holdout] != f]
    if len(other_holdout):
        names = ", ".join(sources.specs[s].name for s in other_train)
        selection = (f"early stop and best epoch on the {names} holdout ({len(other_holdout)} cards); "
                     f"the held-out fold is never seen")
    else:
        selection = "fixed length (the recipe's epochs, last epoch kept): no holdout besides the held-out fold"
    recipe = fit_length_to_data(args, recipe, len(_fold_data(sources, recipe, f, fold_of, 0, other_train,
                                                             other_holdout).balanced))
    measured = sources.specs[f]
    print(f"cross-validation: {k_folds} folds of {measured.name} ({len(mine)} cards, stratified by class, seed "
          f"{recipe.seed}); model selection: {selection}", flush=True)
    init_state = init.state() if init is not None else None
    logdir = Path(args.logdir) / name
    per_fold, pred_all = [], np.full(len(mine), -1, np.int64)
    for k in range(k_folds):
        data = _fold_data(sources, recipe, f, fold_of, k, other_train, other_holdout)
        held_out = mine[fold_of == k]
        if k == 0 and data.sampler is not None:
            print(format_shares(data), flush=True)
        fold_dir = run_dir / f"fold{k + 1}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        write_lists(fold_dir, sources.cards, data.balanced, data.holdout_idx)
        atomic_write_text(fold_dir / "fold.txt", "".join(f"{sources.cards.names[i]} {int(labels[i])}\n"
                                                          for i in held_out))
        writer = None if args.no_vdl else vdl.open_writer(logdir, f"fold{k + 1}")
        try:
            open_part = None if args.no_vdl else (lambda part, k=k: vdl.open_writer(logdir, f"fold{k + 1}-{part}"))
            print(f"\n=== fold {k + 1}/{k_folds}: train {len(data.balanced)} draws, {len(held_out)} held out ===",
                  flush=True)
            net, summary = fit_network(recipe, data, fold_dir, writer=writer, open_part_writer=open_part,
                                       init_state=init_state, progress=progress)
            probs = score_cards(net, recipe, sources, held_out)
            acc, loss = accuracy_and_loss(probs, labels[held_out])
            pred_all[fold_of == k] = probs.argmax(axis=1)
            cm = confusion_matrix(labels[held_out], probs.argmax(axis=1))
            vdl.log_scalars(writer, summary["epoch"], {"cv/fold_acc": acc, "cv/fold_loss": loss})
            vdl.log_confusion(writer, cm, summary["epoch"], tag="cv/fold_confusion_matrix")
        finally:
            if writer is not None:
                writer.close()
        per_fold.append({"fold": k + 1, "cards": int(len(held_out)), "acc": round(acc, 4), "loss": round(loss, 4),
                         "best_epoch": summary["best_epoch"], "epochs_run": summary["epoch"],
                         "selection_holdout_acc": finite(summary["final"]["holdout_acc"]),
                         "recall": {c: v["recall"] for c, v in per_class_report(cm).items() if v["support"]}})
        print(f"fold {k + 1}: accuracy {acc:.4f} on {len(held_out)} cards (best epoch {summary['best_epoch']} "
              f"of {summary['epoch']})", flush=True)
    report = cv_report(sources, f, fold_of, pred_all, per_fold, recipe, selection, init)
    atomic_write_text(run_dir / "cv.json", json.dumps(report, ensure_ascii=False, indent=1))
    print(format_cv_report(report))
    print(f"\ncv.json: {run_dir / 'cv.json'}; VisualDL: visualdl --logdir {logdir} --host 127.0.0.1 "
          f"--disable-telemetry", flush=True)
    if args.export:
        report["final"] = export_final(args, sources, recipe, f, fold_of, other_train, other_holdout, report, name)
        atomic_write_text(run_dir / "cv.json", json.dumps(report, ensure_ascii=False, indent=1))
    return report


def cv_report(sources: Sources, f: int, fold_of: np.ndarray, pred: np.ndarray, per_fold: list[dict[str, Any]],
              recipe: Recipe, selection: str, init) -> dict[str, Any]:
    """The cross-validation figures: per fold, mean ± std, and per class pooled over the folds."""
    mine = sources.indices(f)
    y = sources.cards.labels[mine]
    cm = confusion_matrix(y, pred)
    accs = np.array([p["acc"] for p in per_fold])
    spec = sources.specs[f]
    return {
        "measured_on": {"source": spec.name, "data": spec.spec, "cards": int(len(mine)),
                        "fingerprint": sources.reports[spec.name]["fingerprint"],
                        "classes": [CODES[c] for c in np.unique(y)]},
        "folds": len(per_fold), "seed": recipe.seed, "stratified": "by class, by card",
        "model_selection": selection,
        "trained_on": [{"name": s.name, "data": s.spec, "share": s.share,
                        "cards": "the other folds" if i == f else "its training split"}
                       for i, s in enumerate(sources.specs)],
        "mean": round(float(accs.mean()), 4), "std": round(float(accs.std(ddof=1)), 4) if len(accs) > 1 else 0.0,
        "pooled_acc": round(float((pred == y).mean()), 4),
        "per_fold": per_fold,
        "per_class": {c: v for c, v in per_class_report(cm).items() if v["support"]},
        "confusion": {"labels": list(CODES), "rows_are": "true class", "matrix": cm.tolist()},
        "recipe": recipe.to_dict(), **({"init": init.provenance()} if init is not None else {}),
        "predictions": [{"name": sources.cards.names[i], "label": CODES[int(t)], "pred": CODES[int(p)],
                         "fold": int(k) + 1} for i, t, p, k in zip(mine, y, pred, fold_of)],
    }


def cv_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What ``meta.json`` → ``metrics.cross_validation`` keeps of a report (no per-card predictions)."""
    return {"measured_on": report["measured_on"], "folds": report["folds"], "seed": report["seed"],
            "model_selection": report["model_selection"], "mean": report["mean"], "std": report["std"],
            "pooled_acc": report["pooled_acc"], "per_fold": [p["acc"] for p in report["per_fold"]],
            "per_class": report["per_class"],
            "note": f"{report['folds']}-fold cross-validation on {report['measured_on']['source']}: each fold "
                    f"scored by a network trained without it; the exported model is trained on all of it"}


def format_cv_report(report: dict[str, Any]) -> str:
    """The per-fold accuracies, mean ± std, and the pooled per-class table and confusion."""
    m = report["measured_on"]
    lines = [f"\ncross-validation on {m['source']} ({m['cards']} cards, {report['folds']} folds): "
             f"accuracy {report['mean']:.4f} ± {report['std']:.4f} (mean ± std of folds; pooled "
             f"{report['pooled_acc']:.4f})",
             "  folds: " + ", ".join(f"{p['acc']:.4f}" for p in report["per_fold"]),
             f"  model selection: {report['model_selection']}", "",
             "class  precision  recall     f1  support   (pooled over the folds)"]
    for code, r in report["per_class"].items():
        lines.append(f"{code}   {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['support']:8d}")
    present = [i for i, c in enumerate(CODES) if c in report["per_class"]]
    matrix = np.array(report["confusion"]["matrix"])
    lines += ["", "confusion (rows = true, columns = predicted)", "     " + " ".join(f"{CODES[j][1:]:>4}" for j in range(12))]
    for i in present:
        lines.append(f"{CODES[i]}  " + " ".join(f"{v:4d}" for v in matrix[i]))
    return "\n".join(lines)


def export_final(args: argparse.Namespace, sources: Sources, recipe: Recipe, f: int, fold_of: np.ndarray,
                 other_train: dict[int, np.ndarray], other_holdout: np.ndarray, report: dict[str, Any],
                 name: str) -> dict[str, Any]:
    """Train the final model on all the data (the folded source wholly in training, the other sources'
    holdout for selection as in the folds) and export it with the cross-validated figure."""
    data = _fold_data(sources, recipe, f, fold_of, None, other_train, other_holdout)
    a = copy.copy(args)
    a.name, a.runs_dir, a.logdir, a.resume = "final", str(Path(args.runs_dir) / name), str(Path(args.logdir) / name), None
    a.out = args.out or str(MODELS_DIR / name)
    a.no_export = False
    print(f"\n=== final model: all {len(sources.indices(f))} cards of {sources.specs[f].name} in training ===",
          flush=True)
    result = train_run(a, data=data, extra_metrics={"cross_validation": cv_summary(report)})
    return {"run_dir": result["run_dir"], "export": result.get("export")}
