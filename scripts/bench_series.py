"""Series-model inference speed: ``python scripts/bench_series.py [--model models/series] [--cards 4000]``.

Prints cards/s for (1) the network alone (Paddle Inference, batch 1 and the given batch sizes, all cores)
and (2) CSV bytes -> shared series preprocessing -> network, the batch scorer's path for a lone CSV.
A benchmark, not a test: the figures depend on the machine and its load. On a shared machine, "cards per
CPU-second" (process CPU time, all threads) is the steadier figure: with ``--threads 1``, two processes
on two idle cores give about twice it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "series"))
    p.add_argument("--cards", type=int, default=4000)
    p.add_argument("--batch-sizes", default="1,64,256")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    from serving.predictor import MultiInputPredictor
    from shared.cards import write_card_csv
    from shared.series import preprocess_series_csv

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    pred = MultiInputPredictor(args.model, device="cpu", cpu_threads=args.threads, batch_sizes=sorted({1, *sizes}))
    rng = np.random.default_rng(0)
    x = rng.random((args.cards, *pred.input_shapes["series"])).astype(np.float32)
    print(f"model {args.model} ({pred.kind}), {args.threads} math thread(s), {args.cards} cards")
    for bs in sizes:
        n = min(args.cards, 500) if bs == 1 else args.cards
        pred.predict(x[:bs])
        t, c = time.perf_counter(), time.process_time()
        for s in range(0, n, bs):
            pred.predict(x[s:s + bs])
        dt, dc = time.perf_counter() - t, time.process_time() - c
        print(f"  network only, batch {bs:>4}: {n / dt:8.0f} cards/s wall, {n / dc:8.0f} cards per CPU-second")
    # CSV bytes through the shared preprocessing (what a lone CSV costs end to end, minus file I/O)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_series.csv"
    t_ = np.linspace(0, 2 * np.pi, 220, endpoint=False)
    write_card_csv(tmp, 1.5 * (1 - np.cos(t_)), 40 + 20 * (np.sin(t_) > 0) + rng.normal(0, 0.5, 220))
    data = tmp.read_bytes()
    n = min(args.cards, 2000)
    t = time.perf_counter()
    arrs = [preprocess_series_csv(data) for _ in range(n)]
    prep = time.perf_counter() - t
    bs = max(sizes)
    t = time.perf_counter()
    for s in range(0, n, bs):
        pred.predict(np.stack(arrs[s:s + bs]))
    net = time.perf_counter() - t
    print(f"  CSV -> series preprocessing: {n / prep:8.0f} cards/s (one process)")
    print(f"  CSV -> preprocessing -> network (batch {bs}): {n / (prep + net):8.0f} cards/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
