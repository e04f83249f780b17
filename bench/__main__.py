"""Run the CardSense benchmarks and write the table to ``docs/BENCHMARKS.md``.

    python -m bench                 # full run (about 20-30 minutes on 2 cores)
    python -m bench --quick         # smoke run (tiny sizes, about a minute; what CI may run)
    python -m bench --only batch,serve --model models/default --out /tmp/BENCH.md
    python -m bench --only layout   # /classify at c=16 for several workers x threads layouts

Every figure is paired with a baseline measured in the same invocation on the same data, and
repeats are interleaved (baseline, ours, baseline, ours ...), because the machine is shared and its
speed drifts; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import REPO, load, machine

PARTS = ("batch", "serve", "train", "limit", "layout")
DEFAULT_PARTS = ("batch", "serve", "train", "limit")  # "layout" (a sweep of worker x thread layouts) on request


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds, not minutes)")
    p.add_argument("--only", default=",".join(DEFAULT_PARTS),
                   help=f"comma-separated subset of {', '.join(PARTS)} (default: all but layout)")
    p.add_argument("--model", default=str(REPO / "models" / "default"), help="exported model folder")
    p.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"), help="Markdown report to write")
    p.add_argument("--json", default=None, help="also write the raw results as JSON")
    p.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 3; quick 1)")
    return p


def settings(quick: bool, repeats: int | None) -> dict:
    if quick:
        return {"per_class": 4, "batch": {"headline": 48, "sizes": [], "repeats": repeats or 1,
                                          "baseline_repeats": 1},
                "serve": {"concurrencies": [1, 8], "seconds": 1.0, "repeats": repeats or 1, "server_requests": 10},
                "train": {"per_class": 4, "epochs": 1, "steps": 1, "repeats": 1},
                "limit": {"cards": 24},
                "layout": {"concurrency": 8, "seconds": 1.0, "repeats": 1}}
    r = repeats or 3
    return {"per_class": 100, "batch": {"headline": 5000, "sizes": [1000, 20000], "repeats": r,
                                        "baseline_repeats": 1},
            "serve": {"concurrencies": [1, 8, 16, 32], "seconds": 10.0, "repeats": r, "server_requests": 300},
            "train": {"per_class": 100, "epochs": 1, "steps": 6, "repeats": 2},
            "limit": {"cards": 300},
            "layout": {"concurrency": 16, "seconds": 10.0, "repeats": 2}}


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(PARTS)
    if unknown:
        print(f"error: --only {', '.join(sorted(unknown))}: choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    cfg = settings(args.quick, args.repeats)
    info = machine()
    results: dict = {"machine": info, "quick": args.quick, "settings": cfg, "started": time.strftime("%Y-%m-%d %H:%M"),
                     "command": "python -m bench" + (" --quick" if args.quick else "")}

    def log(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.perf_counter()

    def part(name: str, fn) -> None:
        # One part failing (e.g. the training CLI changed) must not lose the others' figures.
        log(f"{name} ...")
        try:
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - reported in the table and the exit status
            log(f"  {name} FAILED: {exc}")
            results.setdefault("failed", {})[name] = str(exc)[-2000:]
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")

    if "batch" in only:
        from bench.batch import bench_batch  # noqa: PLC0415

        part("batch", lambda: bench_batch(args.model, per_class=cfg["per_class"], log=log, **cfg["batch"]))
    if "serve" in only:
        from bench.serve import bench_serve  # noqa: PLC0415

        # The shipped layout (serving/config.py defaults, chosen by measurement: docs/SERVING.md).
        part("serve", lambda: bench_serve(args.model, workers=None, threads=None, per_class=cfg["per_class"],
                                          log=log, **cfg["serve"]))
    if "train" in only:
        from bench.train import bench_train  # noqa: PLC0415

        part("train", lambda: bench_train(log=log, **cfg["train"]))
    if "limit" in only:
        from bench.limit import bench_limit  # noqa: PLC0415

        part("limit", lambda: bench_limit(args.model, per_class=cfg["per_class"], log=log, **cfg["limit"]))
    if "layout" in only:
        from bench.serve import bench_layouts  # noqa: PLC0415

        part("layout", lambda: bench_layouts(args.model, per_class=cfg["per_class"], log=log, **cfg["layout"]))
    results["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    results["load_end"] = load()
    from bench.report import render  # noqa: PLC0415

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(results), encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    log(f"wrote {args.out}")
    return 1 if results.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
