"""k-fold cross-validation (``--folds K``): a figure for small sets, and for judging a mix of sources.

The real source of the run (the one that is not ``sim``; or the only source) is dealt into ``K``
stratified folds (:func:`fold_assignment`, deterministic from the seed). For each fold a network is
trained on everything else — every other source's training cards and the other ``K - 1`` folds — and
scored on the held-out fold, which takes no part in training or in choosing the epoch:

* with ``sim`` in the mix, early stopping and the best epoch are chosen on the simulated holdout;
* without it, the recipe's length is trained and the last epoch kept (no holdout at all).

With ``--other-class`` the folded source's cards of other conditions (its ``<name>-other`` source) are dealt
into ``K`` folds too and held out with the fold, so every one of them is scored out of fold as well; the
generated not-a-card pictures always train. The out-of-fold outputs of the real cards -- of the twelve
conditions and of other conditions -- then fit the temperature, the review rule and the open-set threshold
(:mod:`training.answer_rules`): ``cv.json`` → ``answer_rules``, ``reliability.png``, ``answer_rules.json``
(``oof.npz`` keeps every folded card's out-of-fold outputs), and with ``--export`` the exported ``meta.json``
→ ``confidence`` and ``open_set``.

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
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import atomic_write_bytes, atomic_write_text
from shared.labels import CODES
from training import vdl
from training.data import write_lists
from training.distributed import init_distributed, set_device
from training.answer_rules import ACCEPT_RATE, REVIEW_PRECISION, AnswerRules, fit_answer_rules, format_answer_rules
from training.classes import OTHER, label_code
from training.metrics import confusion_matrix, other_figures, other_probability, per_class_report, twelve_way
from training.pipeline import (MODELS_DIR, assemble_run, fit_network, finite, format_shares, ingest_sources,
                               run_sources, score_cards, train_run, write_rules)
from training.recipe import Recipe, fit_length_to_data, resolve_recipe
from training.sources import DataSpecError, SourceSpec, Sources, format_sources_report, split_by_source
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
    cards = [i for i, s in enumerate(specs) if s.role == "cards"]
    if len(cards) == 1:
        return cards[0]
    real = [i for i in cards if not specs[i].is_sim]
    if len(real) != 1:
        raise DataSpecError(f"--folds folds the one real (non-sim) source; --data names {len(real)}: "
                            f"{', '.join(specs[i].name for i in real) or 'none'}")
    return real[0]


def _fold_data(sources: Sources, recipe: Recipe, folded: dict[int, np.ndarray], k: int | None,
               other_train: dict[int, np.ndarray], other_holdout: np.ndarray):
    """The run data of fold ``k`` (None: the final model, the folded sources wholly in training).

    ``folded``: source index -> the fold of each of its cards (the folded source, and its cards of other
    conditions with ``--other-class``); the other sources train on their training split.
    """
    train = [(sources.indices(s) if k is None else sources.indices(s)[folded[s] != k]) if s in folded
             else other_train[s] for s in range(len(sources.specs))]
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
    folded_source(run_sources(args, recipe))  # a bad --data fails before anything is written
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
    folded = {f: fold_of}
    c = sources.companion(f)  # its cards of other conditions (--other-class): held out with their fold
    if c is not None:
        folded[c] = fold_assignment(labels[sources.indices(c)], k_folds, recipe.seed + 1)
    scored = np.concatenate([sources.indices(s) for s in folded])  # every folded card, scored once
    fold_all = np.concatenate(list(folded.values()))
    # the other sources (sim) split as in any run: their holdout chooses the epoch, never the fold
    train, holdout = split_by_source(sources, recipe.holdout, recipe.split, recipe.well_pattern, recipe.seed)
    other_train = {s: t for s, t in enumerate(train) if s not in folded}
    other_holdout = holdout[~np.isin(sources.source_of[holdout], list(folded))]
    if len(other_holdout):
        names = ", ".join(sorted({sources.specs[s].name for s in sources.source_of[other_holdout]}))
        selection = (f"early stop and best epoch on the {names} holdout ({len(other_holdout)} cards); "
                     f"the held-out fold is never seen")
    else:
        selection = "fixed length (the recipe's epochs, last epoch kept): no holdout besides the held-out fold"
    recipe = fit_length_to_data(args, recipe, len(_fold_data(sources, recipe, folded, 0, other_train,
                                                             other_holdout).balanced))
    measured = sources.specs[f]
    also = f" + {len(sources.indices(c))} cards of other conditions ({sources.specs[c].name})" if c is not None else ""
    print(f"cross-validation: {k_folds} folds of {measured.name} ({len(mine)} cards{also}, stratified by class, seed "
          f"{recipe.seed}); model selection: {selection}", flush=True)
    init_state = init.state() if init is not None else None
    logdir = Path(args.logdir) / name
    per_fold, outputs_all = [], None
    for k in range(k_folds):
        data = _fold_data(sources, recipe, folded, k, other_train, other_holdout)
        held_out = scored[fold_all == k]
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
            outputs = score_cards(net, recipe, sources, held_out)
            if outputs_all is None:
                outputs_all = np.zeros((len(scored), outputs.shape[1]))
            outputs_all[fold_all == k] = outputs
            t = twelve_way(outputs, labels[held_out])  # the twelve conditions' figures on the fold's cards of them
            acc, loss, cm = t["acc"], t["loss"], t["confusion"]
            fold_other = other_figures(outputs, labels[held_out])
            vdl.log_scalars(writer, summary["epoch"], {"cv/fold_acc": acc, "cv/fold_loss": loss})
            vdl.log_confusion(writer, cm, summary["epoch"], tag="cv/fold_confusion_matrix")
        finally:
            if writer is not None:
                writer.close()
        per_fold.append({"fold": k + 1, "cards": int(t["mask"].sum()), "acc": round(acc, 4), "loss": round(loss, 4),
                         "best_epoch": summary["best_epoch"], "epochs_run": summary["epoch"],
                         "selection_holdout_acc": finite(summary["final"]["holdout_acc"]),
                         "recall": {c: v["recall"] for c, v in per_class_report(cm).items() if v["support"]},
                         **({"other": fold_other} if fold_other else {})})
        print(f"fold {k + 1}: accuracy {acc:.4f} on {int(t['mask'].sum())} cards (best epoch {summary['best_epoch']} "
              f"of {summary['epoch']})" + (f"; {fold_other['other_cards']} cards of other conditions held out too"
                                           if fold_other and fold_other["other_cards"] else ""), flush=True)
    report = cv_report(sources, scored, fold_all, outputs_all, per_fold, recipe, selection, init, f)
    buffer = io.BytesIO()  # every folded card's out-of-fold outputs, to refit or study the rules later
    np.savez_compressed(buffer, names=np.asarray([sources.cards.names[i] for i in scored]), labels=labels[scored],
                        fold=fold_all + 1, outputs=outputs_all)
    atomic_write_bytes(run_dir / "oof.npz", buffer.getvalue())
    rules = fit_oof_rules(args, sources, scored, outputs_all, report, recipe)
    if rules is not None:
        report["answer_rules"] = {"meta": rules.meta(), "report": rules.report}
        write_rules(run_dir, rules, f"{name}: out of fold, {report['measured_on']['source']}")
    atomic_write_text(run_dir / "cv.json", json.dumps(report, ensure_ascii=False, indent=1))
    print(format_cv_report(report))
    if rules is not None:
        print("\n" + format_answer_rules(rules) + f"\n  reliability diagram: {run_dir / 'reliability.png'}")
    print(f"\ncv.json: {run_dir / 'cv.json'}; VisualDL: visualdl --logdir {logdir} --host 127.0.0.1 "
          f"--disable-telemetry", flush=True)
    if args.export:
        report["final"] = export_final(args, sources, recipe, folded, other_train, other_holdout, report, name, rules)
        atomic_write_text(run_dir / "cv.json", json.dumps(report, ensure_ascii=False, indent=1))
    return report


def fit_oof_rules(args: argparse.Namespace, sources: Sources, scored: np.ndarray, outputs: np.ndarray,
                  report: dict[str, Any], recipe: Recipe) -> AnswerRules | None:
    """Temperature, review rule and open-set threshold fitted on the out-of-fold outputs of the folded cards
    (:func:`training.answer_rules.fit_answer_rules`); None (with a line) when there are too few."""
    m = report["measured_on"]
    other = report.get("other_class", {}).get("other_cards", 0)
    fitted_on = (f"out-of-fold outputs of {report['folds']}-fold cross-validation on {m['source']}: {m['cards']} cards of "
                 f"the twelve conditions{f' + {other} of other conditions' if other else ''}, each scored by a network "
                 f"trained without it (the exported model is trained on all of them)")
    try:
        return fit_answer_rules(outputs, sources.cards.labels[scored], fitted_on,
                                names=[sources.cards.names[i] for i in scored],
                                review_precision=getattr(args, "review_precision", None) or REVIEW_PRECISION,
                                accept_rate=getattr(args, "accept_rate", None) or ACCEPT_RATE, seed=recipe.seed, cv=True)
    except ValueError as exc:
        print(f"answer rules not fitted: {exc}", flush=True)
        return None


def cv_report(sources: Sources, scored: np.ndarray, fold_of: np.ndarray, outputs: np.ndarray,
              per_fold: list[dict[str, Any]], recipe: Recipe, selection: str, init, f: int) -> dict[str, Any]:
    """The cross-validation figures: per fold, mean ± std, and per class pooled over the folds (the twelve
    conditions' figures on the folded source's cards of them); "other" on its own (``other_class``).

    Args:
        scored: every folded card (the folded source's, then its cards of other conditions), fold_of their
            folds (0 …), outputs their out-of-fold raw outputs; f: the folded source.
    """
    labels = sources.cards.labels[scored]
    t = twelve_way(outputs, labels)
    mine = t["mask"]
    y, pred = labels[mine], t["pred"][mine]
    cm = confusion_matrix(y, pred)
    accs = np.array([p["acc"] for p in per_fold])
    spec = sources.specs[f]
    p_other = other_probability(outputs)
    other = other_figures(outputs, labels)
    return {
        "measured_on": {"source": spec.name, "data": spec.spec, "cards": int(mine.sum()),
                        "fingerprint": sources.reports[spec.name]["fingerprint"],
                        "classes": [CODES[c] for c in np.unique(y)]},
        "folds": len(per_fold), "seed": recipe.seed, "stratified": "by class, by card",
        "model_selection": selection,
        "trained_on": [{"name": s.name, "data": s.spec, "share": s.share,
                        "cards": "the other folds" if s.name == spec.name or s.of == spec.name else
                        "all its cards" if s.role == "notcards" else "its training split"}
                       for s in sources.specs],
        "mean": round(float(accs.mean()), 4), "std": round(float(accs.std(ddof=1)), 4) if len(accs) > 1 else 0.0,
        "pooled_acc": round(float((pred == y).mean()), 4),
        "per_fold": per_fold,
        "per_class": {c: v for c, v in per_class_report(cm).items() if v["support"]},
        "confusion": {"labels": list(CODES), "rows_are": "true class", "matrix": cm.tolist()},
        **({"other_class": other} if other else {}),
        "recipe": recipe.to_dict(), **({"init": init.provenance()} if init is not None else {}),
        "predictions": [{"name": sources.cards.names[i], "label": label_code(int(lab)), "pred": CODES[int(p)],
                         "fold": int(k) + 1,
                         **({"p_other": round(float(po), 4), "called_other": bool(int(o.argmax()) == OTHER)}
                            if p_other is not None else {})}
                        for i, lab, p, k, po, o in zip(scored, labels, t["pred"], fold_of,
                                                       p_other if p_other is not None else np.zeros(len(scored)),
                                                       outputs)],
    }


def cv_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What ``meta.json`` → ``metrics.cross_validation`` keeps of a report (no per-card predictions)."""
    return {"measured_on": report["measured_on"], "folds": report["folds"], "seed": report["seed"],
            "model_selection": report["model_selection"], "mean": report["mean"], "std": report["std"],
            "pooled_acc": report["pooled_acc"], "per_fold": [p["acc"] for p in report["per_fold"]],
            "per_class": report["per_class"], **({"other_class": report["other_class"]} if "other_class" in report else {}),
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
    other = report.get("other_class")
    if other and other["other_cards"]:
        lines += ["", f"other (out of fold, largest of the 13 outputs, no threshold): {other['other_recall']:.1%} of "
                      f"{other['other_cards']} cards of other conditions answered other; "
                      f"{other['in_class_called_other']:.1%} of the {other['in_class_cards']} cards of the twelve"]
    return "\n".join(lines)


def export_final(args: argparse.Namespace, sources: Sources, recipe: Recipe, folded: dict[int, np.ndarray],
                 other_train: dict[int, np.ndarray], other_holdout: np.ndarray, report: dict[str, Any],
                 name: str, rules: AnswerRules | None = None) -> dict[str, Any]:
    """Train the final model on all the data (the folded cards wholly in training, the other sources'
    holdout for selection as in the folds) and export it with the cross-validated figure and the answer
    rules fitted out of fold."""
    data = _fold_data(sources, recipe, folded, None, other_train, other_holdout)
    a = copy.copy(args)
    a.name, a.runs_dir, a.logdir, a.resume = "final", str(Path(args.runs_dir) / name), str(Path(args.logdir) / name), None
    a.out = args.out or str(MODELS_DIR / name)
    a.no_export = False
    print(f"\n=== final model: all {sum(len(sources.indices(s)) for s in folded)} cards of "
          f"{' + '.join(sources.specs[s].name for s in folded)} in training ===", flush=True)
    result = train_run(a, data=data, extra_metrics={"cross_validation": cv_summary(report)}, rules=rules)
    return {"run_dir": result["run_dir"], "export": result.get("export")}
