"""CardSense training toolkit: ``python training/run.py [train|eval|compare-models|compare-lr] …``.

With no arguments it trains the default network on the simulated dataset (generated into the cache the
first time), logs to ``log/<run>``, keeps the run folder in ``runs/<run>`` (config, split lists,
checkpoints, history) and exports ``models/<run>/``. ``--help`` on each subcommand lists the options.

Also runs data-parallel under ``python -m paddle.distributed.launch --nproc_per_node N training/run.py …``
(only rank 0 logs, checkpoints and exports).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import copy
import json
import logging
import os
import subprocess
import time
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "eval", "compare-models", "compare-lr", "field-set")
FIELD_CARDS = REPO.parent / "shared" / "data" / "field-cards.csv"

log = logging.getLogger("training.run")


# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from training.models import MODELS
    from training.train import OPTIMIZERS, PRESETS, SCHEDULES

    d = p.add_argument_group("data")
    d.add_argument("--data", default="sim", help="train.zip, an extracted folder (A01 … A12/), or 'sim' (default)")
    d.add_argument("--input", choices=("image", "series", "dual"), default=None,
                   help="what the model reads: the PNG (image, default), the CSV series (series), or both (dual)")
    d.add_argument("--sim-per-class", type=int, default=None, help="simulated cards per class for --data sim")
    d.add_argument("--holdout", type=float, default=None, help="holdout fraction per class (default 0.1)")
    d.add_argument("--split", choices=("card", "well"), default=None,
                   help="'card': sorted per class (default); 'well': no well on both sides")
    d.add_argument("--well-pattern", default=None, help="regex whose first group is the well id in a file name")
    d.add_argument("--per-class-target", type=int, default=None,
                   help="oversample each training class to this many cards (0 = no balancing)")
    d.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="training-only outline jitter before the shared preprocessing")
    d.add_argument("--series-augment", action=argparse.BooleanOptionalAction, default=None,
                   help="training-only variation of the series (start shift, time warp, load noise; default on)")
    d.add_argument("--cache-dir", default=None, help="cache for simulated data and preprocessed arrays")
    r = p.add_argument_group("recipe")
    r.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="'seed' = the original notebook's recipe exactly; flags below override")
    from training.series_models import SERIES_MODELS

    r.add_argument("--model", default=None,
                   help=f"network: {', '.join([*MODELS, *SERIES_MODELS])} or default (per --input)")
    r.add_argument("--epochs", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=None, help="per process")
    r.add_argument("--lr", type=float, default=None, help="(peak) learning rate")
    r.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    r.add_argument("--schedule", choices=SCHEDULES, default=None)
    r.add_argument("--weight-decay", type=float, default=None)
    r.add_argument("--label-smoothing", type=float, default=None)
    r.add_argument("--patience", type=int, default=None, help="early stop after N epochs without holdout gain (0 = off)")
    r.add_argument("--seed", type=int, default=None)
    o = p.add_argument_group("run")
    o.add_argument("--name", default=None, help="run name (default <model>-<time>)")
    o.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    o.add_argument("--procs", type=int, default=1, metavar="N",
                   help="data-parallel processes on this machine (default 1): relaunches itself under "
                        "paddle.distributed.launch and splits each batch over them, so the recipe is unchanged; "
                        "on CPU one per core")
    o.add_argument("--out", default=None, help="export folder (default models/<run>)")
    o.add_argument("--logdir", default=str(REPO / "log"), help="VisualDL log folder (default log/)")
    o.add_argument("--runs-dir", default=str(REPO / "runs"), help="run folders (default runs/)")
    o.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN",
                   help="continue a stopped run from its last checkpoint (RUN = name or folder; default --name "
                        "or the latest run)")
    o.add_argument("--no-export", action="store_true", help="do not export the model")
    o.add_argument("--no-vdl", action="store_true", help="no VisualDL logging")
    o.add_argument("--no-graph", action="store_true", help="skip the VisualDL model graph (a child process)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a kill


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python training/run.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train a model (the default command)")
    _add_train_args(t)
    e = sub.add_parser("eval", help="evaluate an exported model folder on labelled cards")
    e.add_argument("--model", default=str(REPO / "models" / "default"), help="exported model folder")
    e.add_argument("--data", required=True, help="train.zip, a folder of A01 … A12/, or field-cards.csv")
    e.add_argument("--out", default=None, help="report folder (default runs/eval/<model>-<data>)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--cache-dir", default=None)
    e.add_argument("--no-progress", action="store_true")
    fs = sub.add_parser("field-set", help="write the field cards (CSV) in competition layout (A0x/<id>.png + .csv)")
    fs.add_argument("--csv", default=str(FIELD_CARDS), help="field-cards.csv (default ../shared/data/field-cards.csv)")
    fs.add_argument("--out", default=None, help="folder to write (default: in the cache; never the repository)")
    cm = sub.add_parser("compare-models", help="train several networks with one recipe, overlaid in VisualDL")
    cm.add_argument("models", nargs="+", help="network names (cnn01 cnn02 cnn03 cardnet/default)")
    _add_train_args(cm)
    cl = sub.add_parser("compare-lr", help="train one network at several learning rates, overlaid in VisualDL")
    cl.add_argument("lrs", nargs="+", type=float, help="learning rates")
    _add_train_args(cl)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]
    return build_parser().parse_args(argv)


def resolve_recipe(args: argparse.Namespace):
    """Preset values, then any flag given explicitly."""
    from training.models import DEFAULT_MODEL
    from training.train import PRESETS, Recipe

    values = Recipe().to_dict()
    values.update(PRESETS[args.preset])
    for key in values:
        v = getattr(args, key, None)
        if v is not None:
            values[key] = v
    from training.models import MODELS
    from training.series_models import DEFAULT_FOR_INPUT, SERIES_MODELS, model_input_kind

    kind = values.get("input") or "image"
    if values["model"] == "default" or (kind != "image" and getattr(args, "model", None) is None):
        values["model"] = DEFAULT_FOR_INPUT[kind] if kind != "image" else DEFAULT_MODEL
    if values["model"] not in MODELS and values["model"] not in SERIES_MODELS:
        raise SystemExit(f"error: unknown model {values['model']!r}; choose one of "
                         f"{', '.join([*MODELS, *SERIES_MODELS])} or default")
    if model_input_kind(values["model"]) != kind:
        raise SystemExit(f"error: model {values['model']!r} takes {model_input_kind(values['model'])} input, "
                         f"not --input {kind}")
    return Recipe.from_dict(values)


def _set_device(choice: str) -> str:
    import paddle

    if choice == "auto":
        choice = "gpu" if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else "cpu"
    if choice == "gpu" and not paddle.is_compiled_with_cuda():
        raise SystemExit("--device gpu: this Paddle build has no CUDA support (use --device cpu or auto)")
    if choice == "gpu":
        # Under paddle.distributed.launch each process owns the GPU the launcher gave it.
        gpu = os.environ.get("FLAGS_selected_gpus", "0").split(",")[0]
        paddle.set_device(f"gpu:{gpu}")
    else:
        paddle.set_device("cpu")
    return choice


def _shared_value(value: int, size: int) -> int:
    """Rank 0's value of an integer, on every rank."""
    if size <= 1:
        return value
    import paddle

    t = paddle.to_tensor([value], dtype="int64")
    paddle.distributed.broadcast(t, src=0)
    return int(t.numpy()[0])


def _barrier(size: int) -> None:
    if size > 1:
        import paddle

        paddle.distributed.barrier()


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------


def prepare_data(args, recipe, rank: int = 0, size: int = 1, progress: bool = True):
    """Resolve the source, ingest it (rank 0 first, so the others read the cache), split and balance."""
    from shared.preprocess import PreprocessConfig
    from training.data import load_data, oversample, resolve_source, split_indices

    config = PreprocessConfig(method=recipe.preprocess)
    source = None
    if rank == 0:
        source = resolve_source(args.data, args.cache_dir, sim_per_class=recipe.sim_per_class, progress=progress)
        cs = load_data(source, config, cache_dir=args.cache_dir, keep_ink=recipe.augment, progress=progress)
    _barrier(size)
    if rank != 0:
        source = resolve_source(args.data, args.cache_dir, sim_per_class=recipe.sim_per_class, progress=False)
        cs = load_data(source, config, cache_dir=args.cache_dir, keep_ink=recipe.augment, progress=False)
    series = None
    if recipe.input != "image":  # series and dual need each card's CSV: cards without one are skipped, counted
        from training.series_data import load_series, restrict

        series, ok, series_report = load_series(cs, cache_dir=args.cache_dir, progress=progress and rank == 0)
        cs = restrict(cs, ok)
        series = series[ok]
        cs.report = {**cs.report, "series": series_report}
        if rank == 0:
            print(f"series ({recipe.input}): {series_report['with_series']} cards with a usable CSV, "
                  f"{series_report['without_series']} skipped {series_report['by_reason'] or ''}", flush=True)
        if not len(cs):
            raise SystemExit(f"error: --input {recipe.input}: no card of {source} has a usable CSV")
    train_idx, test_idx = split_indices(cs.names, cs.labels, recipe.holdout, recipe.split, recipe.well_pattern,
                                        recipe.seed)
    balanced = oversample(train_idx, cs.labels, recipe.per_class_target, recipe.seed)
    return cs, config, train_idx, balanced, test_idx, series


def fit_length_to_data(args, recipe, train_cards: int, size: int = 1, announce: bool = True):
    """The default preset on a small training set: more epochs and patience (``training.train.length_for``).

    Only what the user left unset changes; ``--preset seed`` keeps the notebook's recipe exactly.
    """
    import dataclasses

    from training.train import length_for

    if args.preset != "default" or (args.epochs is not None and args.patience is not None):
        return recipe
    epochs, patience = length_for(recipe, train_cards, size)
    epochs = recipe.epochs if args.epochs is not None else epochs
    patience = recipe.patience if args.patience is not None else patience
    if announce and (epochs, patience) != (recipe.epochs, recipe.patience):
        print(f"small training set ({train_cards} cards): {epochs} epochs, patience {patience} "
              f"(--epochs/--patience set them)", flush=True)
    return dataclasses.replace(recipe, epochs=epochs, patience=patience)


def _run_name(args, recipe, size: int) -> str:
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
    stamp = _shared_value(int(time.time()), size)
    return f"{recipe.model}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}"


def train_command(args, cs_bundle=None) -> dict[str, Any]:
    """Train, export and summarise one run. Returns the summary (metrics, paths)."""
    from shared.atomic import atomic_write_text
    from training import vdl
    from training.data import DEFAULT_SIM, class_counts, format_report, simulator_digest, write_lists
    from training.export import export_model
    from training.models import count_parameters
    from training.train import fit, init_distributed

    device = _set_device(args.device)
    rank, size = init_distributed()
    recipe = resolve_recipe(args)
    progress = not args.no_progress and rank == 0
    name = _run_name(args, recipe, size)
    run_dir = Path(args.resume) if args.resume and Path(args.resume).is_dir() else Path(args.runs_dir) / name
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    cs, config, train_idx, balanced, test_idx, series = cs_bundle or prepare_data(args, recipe, rank, size, progress)
    recipe = fit_length_to_data(args, recipe, len(balanced), size, announce=rank == 0)
    if rank == 0:
        print(format_report(cs.report), flush=True)
        print(f"split ({recipe.split}): {len(train_idx)} train -> {len(balanced)} after balancing, "
              f"{len(test_idx)} holdout", flush=True)
        write_lists(run_dir, cs, balanced, test_idx)
        atomic_write_text(run_dir / "data_report.json", json.dumps(cs.report, ensure_ascii=False, indent=1))
        config_doc = {"name": name, "recipe": recipe.to_dict(), "data": args.data, "source": cs.source,
                      "data_fingerprint": cs.fingerprint, "preprocess": config.to_dict(), "device": device,
                      "world_size": size, "logdir": str(Path(args.logdir) / name), "argv": sys.argv[1:],
                      "train_per_class": class_counts(cs.labels[balanced]),
                      "holdout_per_class": class_counts(cs.labels[test_idx])}
        atomic_write_text(run_dir / "config.json", json.dumps(config_doc, ensure_ascii=False, indent=1))
    writer = vdl.open_writer(args.logdir, name) if rank == 0 and not args.no_vdl else None
    try:
        from training.series_models import LATE_FUSION_MODELS

        if recipe.model in LATE_FUSION_MODELS:  # two networks, each trained and stopped on its own, then a weight
            from training.late_fusion import fit_late_fusion

            open_part_writer = None if args.no_vdl else (lambda part: vdl.open_writer(args.logdir, f"{name}-{part}"))
            net, summary = fit_late_fusion(recipe, cs, balanced, test_idx, run_dir, open_writer=open_part_writer,
                                           resume=args.resume is not None, progress=progress, rank=rank, size=size,
                                           stop_after=args.stop_after, preprocess_config=config, series=series)
        else:
            net, summary = fit(recipe, cs, balanced, test_idx, run_dir, writer=writer, resume=args.resume is not None,
                               progress=progress, rank=rank, size=size, stop_after=args.stop_after,
                               preprocess_config=config, series=series)
        if summary.get("interrupted"):
            if rank == 0:
                print(f"stopped after epoch {summary['epoch']} (resume with --resume {run_dir})", flush=True)
            return {"name": name, "run_dir": str(run_dir), "interrupted": True}
        metrics = {
            "holdout_acc": round(summary["final"]["holdout_acc"], 4),
            "holdout_loss": round(summary["final"]["holdout_loss"], 4),
            "best_epoch": summary["best_epoch"], "epochs_run": summary["epoch"],
            "stopped_early": summary["stopped_early"],
            "holdout_cards": int(len(test_idx)), "train_cards": int(len(balanced)),
            "train_samples_per_s": summary["samples_per_s"], "train_seconds": round(summary["train_seconds"], 1),
            "per_class": summary["per_class"], "confusion": summary["confusion"],
            **({"late_fusion": summary["late_fusion"]} if "late_fusion" in summary else {}),
        }
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
                from training.export import export_series_model

                out = Path(args.out) if args.out else REPO / "models" / name
                exporter = export_model if recipe.input == "image" else (
                    lambda layer, folder, extra: export_series_model(layer, folder, recipe.input, extra))
                exporter(net, out, {
                    "name": out.name, "architecture": recipe.model,
                    **({"preprocess": config.to_dict()} if recipe.input != "series" else {}),
                    "metrics": {k: v for k, v in metrics.items() if k != "confusion"},
                    "recipe": recipe.to_dict(),
                    "data": {"source": args.data if args.data == "sim" else Path(cs.source).name,
                             "fingerprint": cs.fingerprint, "cards": len(cs), "split": recipe.split,
                             "holdout": recipe.holdout, "train_per_class": class_counts(cs.labels[balanced]),
                             **({"simulator": {"digest": simulator_digest(), "per_class": recipe.sim_per_class,
                                               "seed": DEFAULT_SIM["seed"]}} if args.data == "sim" else {})},
                    "parameters": result["parameters"], "run": name,
                })
                result["export"] = str(out)
            if writer is not None and not args.no_graph and recipe.input == "image":
                vdl.log_graph(args.logdir, name, recipe.model)
            result["wall_seconds"] = round(time.perf_counter() - wall, 1)
            atomic_write_text(run_dir / "summary.json", json.dumps(result, ensure_ascii=False, indent=1))
            _print_summary(result)
        return result
    finally:
        if writer is not None:
            writer.close()


def _print_summary(r: dict[str, Any]) -> None:
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


def eval_command(args) -> dict[str, Any]:
    from training.evaluate import evaluate_folder, format_report

    model = Path(args.model)
    out = Path(args.out) if args.out else REPO / "runs" / "eval" / f"{model.name}-{Path(args.data).stem}"
    try:
        report = evaluate_folder(model, args.data, out, batch_size=args.batch_size, progress=not args.no_progress,
                                 cache_dir=args.cache_dir)
    except ValueError as exc:  # e.g. no card in a condition folder: nothing to score against
        raise SystemExit(f"error: {exc}") from None
    print(format_report(report))
    print(f"\nreport: {out / 'report.json'}")
    return report


def _compare(args, variants: list[tuple[str, dict[str, Any]]], group: str) -> list[dict[str, Any]]:
    """Train each variant into ``<logdir>/<group>/<variant>`` with identical tags; print a table."""
    from training.train import init_distributed

    _set_device(args.device)
    rank, size = init_distributed()
    stamp = _shared_value(int(time.time()), size)
    group = f"{group}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}" if not args.name else args.name
    results = []
    bundle = None
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
        if bundle is None or bundle[0] != (recipe.preprocess, recipe.input):
            bundle = ((recipe.preprocess, recipe.input),
                      prepare_data(a, recipe, rank, size, not args.no_progress and rank == 0))
        if rank == 0:
            print(f"\n=== {group}: {label} ===", flush=True)
        results.append(train_command(a, cs_bundle=bundle[1]))
    if rank == 0:
        print(f"\n{group} (VisualDL: visualdl --logdir {Path(args.logdir) / group} --host 127.0.0.1 --disable-telemetry)")
        print(f"{'run':<12} {'holdout acc':>11} {'holdout loss':>12} {'best ep':>7} {'cards/s':>8} {'train s':>8}")
        for r in results:
            m = r["metrics"]
            print(f"{r['name']:<12} {m['holdout_acc']:>11.4f} {m['holdout_loss']:>12.4f} {m['best_epoch']:>7} "
                  f"{m['train_samples_per_s']:>8.0f} {m['train_seconds']:>8.0f}")
        from shared.atomic import atomic_write_text

        atomic_write_text(Path(args.runs_dir) / group / "comparison.json",
                          json.dumps([{"name": r["name"], **{k: v for k, v in r["metrics"].items()
                                                              if k not in ("per_class", "confusion")}}
                                      for r in results], indent=1))
    return results


def launch_command(args: argparse.Namespace, argv: list[str]) -> list[str] | None:
    """The ``paddle.distributed.launch`` command that runs ``argv`` in ``--procs`` processes, or None.

    None when one process was asked for, for commands that do not train, and inside a launched
    process (the launcher sets the world size). Each process gets ``--batch-size B/N`` so that one
    step still sees the recipe's ``B`` cards, only split over the processes.
    """
    from training.train import world

    if getattr(args, "procs", 1) <= 1 or world()[1] > 1:
        return None
    batch = resolve_recipe(args).batch_size
    if batch % args.procs:
        raise SystemExit(f"error: --procs {args.procs} must divide the batch size {batch} "
                         f"(each process takes an equal share of every batch)")
    child: list[str] = []
    skip = False
    for a in argv:  # the same arguments without --procs
        if skip:
            skip = False
        elif a == "--procs":
            skip = True
        elif not a.startswith("--procs="):
            child.append(a)
    logs = Path(args.runs_dir) / "launch" / time.strftime("%Y%m%d-%H%M%S")
    return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(args.procs),
            "--log_dir", str(logs), str(Path(__file__).resolve()), *child, "--batch-size", str(batch // args.procs)]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if getattr(args, "procs", 1) < 1:
        print("error: --procs must be at least 1", file=sys.stderr)
        return 2
    launch = launch_command(args, argv)
    if launch is not None:
        print(f"training in {args.procs} processes: {' '.join(launch[2:5])} … (worker logs in {launch[6]})", flush=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        return subprocess.run(launch, env=env).returncode
    from shared.dataset_io import ArchiveError
    from shared.meta import ModelFolderError

    try:
        return _dispatch(args)
    except (FileNotFoundError, ArchiveError, ModelFolderError) as exc:  # bad input named on the command line
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command == "eval":
        eval_command(args)
    elif args.command == "field-set":
        from training.evaluate import field_csv_to_folder

        # Then: python training/run.py --data <printed folder> --input series --holdout 0.3
        print(field_csv_to_folder(args.csv, args.out))
    elif args.command == "compare-models":
        _compare(args, [(m, {"model": m}) for m in args.models], "compare-models")
    elif args.command == "compare-lr":
        _compare(args, [(f"lr{lr:g}", {"lr": lr}) for lr in args.lrs], "compare-lr")
    else:
        result = train_command(args)
        if result.get("interrupted"):
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
