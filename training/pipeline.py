"""The train stage, one function per step: data -> fit -> metrics and export metadata -> export -> summary.

:func:`train_run` is what ``python training/run.py [train] …`` does once its arguments are parsed:

1. :func:`prepare_data` resolves ``--data``, ingests it (images, and the series for series/dual
   networks), splits off the holdout and balances the training side;
2. the network of the recipe is fitted on it (:func:`training.train.fit`, or two fits then a weight for a
   late-fusion network, :func:`training.late_fusion.fit_late_fusion`), with a run folder and VisualDL;
3. :func:`run_metrics` and :func:`export_metadata` describe the result; :func:`fit_holdout_rules` fits the
   temperature, review rule and open-set threshold on held-out real cards (:mod:`training.answer_rules`;
   a ``--folds K --export`` run brings its own, fitted out of fold); :func:`training.export.export_model`
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

from shared.atomic import atomic_write_bytes, atomic_write_text
from shared.preprocess import PreprocessConfig
from training import vdl
from training.answer_rules import (ACCEPT_RATE, MIN_FIT_CARDS, MIN_REAL_CARDS, REVIEW_PRECISION, SIM_WARNING,
                                   AnswerRules, fit_answer_rules, format_answer_rules, reliability_png)
from training.classes import label_code, num_outputs
from training.data import DEFAULT_SIM, CardSet, class_counts, oversample, simulator_digest, write_lists
from training.distributed import barrier, init_distributed, set_device, shared_value
from training.export import export_model
from training.late_fusion import fit_late_fusion
from training.metrics import in_class
from training.models import count_parameters, network, network_kind
from training.recipe import Recipe, fit_length_to_data, preset_name, resolve_recipe
from training.sources import (ShareSampler, SourceSpec, Sources, format_sources_report, load_sources, other_sources,
                              parse_sources, data_words, split_by_source, training_draws)
from training.inputs import make_inputs
from training.train import fit, predict
from training.warm_start import InitModel, read_init

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MIN_HOLDOUT_PER_CLASS = 10  # fewer holdout cards in a class than this: the figure is noise (issue 16)


@dataclass
class RunData:
    """The cards of a run, split: each source's training cards ``pools`` (balanced), epoch 0's training
    draws ``balanced`` (all pools, or drawn by the shares with ``sampler`` for every epoch),
    ``holdout_idx``; ``sources`` holds the merged cards, their series (series/dual) and each card's source."""

    sources: Sources
    preprocess: PreprocessConfig
    train_idx: np.ndarray
    pools: list[np.ndarray]
    balanced: np.ndarray
    holdout_idx: np.ndarray
    sampler: ShareSampler | None = None

    @property
    def cards(self) -> CardSet:
        """All cards of the run (every source, merged)."""
        return self.sources.cards

    @property
    def series(self) -> np.ndarray | None:
        """The series of every card (series and dual networks), else None."""
        return self.sources.series

    def source_masks(self, idx: np.ndarray) -> dict[str, np.ndarray] | None:
        """Source name -> which of the cards ``idx`` come from it (None for a one-source run)."""
        if len(self.sources.specs) < 2:
            return None
        return {sp.name: self.sources.source_of[idx] == s for s, sp in enumerate(self.sources.specs)}


def run_sources(args: argparse.Namespace, recipe: Recipe) -> list[SourceSpec]:
    """The sources of a run: the ``--data`` words, and the sources of class "other" with ``--other-class``
    (:func:`training.sources.other_sources`).

    Raises:
        training.sources.DataSpecError: a bad ``--data``, or ``--other-class`` with nothing to learn it from.
    """
    specs = parse_sources(args.data)
    return specs + other_sources(specs, recipe.input) if recipe.other_class else specs


def ingest_sources(args: argparse.Namespace, recipe: Recipe, rank: int = 0, size: int = 1,
                   progress: bool = True) -> Sources:
    """Every source of the run (:func:`run_sources`) ingested (rank 0 first, so the others read the cache),
    with the series for series/dual networks, outline masks for ``--augment`` and strokes for ``--render-augment``.

    Raises:
        training.sources.DataSpecError: a bad ``--data``, or no usable CSV for a series/dual run.
    """
    specs = run_sources(args, recipe)
    config = PreprocessConfig(method=recipe.preprocess)

    image = recipe.input != "series"  # the image augmentations need outlines and strokes; a series net does not

    def ingest(show: bool) -> Sources:
        return load_sources(specs, config, recipe.input, args.cache_dir, recipe.sim_per_class,
                            keep_ink=recipe.augment and image, keep_strokes=recipe.render_augment and image,
                            progress=show)

    if rank == 0:
        sources = ingest(progress)
    barrier(size)
    if rank != 0:
        sources = ingest(False)
    if recipe.input != "image" and rank == 0:
        for spec in specs:
            report = sources.reports[spec.name]["series"]
            print(f"series ({recipe.input}, {spec.name}): {report['with_series']} cards with a usable CSV, "
                  f"{report['without_series']} skipped {report['by_reason'] or ''}", flush=True)
    return sources


def split_run(sources: Sources, recipe: Recipe) -> RunData:
    """Each source split on its own (:func:`training.sources.split_by_source`), balanced, mixed by the shares."""
    train, holdout_idx = split_by_source(sources, recipe.holdout, recipe.split, recipe.well_pattern, recipe.seed)
    return assemble_run(sources, recipe, train, holdout_idx)


def assemble_run(sources: Sources, recipe: Recipe, train: list[np.ndarray], holdout_idx: np.ndarray) -> RunData:
    """A run's data from each source's training cards and the holdout: balanced per source, then drawn
    by the shares (:func:`training.sources.training_draws`)."""
    labels = sources.cards.labels
    pools = [oversample(t, labels, recipe.per_class_target, recipe.seed) for t in train]
    balanced, sampler = training_draws(pools, sources.specs, recipe.seed)
    train_idx = np.sort(np.concatenate(train)).astype(np.int64)
    return RunData(sources, PreprocessConfig(method=recipe.preprocess), train_idx, pools, balanced,
                   np.asarray(holdout_idx, np.int64), sampler)


def prepare_data(args: argparse.Namespace, recipe: Recipe, rank: int = 0, size: int = 1,
                 progress: bool = True) -> RunData:
    """Resolve the sources, ingest them, split each and balance (:func:`ingest_sources`, :func:`split_run`)."""
    return split_run(ingest_sources(args, recipe, rank, size, progress), recipe)


def format_shares(data: RunData) -> str:
    """One line: each source's training cards and draws per epoch (a run with shares)."""
    return "shares: " + ", ".join(f"{d['name']} {d['train_cards']} cards -> {d['draws_per_epoch']} draws per epoch "
                                  f"({d['epoch_share']:.0%})" for d in data.sampler.describe(data.sources.specs))


def small_holdout_warning(data: RunData, minimum: int = MIN_HOLDOUT_PER_CLASS) -> str | None:
    """A one-line warning when a class of a source has fewer than ``minimum`` holdout cards, else None."""
    labels, source_of = data.cards.labels, data.sources.source_of
    small = []
    for s, spec in enumerate(data.sources.specs):
        mine = data.holdout_idx[source_of[data.holdout_idx] == s]
        if not len(mine):  # a source without a holdout (--holdout 0, the folded source of --folds --export)
            continue
        for c in np.unique(labels[source_of == s]):
            n = int((labels[mine] == c).sum())
            if n < minimum:
                small.append(f"{spec.name + ' ' if len(data.sources.specs) > 1 else ''}{label_code(int(c))} {n}")
    if not small:
        return None
    return (f"warning: holdout too small to trust ({', '.join(small[:8])}{' …' if len(small) > 8 else ''} cards, "
            f"< {minimum} per class); use --folds K for a cross-validated figure")


def fit_network(recipe: Recipe, data: RunData, run_dir: Path, writer=None, open_part_writer=None,
                init_state: dict | None = None, **options):
    """Fit the recipe's network on ``data`` (two fits and a weight for a late-fusion network).

    Args:
        writer / open_part_writer: VisualDL writer of the run / ``part -> writer`` of a late-fusion part.
        init_state: starting weights (``--init``).
        options: ``resume``, ``progress``, ``rank``, ``size``, ``stop_after`` (:func:`training.train.fit`).

    Returns:
        (network, summary) as :func:`training.train.fit`.
    """
    common = {"series": data.series, "init_state": init_state, "epoch_pool": data.sampler,
              "holdout_groups": data.source_masks(data.holdout_idx), **options}
    if network(recipe.model).late_fusion:  # two networks, each trained and stopped on its own, then a weight
        return fit_late_fusion(recipe, data.cards, data.balanced, data.holdout_idx, run_dir,
                               open_writer=open_part_writer, **common)
    return fit(recipe, data.cards, data.balanced, data.holdout_idx, run_dir, writer=writer, **common)


def score_cards(net, recipe: Recipe, sources: Sources, idx: np.ndarray) -> np.ndarray:
    """Raw outputs ``[n, 12 | 13]`` (logits) of a trained whole network on cards ``idx`` (no augmentation),
    what the exported model returns (full-size image through the network's own stem);
    :func:`training.metrics.class_probabilities` gives the twelve conditions' probabilities."""
    inputs = make_inputs(network_kind(recipe.model), sources.cards, sources.series)
    return predict(net, inputs, np.asarray(idx, np.int64), unpack=True)


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
                     device: str, size: int, init: InitModel | None = None) -> None:
    """The run folder's record of what is trained on: split lists, ingest report, ``config.json``."""
    cs = data.cards
    write_lists(run_dir, cs, data.balanced, data.holdout_idx)
    atomic_write_text(run_dir / "data_report.json", json.dumps(cs.report, ensure_ascii=False, indent=1))
    config_doc = {"name": name, "recipe": recipe.to_dict(), "data": args.data, "source": cs.source,
                  "data_fingerprint": cs.fingerprint, "sources": source_provenance(data, recipe),
                  "preprocess": data.preprocess.to_dict(), "device": device,
                  "world_size": size, "logdir": str(Path(args.logdir) / name), "argv": sys.argv[1:],
                  "train_per_class": class_counts(cs.labels[data.balanced]),
                  "holdout_per_class": class_counts(cs.labels[data.holdout_idx]),
                  **({"init": init.provenance()} if init is not None else {})}
    atomic_write_text(run_dir / "config.json", json.dumps(config_doc, ensure_ascii=False, indent=1))


def source_provenance(data: RunData, recipe: Recipe) -> list[dict[str, Any]]:
    """Each source's name, what was given, fingerprint, cards, share, training cards, draws per epoch, holdout."""
    out = []
    source_of = data.sources.source_of
    draws = {d["name"]: d for d in data.sampler.describe(data.sources.specs)} if data.sampler else {}
    for s, item in enumerate(data.sources.provenance()):
        out.append({**item, "train_cards": int(len(np.unique(data.pools[s]))),
                    "draws_per_epoch": draws.get(item["name"], {}).get("draws_per_epoch", int(len(data.pools[s]))),
                    "holdout_cards": int((source_of[data.holdout_idx] == s).sum()),
                    **({"simulator": {"digest": simulator_digest(), "per_class": recipe.sim_per_class,
                                      "seed": DEFAULT_SIM["seed"]}} if data.sources.specs[s].is_sim else {})})
    return out


def finite(x: float, digits: int = 4) -> float | None:
    """``x`` rounded, or None for NaN (no card to measure on): JSON has no NaN."""
    return None if x != x else round(float(x), digits)


def run_metrics(summary: dict[str, Any], data: RunData) -> dict[str, Any]:
    """The figures of a finished fit (holdout accuracy and loss, per source, epochs, speed, per class, confusion)."""
    holdout = data.holdout_idx
    by_source = {}
    if len(holdout):  # the twelve conditions' accuracy per source, on its cards of the twelve
        pred = np.asarray(summary["probs"]).argmax(axis=1)
        inside = in_class(summary["labels"])
        for name, mask in (data.source_masks(holdout) or {}).items():
            mine = mask & inside
            by_source[name] = {"holdout_acc": finite(float((pred[mine] == summary["labels"][mine]).mean()))
                               if mine.any() else None, "holdout_cards": int(mask.sum())}
    return {
        "holdout_acc": finite(summary["final"]["holdout_acc"]),
        "holdout_loss": finite(summary["final"]["holdout_loss"]),
        **({"holdout_by_source": by_source} if by_source else {}),
        **({"init_holdout_acc": finite(summary["init_holdout"]["holdout_acc"])} if "init_holdout" in summary else {}),
        "best_epoch": summary["best_epoch"], "epochs_run": summary["epoch"],
        "stopped_early": summary["stopped_early"],
        "holdout_cards": int(len(holdout)), "train_cards": int(len(data.balanced)),
        "train_samples_per_s": summary["samples_per_s"], "train_seconds": round(summary["train_seconds"], 1),
        "per_class": summary["per_class"], "confusion": summary["confusion"],
        **({"late_fusion": summary["late_fusion"]} if "late_fusion" in summary else {}),
        **({"other_class": summary["other"]} if summary.get("other") else {}),
    }


def export_metadata(args: argparse.Namespace, recipe: Recipe, data: RunData, metrics: dict[str, Any],
                    parameters: int, name: str, out: Path, init: InitModel | None = None,
                    rules: AnswerRules | None = None) -> dict[str, Any]:
    """What the run adds to the exported ``meta.json``: metrics, recipe, data provenance (every source),
    the model it started from (``--init``), parameters, run, the "other" output (``other_class``) and the
    rules fitted on held-out cards (``confidence``, ``open_set``)."""
    cs = data.cards
    specs = data.sources.specs
    one_sim = len(specs) == 1 and specs[0].is_sim
    sources = source_provenance(data, recipe)
    return {
        "name": out.name, "architecture": recipe.model,
        **({"preprocess": data.preprocess.to_dict()} if recipe.input != "series" else {}),
        "metrics": {k: v for k, v in metrics.items() if k != "confusion"},
        "recipe": recipe.to_dict(),
        "data": {"source": "sim" if one_sim else Path(cs.source).name if len(specs) == 1 else " + ".join(
                     s.name for s in specs),
                 "fingerprint": cs.fingerprint, "cards": len(cs), "split": recipe.split,
                 "holdout": recipe.holdout, "train_per_class": class_counts(cs.labels[data.balanced]),
                 "sources": sources,
                 **({"simulator": sources[0]["simulator"]} if one_sim else {})},
        **({"init": init.provenance()} if init is not None else {}),
        "parameters": parameters, "run": name,
        "other_class": recipe.other_class,
        **(rules.meta() if rules is not None else {}),
    }


def fit_holdout_rules(args: argparse.Namespace, data: RunData, summary: dict[str, Any],
                      seed: int = 0) -> tuple[AnswerRules | None, str]:
    """Temperature, review rule and open-set threshold fitted on the run's holdout (:mod:`training.answer_rules`).

    On the holdout of the real sources (every source but ``sim``, with their cards of other conditions) when
    it has at least :data:`training.answer_rules.MIN_REAL_CARDS` cards of the twelve conditions; else on the
    simulated holdout, with a warning (thresholds fitted on simulated cards do not hold on real ones); else
    on the few real cards there are, with a warning; nothing without a holdout.

    Args:
        seed: the halves of the cross-fitted figures (the recipe's seed).

    Returns:
        (the rules or None, a line saying on what they were fitted or why not).
    """
    holdout = data.holdout_idx
    if not len(holdout):
        return None, "no holdout: no temperature, review rule or open-set threshold fitted (use --folds K --export)"
    specs, source_of = data.sources.specs, data.sources.source_of[holdout]
    real_names = {sp.name for sp in specs if sp.role == "cards" and not sp.is_sim}
    real = np.isin(source_of, [s for s, sp in enumerate(specs) if sp.name in real_names or sp.of in real_names])
    sim = np.isin(source_of, [s for s, sp in enumerate(specs) if sp.is_sim])
    inside = in_class(summary["labels"])

    def describe(mask: np.ndarray) -> str:
        names = sorted({specs[s].name for s in np.unique(source_of[mask])})
        other = int((mask & ~inside).sum())
        return (f"the holdout of {' + '.join(names)} ({int((mask & inside).sum())} cards of the twelve conditions"
                f"{f' + {other} of other conditions' if other else ''})")

    if (real & inside).sum() >= MIN_REAL_CARDS:
        mask, warning = real, None
    elif (sim & inside).sum() >= MIN_FIT_CARDS:
        mask, warning = sim, (SIM_WARNING if not real.any() else
                              f"{SIM_WARNING} (the real holdout has only {int((real & inside).sum())} cards of the "
                              f"twelve conditions, fewer than {MIN_REAL_CARDS})")
    elif (real & inside).sum() >= MIN_FIT_CARDS:
        mask, warning = real, (f"fitted on only {int((real & inside).sum())} real held-out cards of the twelve "
                               f"conditions (fewer than {MIN_REAL_CARDS}): use --folds K --export")
    else:
        return None, (f"holdout too small ({int(inside.sum())} cards of the twelve conditions): no temperature, review "
                      f"rule or open-set threshold fitted (use --folds K --export)")
    fitted_on = describe(mask)
    rules = fit_answer_rules(summary["outputs"][mask], summary["labels"][mask], fitted_on,
                             names=[data.cards.names[i] for i in holdout[mask]],
                             review_precision=getattr(args, "review_precision", None) or REVIEW_PRECISION,
                             accept_rate=getattr(args, "accept_rate", None) or ACCEPT_RATE,
                             seed=seed, warning=warning)
    return rules, f"answer rules fitted on {fitted_on}"


def write_rules(run_dir: Path, rules: AnswerRules, title: str) -> None:
    """``answer_rules.json`` (the fitted rules and their figures) and ``reliability.png`` in a run folder."""
    atomic_write_text(run_dir / "answer_rules.json", json.dumps(
        {"meta": rules.meta(), "report": rules.report}, ensure_ascii=False, indent=1))
    c = rules.confidence
    atomic_write_bytes(run_dir / "reliability.png", reliability_png(
        c["reliability"], title, (c["ece_before"], c["ece_after"])))


def train_run(args: argparse.Namespace, data: RunData | None = None,
              extra_metrics: dict[str, Any] | None = None, rules: AnswerRules | None = None) -> dict[str, Any]:
    """Train, export and summarise one run. Returns the summary (metrics, paths).

    Args:
        args: the parsed ``train`` arguments (:func:`training.run.build_parser`).
        data: the prepared cards, when the caller already has them (``compare_runs``); else prepared here.
        extra_metrics: added to the run's metrics (and the exported ``meta.json``), e.g. the
            cross-validated figure of a ``--folds K --export`` run.
        rules: the temperature, review rule and open-set threshold, when fitted already (out of fold, by
            ``--folds K --export``); else fitted on the run's holdout (:func:`fit_holdout_rules`).
    """
    device = set_device(args.device)
    rank, size = init_distributed()
    init = read_init(args.init) if getattr(args, "init", None) else None
    recipe = resolve_recipe(args, init)
    run_sources(args, recipe)  # a bad --data fails before anything is written
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
        print(format_sources_report(data.sources), flush=True)
        print(f"split ({recipe.split}): {len(data.train_idx)} train -> {len(data.balanced)} after balancing, "
              f"{len(data.holdout_idx)} holdout", flush=True)
        if data.sampler is not None:
            print(format_shares(data), flush=True)
        if init is not None:
            print(f"init: from {init.folder} ({init.architecture}, weights sha256 {init.sha256[:12]}…), "
                  f"preset {preset_name(args)}", flush=True)
        warning = small_holdout_warning(data)
        if warning:
            print(warning, flush=True)
        write_run_config(run_dir, name, args, recipe, data, device, size, init)
    # A resumed run continues its records file: VisualDL shows only a run folder's newest file.
    append = args.resume is not None
    writer = vdl.open_writer(args.logdir, name, append=append) if rank == 0 and not args.no_vdl else None
    try:
        open_part_writer = None if args.no_vdl else (
            lambda part: vdl.open_writer(args.logdir, f"{name}-{part}", append=append))
        net, summary = fit_network(recipe, data, run_dir, writer=writer, open_part_writer=open_part_writer,
                                   init_state=init.state() if init is not None else None,
                                   resume=args.resume is not None, progress=progress, rank=rank, size=size,
                                   stop_after=args.stop_after)
        if summary.get("interrupted"):
            if rank == 0:
                print(f"stopped after epoch {summary['epoch']} (resume with --resume {run_dir})", flush=True)
            return {"name": name, "run_dir": str(run_dir), "interrupted": True}
        metrics = {**run_metrics(summary, data), **(extra_metrics or {})}
        result = {"name": name, "run_dir": str(run_dir), "model": recipe.model, "metrics": metrics,
                  "parameters": count_parameters(net), "interrupted": False}
        if rules is None:
            rules, result["rules_note"] = fit_holdout_rules(args, data, summary, recipe.seed)
        else:
            result["rules_note"] = f"answer rules fitted on {rules.confidence['fitted_on']}"
        if rules is not None:
            result["answer_rules"] = {"confidence": {k: v for k, v in rules.confidence.items() if k != "reliability"},
                                      **({"open_set": rules.open_set} if rules.open_set else {})}
        if rank == 0:
            if rules is not None:
                write_rules(run_dir, rules, f"{name}: {rules.confidence['fitted_on']}")
            finals = {"final/holdout_acc": metrics["holdout_acc"], "final/holdout_loss": metrics["holdout_loss"],
                      **{f"final/holdout_acc_{k}": v["holdout_acc"]
                         for k, v in metrics.get("holdout_by_source", {}).items()}}
            vdl.log_scalars(writer, summary["epoch"], {k: v for k, v in finals.items() if v is not None})
            vdl.log_hparams(writer, {**recipe.to_dict(), "data": " ".join(data_words(args.data))},
                            ["final/holdout_acc", "final/holdout_loss"])
            if writer is not None:
                writer.flush()
            if not args.no_export:
                out = Path(args.out) if args.out else MODELS_DIR / name
                export_model(net, out, export_metadata(args, recipe, data, metrics, result["parameters"], name, out,
                                                       init, rules), kind=network_kind(recipe.model))
                result["export"] = str(out)
            if writer is not None and not args.no_graph and recipe.input == "image":
                vdl.log_graph(args.logdir, name, recipe.model, classes=num_outputs(recipe.other_class))
            result["wall_seconds"] = round(time.perf_counter() - wall, 1)
            atomic_write_text(run_dir / "summary.json", json.dumps(result, ensure_ascii=False, indent=1))
            print_summary(result, rules)
        return result
    finally:
        if writer is not None:
            writer.close()


def print_summary(r: dict[str, Any], rules: AnswerRules | None = None) -> None:
    """The few lines a finished run prints: accuracy, epochs, late-fusion parts, "other", the fitted
    answer rules, speed, folders."""
    m = r["metrics"]
    print(f"\nrun {r['name']}: {r['model']} ({r['parameters']:,} parameters)")
    if m["holdout_acc"] is None:
        print(f"  no holdout: trained {m['epochs_run']} epochs, kept the last (--folds K measures it)")
    else:
        print(f"  holdout accuracy {m['holdout_acc']:.4f}  loss {m['holdout_loss']:.4f}  "
              f"(best epoch {m['best_epoch']} of {m['epochs_run']}{', early stop' if m['stopped_early'] else ''})")
    for source, v in m.get("holdout_by_source", {}).items():
        if v["holdout_cards"] and v["holdout_acc"] is not None:
            print(f"    {source}: holdout accuracy {v['holdout_acc']:.4f} on {v['holdout_cards']} cards")
        elif v["holdout_cards"]:
            print(f"    {source}: {v['holdout_cards']} holdout cards of class other")
    if m.get("init_holdout_acc") is not None:
        print(f"  the --init model on the same holdout, before fine-tuning: {m['init_holdout_acc']:.4f}")
    if "late_fusion" in m:
        lf = m["late_fusion"]
        print(f"  late fusion: image {lf['image']['holdout_acc']:.4f} (best epoch {lf['image']['best_epoch']}), "
              f"series {lf['series']['holdout_acc']:.4f} (best epoch {lf['series']['best_epoch']}); image weight "
              f"{lf['image_weight']:g}; cross-fitted {lf['holdout_acc_crossfit']:.4f}")
    other = m.get("other_class")
    if other and other["other_cards"]:
        print(f"  other: {other['other_recall']:.1%} of {other['other_cards']} holdout cards of class other answered "
              f"other, {other['in_class_called_other'] or 0:.1%} of the {other['in_class_cards']} of the twelve "
              f"(largest output, no threshold)")
    if rules is not None:
        print("  " + format_answer_rules(rules).replace("\n", "\n  "))
    elif r.get("rules_note"):
        print(f"  {r['rules_note']}")
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
    prepared = None  # (what is read, RunData): variants that read the same inputs share the data
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
        reads = (recipe.preprocess, recipe.input, recipe.augment, recipe.render_augment)
        if prepared is None or prepared[0] != reads:
            prepared = (reads, prepare_data(a, recipe, rank, size, not args.no_progress and rank == 0))
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
