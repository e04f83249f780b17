"""CardSense training toolkit: ``python training/run.py [train|eval|compare-models|compare-lr] …``.

With no arguments it trains the default network on the simulated dataset (generated into the cache the
first time), logs to ``log/<run>``, keeps the run folder in ``runs/<run>`` (config, split lists,
checkpoints, history) and exports ``models/<run>/``. ``--help`` on each subcommand lists the options.

Also runs data-parallel under ``python -m paddle.distributed.launch --nproc_per_node N training/run.py …``
(only rank 0 logs, checkpoints and exports).

This file only parses arguments and dispatches: the stages are :func:`training.pipeline.train_run`
(train), :func:`training.pipeline.compare_runs` (compare-models, compare-lr),
:func:`training.crossval.run_cross_validation` (train with ``--folds K``),
:func:`training.evaluate_exported.evaluate_exported` (eval) and :func:`training.data.field_csv_to_folder`
(field-set).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging
import os
import subprocess
import time
from typing import Any

from shared.dataset_io import ArchiveError
from shared.meta import MODEL_KINDS, ModelFolderError
from training.crossval import run_cross_validation
from training.data import FIELD_CARDS, field_csv_to_folder
from training.distributed import world
from training.evaluate_exported import evaluate_exported, format_eval_report
from training.learning_curve import learning_curve
from training.models import NETWORKS
from training.pipeline import compare_runs, train_run
from training.recipe import OPTIMIZERS, PRESETS, SCHEDULES, resolve_recipe
from training.sources import DataSpecError
from training.warm_start import InitError

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "eval", "compare-models", "compare-lr", "field-set", "learning-curve")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--data", nargs="+", default=["sim"], metavar="SOURCE[:SHARE]",
                   help="one or more sources: 'sim' (the simulated set, default), 'field' (the vendored field cards, "
                        "data/field/), a train.zip, an extracted folder (A01 … A12/) or a field-format .csv; "
                        ":SHARE = this fraction of each epoch's training draws (e.g. sim field:0.3)")
    d.add_argument("--folds", type=int, default=None, metavar="K",
                   help="k-fold cross-validation of the real (non-sim) source, or the only one: K networks, each "
                        "scored on its held-out fold (runs/<name>/cv.json); no model is exported unless --export")
    d.add_argument("--export", action="store_true",
                   help="with --folds: then train the final model on all the data and export it with the "
                        "cross-validated figure in meta.json")
    d.add_argument("--other-class", action=argparse.BooleanOptionalAction, default=None,
                   help="a 13th output 'other' (none of the twelve), learnt from the rows without a code of every "
                        "field-format CSV source (the field set's 491 cards of five other conditions with 'field') and, "
                        "for an image model, generated not-a-card pictures (outlier exposure)")
    d.add_argument("--review-precision", type=float, default=None, metavar="P",
                   help="the precision the answers not sent to review must reach on held-out cards (default 0.9)")
    d.add_argument("--accept-rate", type=float, default=None, metavar="A",
                   help="share of held-out cards of the twelve conditions the open-set threshold accepts (default 0.95)")
    d.add_argument("--input", choices=MODEL_KINDS, default=None,
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
    d.add_argument("--render-augment", action=argparse.BooleanOptionalAction, default=None,
                   help="training-only re-drawing of cards that have a CSV (100-1,000 points, line 1-7 px, margin "
                        "2-24 px, aliased or not) before the shared preprocessing (on in --preset finetune)")
    d.add_argument("--series-augment", action=argparse.BooleanOptionalAction, default=None,
                   help="training-only variation of the series (start shift, time warp, load noise; default on)")
    d.add_argument("--cache-dir", default=None, help="cache for simulated data and preprocessed arrays")
    r = p.add_argument_group("recipe")
    r.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="'default'; 'seed' = the original notebook's recipe exactly; 'finetune' = a handful of cards "
                        "on top of --init (its default); flags below override")
    r.add_argument("--init", default=None, metavar="MODEL_DIR",
                   help="start from an exported model's weights (fine-tuning): same labels, preprocessing and "
                        "network; its network and input are the defaults, and --preset finetune")
    r.add_argument("--freeze-epochs", type=int, default=None, metavar="N",
                   help="train only the fully connected head for the first N epochs (trunk frozen)")
    r.add_argument("--model", default=None, help=f"network: {', '.join(NETWORKS)} or default (per --input)")
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
    e.add_argument("--data", required=True,
                   help="train.zip, a folder of A01 … A12/, a field-format .csv (its rows without a code are cards of "
                        "other conditions: the share answered unknown), 'field' (the 709 vendored field cards of our "
                        "conditions) or 'field-all' (all 1,200: with the 491 of five other conditions)")
    e.add_argument("--out", default=None, help="report folder (default runs/eval/<model>-<data>)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--cache-dir", default=None)
    e.add_argument("--no-progress", action="store_true")
    fs = sub.add_parser("field-set", help="write the field cards (CSV) in competition layout (A0x/<id>.png + .csv)")
    fs.add_argument("--csv", default=str(FIELD_CARDS), help="field-cards.csv (default the vendored data/field/field-cards.csv)")
    fs.add_argument("--out", default=None, help="folder to write (default: in the cache; never the repository)")
    lc = sub.add_parser("learning-curve", help="field learning curve: k real cards per class, fine-tuned from "
                                                "--base vs from scratch, tested on the other field cards")
    lc.add_argument("--base", required=True, metavar="MODEL_DIR",
                    help="exported model to fine-tune from (with model.pdparams); honest: one that never saw field cards")
    lc.add_argument("--ks", type=int, nargs="+", default=[3, 5, 10, 20], help="training cards per class")
    lc.add_argument("--splits", type=int, default=3, help="random splits (seeds --seed, --seed+1, …)")
    lc.add_argument("--seed", type=int, default=0, help="first split's seed")
    lc.add_argument("--arm", action="append", default=None, metavar="NAME=FLAGS",
                    help="a variant as run.py train flags ({base}, {kind} filled in); repeatable; default "
                         "'finetune=--init {base}' and 'scratch=--input {kind}'")
    lc.add_argument("--out", default=None, help="JSON file (default runs/learning-curve-<time>/learning_curve.json)")
    lc.add_argument("--runs-dir", default=str(REPO / "runs"), help="where the runs' folders go")
    lc.add_argument("--cache-dir", default=None)
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


# ------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------


def eval_command(args: argparse.Namespace) -> dict[str, Any]:
    """``eval``: score an exported model on labelled cards, print the report and where it was written."""
    model = Path(args.model)
    alias = args.data in ("field", "field-all")  # the vendored field cards: ours only, or with the other conditions
    data = FIELD_CARDS if alias else Path(args.data)
    if not data.exists():
        raise FileNotFoundError(f"--data {args.data!r}: no such zip, folder or .csv (or use field / field-all)")
    out = Path(args.out) if args.out else REPO / "runs" / "eval" / f"{model.name}-{args.data if alias else data.stem}"
    try:
        report = evaluate_exported(model, data, out, batch_size=args.batch_size, progress=not args.no_progress,
                                   cache_dir=args.cache_dir, other_conditions=args.data != "field")
    except ValueError as exc:  # e.g. no card in a condition folder: nothing to score against
        raise SystemExit(f"error: {exc}") from None
    print(format_eval_report(report))
    print(f"\nreport: {out / 'report.json'}")
    return report


def launch_command(args: argparse.Namespace, argv: list[str]) -> list[str] | None:
    """The ``paddle.distributed.launch`` command that runs ``argv`` in ``--procs`` processes, or None.

    None when one process was asked for, for commands that do not train, and inside a launched
    process (the launcher sets the world size). Each process gets ``--batch-size B/N`` so that one
    step still sees the recipe's ``B`` cards, only split over the processes.
    """
    if getattr(args, "procs", 1) <= 1 or world()[1] > 1:
        return None
    if getattr(args, "folds", None) is not None:
        raise SystemExit("error: --folds trains its folds one after the other in one process (drop --procs)")
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
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
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
    try:
        return _dispatch(args)
    # bad input named on the command line: one line, exit 2
    except (FileNotFoundError, ArchiveError, ModelFolderError, DataSpecError, InitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _check_rates(args: argparse.Namespace) -> None:
    """``--review-precision`` and ``--accept-rate`` are shares: a one-line error otherwise."""
    for flag, value in (("--review-precision", getattr(args, "review_precision", None)),
                        ("--accept-rate", getattr(args, "accept_rate", None))):
        if value is not None and not 0 < value < 1:
            raise SystemExit(f"error: {flag} must be a share between 0 and 1 (exclusive), got {value:g}")


def _dispatch(args: argparse.Namespace) -> int:
    _check_rates(args)
    if args.command == "eval":
        eval_command(args)
    elif args.command == "field-set":
        # Then: python training/run.py --data <printed folder> --input series --holdout 0.3
        print(field_csv_to_folder(args.csv, args.out))
    elif args.command == "learning-curve":
        learning_curve(args, parse_args)
    elif args.command in ("compare-models", "compare-lr") and (args.folds is not None or args.export):
        raise SystemExit(f"error: {args.command} does not take --folds/--export (run each variant with --folds)")
    elif args.command == "compare-models":
        compare_runs(args, [(m, {"model": m}) for m in args.models], "compare-models")
    elif args.command == "compare-lr":
        compare_runs(args, [(f"lr{lr:g}", {"lr": lr}) for lr in args.lrs], "compare-lr")
    elif args.folds is not None:
        run_cross_validation(args)
    else:
        if args.export:
            raise SystemExit("error: --export goes with --folds K (a plain run exports unless --no-export)")
        result = train_run(args)
        if result.get("interrupted"):
            return 3
    return 0


if __name__ == "__main__":
    # Importing Paddle (above) gives the root logger a handler of its own, which would make main()'s
    # basicConfig a no-op: the command line's format replaces it.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
    sys.exit(main())
