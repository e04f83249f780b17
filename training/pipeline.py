"""The train stage, one function per step: data -> fit -> metrics and export metadata -> export -> summary.

:func:`train_run` is what ``python training/run.py [train] …`` does once its arguments are parsed:

1. :func:`prepare_data` resolves ``--data``, ingests it (images, and the series for series/dual
   networks), splits off the holdout and balances the training side;
2. the network of the recipe is fitted on it (:func:`training.train.fit`, or two fits then a weight for a
   late-fusion network, :func:`training.late_fusion.fit_late_fusion`), with a run folder and VisualDL;
3. :func:`run_metrics` and :func:`export_metadata` describe the result; :func:`training.export.export_model`
   writes the model folder for the network's input kind; the summary is written and printed.

:func:`compare_runs` trains several variants of one recipe on the same data (``compare-models``,
``compare-lr``). Only rank 0 of a data-parallel run writes files, logs or prints.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import atomic_write_text
from shared.preprocess import PreprocessConfig
from training import vdl
from training.data import (DEFAULT_SIM, CardSet, class_counts, format_ingest_report, load_data, oversample,
                           resolve_source, simulator_digest, split_indices, write_lists)
from training.distributed import barrier, init_distributed, set_device, shared_value
from training.export import export_model
from training.late_fusion import fit_late_fusion
from training.models import count_parameters, network, network_kind
from training.recipe import Recipe, fit_length_to_data, resolve_recipe
from training.series_data import cards_with_series
from training.train import fit

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


@dataclass
class RunData:
    """The cards of a run, split: ``train_idx`` and its balanced form ``balanced`` (what is trained on),
    ``holdout_idx``; ``series`` aligned with ``cards`` for series and dual networks (else None)."""

    cards: CardSet
    preprocess: PreprocessConfig
    train_idx: np.ndarray
    balanced: np.ndarray
    holdout_idx: np.ndarray
    series: np.ndarray | None


def prepare_data(args: argparse.Namespace, recipe: Recipe, rank: int = 0, size: int = 1,
                 progress: bool = True) -> RunData:
    """Resolve the source, ingest it (rank 0 first, so the others read the cache), split and balance.

    Raises:
        SystemExit: a series or dual run on a source where no card has a usable CSV.
    """
    config = PreprocessConfig(method=recipe.preprocess)

    def ingest(show: bool) -> tuple[Path, CardSet]:
        source = resolve_source(args.data, args.cache_dir, sim_per_class=recipe.sim_per_class, progress=show)
        return source, load_data(source, config, cache_dir=args.cache_dir, keep_ink=recipe.augment, progress=show)

    if rank == 0:
        source, cs = ingest(progress)
    barrier(size)
    if rank != 0:
        source, cs = ingest(False)
    series = None
    if recipe.input != "image":  # series and dual need each card's CSV: cards without one are skipped, counted
        cs, series = cards_with_series(cs, cache_dir=args.cache_dir, progress=progress and rank == 0)
        report = cs.report["series"]
        if rank == 0:
            print(f"series ({recipe.input}): {report['with_series']} cards with a usable CSV, "
                  f"{report['without_series']} skipped {report['by_reason'] or ''}", flush=True)
        if not len(cs):
            raise SystemExit(f"error: --input {recipe.input}: no card of {source} has a usable CSV")
    train_idx, holdout_idx = split_indices(cs.names, cs.labels, recipe.holdout, recipe.split, recipe.well_pattern,
                                           recipe.seed)
    balanced = oversample(train_idx, cs.labels, recipe.per_class_target, recipe.seed)
    return RunData(cs, config, train_idx, balanced, holdout_idx, series)


def run_name(args: argparse.Namespace, recipe: Recipe, size: int) -> str:
    """``--resume``'s run, ``--name``, the latest run for a bare ``--resume``, else ``<model>-<time>``."""
    if args.resume:
        return Path(args.resume).name
    if args.name:
        return args.name
    if args.resume == "":
        root = Path(args.runs_dir)
        # a late-fusion dual run keeps one checkpoint per part: runs/<run>/<part>/checkpoint
        states = [*root.glob("*/checkpoint/state.json"), *root.glob("*/*/checkpoint/state.json")]
        runs = sorted(states, key=lambda p: p.stat().st_mtime)
        if runs:
            return runs[-1].relative_to(root).parts[0]
    stamp = shared_value(int(time.time()), size)
    return f"{recipe.model}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}"


def write_run_config(run_dir: Path, name: str, args: argparse.Namespace, recipe: Recipe, data: RunData,
                     device: str, size: int) -> None:
    """The run folder's record of what is trained on: split lists, ingest report, ``config.json``."""
    cs = data.cards
    write_lists(run_dir, cs, data.balanced, data.holdout_idx)
    atomic_write_text(run_dir / "data_report.json", json.dumps(cs.report, ensure_ascii=False, indent=1))
    config_doc = {"name": name, "recipe": recipe.to_dict(), "data": args.data, "source": cs.source,
                  "data_fingerprint": cs.fingerprint, "preprocess": data.preprocess.to_dict(), "device": device,
                  "world_size": size, "logdir": str(Path(args.logdir) / name), "argv": sys.argv[1:],
                  "train_per_class": class_counts(cs.labels[data.balanced]),
                  "holdout_per_class": class_counts(cs.labels[data.holdout_idx])}
    atomic_write_text(run_dir / "config.json", json.dumps(config_doc, ensure_ascii=False, indent=1))


def run_metrics(summary: dict[str, Any], data: RunData) -> dict[str, Any]:
    """The figures of a finished fit (holdout accuracy and loss, epochs, speed, per class, confusion)."""
    return {
        "holdout_acc": round(summary["final"]["holdout_acc"], 4),
        "holdout_loss": round(summary["final"]["holdout_loss"], 4),
        "best_epoch": summary["best_epoch"], "epochs_run": summary["epoch"],
        "stopped_early": summary["stopped_early"],
        "holdout_cards": int(len(data.holdout_idx)), "train_cards": int(len(data.balanced)),
        "train_samples_per_s": summary["samples_per_s"], "train_seconds": round(summary["train_seconds"], 1),
        "per_class": summary["per_class"], "confusion": summary["confusion"],
        **({"late_fusion": summary["late_fusion"]} if "late_fusion" in summary else {}),
    }


def export_metadata(args: argparse.Namespace, recipe: Recipe, data: RunData, metrics: dict[str, Any],
                    parameters: int, name: str, out: Path) -> dict[str, Any]:
    """What the run adds to the exported ``meta.json``: metrics, recipe, data provenance, parameters, run."""
    cs = data.cards
    return {
        "name": out.name, "architecture": recipe.model,
        **({"preprocess": data.preprocess.to_dict()} if recipe.input != "series" else {}),
        "metrics": {k: v for k, v in metrics.items() if k != "confusion"},
        "recipe": recipe.to_dict(),
        "data": {"source": args.data if args.data == "sim" else Path(cs.source).name,
                 "fingerprint": cs.fingerprint, "cards": len(cs), "split": recipe.split,
                 "holdout": recipe.holdout, "train_per_class": class_counts(cs.labels[data.balanced]),
                 **({"simulator": {"digest": simulator_digest(), "per_class": recipe.sim_per_class,
                                   "seed": DEFAULT_SIM["seed"]}} if args.data == "sim" else {})},
        "parameters": parameters, "run": name,
    }


def train_run(args: argparse.Namespace, data: RunData | None = None) -> dict[str, Any]:
    """Train, export and summarise one run. Returns the summary (metrics, paths).

    Args:
        args: the parsed ``train`` arguments (:func:`training.run.build_parser`).
        data: the prepared cards, when the caller already has them (``compare_runs``); else prepared here.
    """
    device = set_device(args.device)
    rank, size = init_distributed()
    recipe = resolve_recipe(args)
    progress = not args.no_progress and rank == 0
    name = run_name(args, recipe, size)
    run_dir = Path(args.resume) if args.resume and Path(args.resume).is_dir() else Path(args.runs_dir) / name
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    if data is None:
        data = prepare_data(args, recipe, rank, size, progress)
    cs = data.cards
    recipe = fit_length_to_data(args, recipe, len(data.balanced), size, announce=rank == 0)
    if rank == 0:
        print(format_ingest_report(cs.report), flush=True)
        print(f"split ({recipe.split}): {len(data.train_idx)} train -> {len(data.balanced)} after balancing, "
              f"{len(data.holdout_idx)} holdout", flush=True)
        write_run_config(run_dir, name, args, recipe, data, device, size)
    writer = vdl.open_writer(args.logdir, name) if rank == 0 and not args.no_vdl else None
    try:
        common = {"resume": args.resume is not None, "progress": progress, "rank": rank, "size": size,
                  "stop_after": args.stop_after, "series": data.series}
        if network(recipe.model).late_fusion:  # two networks, each trained and stopped on its own, then a weight
            open_part_writer = None if args.no_vdl else (lambda part: vdl.open_writer(args.logdir, f"{name}-{part}"))
            net, summary = fit_late_fusion(recipe, cs, data.balanced, data.holdout_idx, run_dir,
                                           open_writer=open_part_writer, **common)
        else:
            net, summary = fit(recipe, cs, data.balanced, data.holdout_idx, run_dir, writer=writer, **common)
        if summary.get("interrupted"):
            if rank == 0:
                print(f"stopped after epoch {summary['epoch']} (resume with --resume {run_dir})", flush=True)
            return {"name": name, "run_dir": str(run_dir), "interrupted": True}
        metrics = run_metrics(summary, data)
        result = {"name": name, "run_dir": str(run_dir), "model": recipe.model, "metrics": metrics,
                  "parameters": count_parameters(net), "interrupted": False}
        if rank == 0:
            vdl.log_scalars(writer, summary["epoch"], {"final/holdout_acc": metrics["holdout_acc"],
                                                       "final/holdout_loss": metrics["holdout_loss"]})
            vdl.log_hparams(writer, {**recipe.to_dict(), "data": args.data},
                            ["final/holdout_acc", "final/holdout_loss"])
            if writer is not None:
                writer.flush()
            if not args.no_export:
                out = Path(args.out) if args.out else MODELS_DIR / name
                export_model(net, out, export_metadata(args, recipe, data, metrics, result["parameters"], name, out),
                             kind=network_kind(recipe.model))
                result["export"] = str(out)
            if writer is not None and not args.no_graph and recipe.input == "image":
                vdl.log_graph(args.logdir, name, recipe.model)
            result["wall_seconds"] = round(time.perf_counter() - wall, 1)
            atomic_write_text(run_dir / "summary.json", json.dumps(result, ensure_ascii=False, indent=1))
            print_summary(result)
        return result
    finally:
        if writer is not None:
            writer.close()


def print_summary(r: dict[str, Any]) -> None:
    """The few lines a finished run prints: accuracy, epochs, late-fusion parts, speed, folders."""
    m = r["metrics"]
    print(f"\nrun {r['name']}: {r['model']} ({r['parameters']:,} parameters)")
    print(f"  holdout accuracy {m['holdout_acc']:.4f}  loss {m['holdout_loss']:.4f}  "
          f"(best epoch {m['best_epoch']} of {m['epochs_run']}{', early stop' if m['stopped_early'] else ''})")
    if "late_fusion" in m:
        lf = m["late_fusion"]
        print(f"  late fusion: image {lf['image']['holdout_acc']:.4f} (best epoch {lf['image']['best_epoch']}), "
              f"series {lf['series']['holdout_acc']:.4f} (best epoch {lf['series']['best_epoch']}); image weight "
              f"{lf['image_weight']:g}; cross-fitted {lf['holdout_acc_crossfit']:.4f}")
    print(f"  training {m['train_samples_per_s']:.0f} cards/s, {m['train_seconds']:.0f} s; wall {r.get('wall_seconds', 0):.0f} s")
    print(f"  run folder {r['run_dir']}" + (f"\n  exported   {r['export']}" if r.get("export") else ""), flush=True)


def compare_runs(args: argparse.Namespace, variants: list[tuple[str, dict[str, Any]]],
                 group: str) -> list[dict[str, Any]]:
    """Train each variant into ``<logdir>/<group>/<variant>`` with identical tags; print a table.

    Args:
        variants: ``(label, {argument: value})``: each overrides the parsed arguments for one run.
        group: the comparison's name (a time stamp is added unless ``--name`` is given).
    """
    set_device(args.device)
    rank, size = init_distributed()
    stamp = shared_value(int(time.time()), size)
    group = f"{group}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}" if not args.name else args.name
    results = []
    prepared = None  # ((preprocess, input), RunData): variants that read the same inputs share the data
    for label, overrides in variants:
        a = copy.copy(args)
        for k, v in overrides.items():
            setattr(a, k, v)
        a.name = label
        a.logdir = str(Path(args.logdir) / group)
        a.runs_dir = str(Path(args.runs_dir) / group)
        a.no_export = True if not args.out else args.no_export
        a.resume = None
        recipe = resolve_recipe(a)
        if prepared is None or prepared[0] != (recipe.preprocess, recipe.input):
            prepared = ((recipe.preprocess, recipe.input),
                        prepare_data(a, recipe, rank, size, not args.no_progress and rank == 0))
        if rank == 0:
            print(f"\n=== {group}: {label} ===", flush=True)
        results.append(train_run(a, data=prepared[1]))
    if rank == 0:
        print(f"\n{group} (VisualDL: visualdl --logdir {Path(args.logdir) / group} --host 127.0.0.1 --disable-telemetry)")
        print(f"{'run':<12} {'holdout acc':>11} {'holdout loss':>12} {'best ep':>7} {'cards/s':>8} {'train s':>8}")
        for r in results:
            m = r["metrics"]
            print(f"{r['name']:<12} {m['holdout_acc']:>11.4f} {m['holdout_loss']:>12.4f} {m['best_epoch']:>7} "
                  f"{m['train_samples_per_s']:>8.0f} {m['train_seconds']:>8.0f}")
        atomic_write_text(Path(args.runs_dir) / group / "comparison.json",
                          json.dumps([{"name": r["name"], **{k: v for k, v in r["metrics"].items()
                                                              if k not in ("per_class", "confusion")}}
                                      for r in results], indent=1))
    return results
