"""Notebook-style baselines: what the original notebook did, with the same exported model and data.

    python -m bench.baselines score FOLDER --model models/default --out preds.csv
    python -m bench.baselines serve --model models/default --port 8100
    python -m bench.baselines train FOLDER --model cardnet --method default --steps 6 --batch-size 64

* ``score``: a Python loop that reads each PNG with ``cv2.imread``, applies the fill, converts it to a
  float array and runs the ``paddle.jit.load``-ed network in dynamic-graph mode in batches of 128.
* ``serve``: a minimal single-process Flask app (Werkzeug's server, one thread) that runs the
  ``jit.load``-ed network in dynamic-graph mode per request.
* ``train``: a loop that re-reads and re-fills every card of the batch from disk each step and trains
  in plain dynamic graph.

The fill is the shared one (``shared.preprocess.filled_card``), so the baselines compute what the
product computes; only the way of running it differs.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np


def _load_dygraph(model_dir: str):
    import paddle  # noqa: PLC0415

    paddle.set_device("cpu")
    model = paddle.jit.load(str(Path(model_dir) / "inference"))
    model.eval()
    return model


def _config(model_dir: str):
    from shared.meta import load_meta  # noqa: PLC0415
    from shared.preprocess import PreprocessConfig  # noqa: PLC0415

    return PreprocessConfig.from_dict(load_meta(Path(model_dir))["preprocess"])


def _png_to_input(path_or_bytes, config) -> np.ndarray:
    import cv2  # noqa: PLC0415

    from shared.cards import ink_from_image  # noqa: PLC0415
    from shared.preprocess import filled_card  # noqa: PLC0415

    if isinstance(path_or_bytes, (bytes, bytearray)):
        img = cv2.imdecode(np.frombuffer(path_or_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    else:
        img = cv2.imread(str(path_or_bytes), cv2.IMREAD_UNCHANGED)
    filled = filled_card(ink_from_image(img), config)
    return filled.astype("float32")[None] / 255.0


def score(folder: str, model_dir: str, out: str, batch_size: int = 128) -> int:
    """The notebook's evaluation loop; writes ``id,label`` rows and prints one JSON line of timings."""
    import paddle  # noqa: PLC0415

    t0 = time.perf_counter()
    model = _load_dygraph(model_dir)
    config = _config(model_dir)
    from shared.meta import load_meta  # noqa: PLC0415

    codes = [x["code"] for x in load_meta(Path(model_dir))["labels"]]
    files = sorted(Path(folder).rglob("*.png"))
    started = time.perf_counter()
    rows: list[tuple[str, str]] = []
    xs, names = [], []

    def flush():
        with paddle.no_grad():
            probs = model(paddle.to_tensor(np.stack(xs))).numpy()
        rows.extend((n, codes[int(i)]) for n, i in zip(names, probs.argmax(axis=1)))
        xs.clear()
        names.clear()

    for f in files:
        xs.append(_png_to_input(f, config))
        names.append(f.stem)
        if len(xs) == batch_size:
            flush()
    if xs:
        flush()
    elapsed = time.perf_counter() - started
    with open(out, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("id", "label"), *rows])
    print(json.dumps({"cards": len(rows), "scoring_s": elapsed, "startup_s": started - t0}))
    return 0


def serve(model_dir: str, port: int) -> int:
    """A minimal Flask app: one process, one thread, dynamic-graph inference per request."""
    import paddle  # noqa: PLC0415
    from flask import Flask, jsonify, request  # noqa: PLC0415

    model = _load_dygraph(model_dir)
    config = _config(model_dir)
    from shared.meta import load_meta  # noqa: PLC0415

    codes = [x["code"] for x in load_meta(Path(model_dir))["labels"]]
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.post("/classify")
    def classify():
        started = time.perf_counter()
        x = _png_to_input(request.get_data(), config)
        with paddle.no_grad():
            probs = model(paddle.to_tensor(x[None])).numpy()[0]
        best = int(probs.argmax())
        return jsonify({"label": codes[best], "confidence": float(probs[best]),
                        "probabilities": dict(zip(codes, map(float, probs))),
                        "elapsed_ms": (time.perf_counter() - started) * 1000})

    app.run(host="127.0.0.1", port=port, threaded=False, use_reloader=False)
    return 0


def _readable(path: Path, config) -> bool:
    from shared.cards import CardError  # noqa: PLC0415

    try:
        _png_to_input(path, config)
    except CardError:
        return False
    return True


def train(folder: str, model: str, method: str, steps: int, batch_size: int, seed: int = 0) -> int:
    """The notebook's training loop on one network; prints samples/s over ``steps`` steps (after one warm-up)."""
    import paddle  # noqa: PLC0415
    import paddle.nn.functional as F  # noqa: PLC0415

    from shared.labels import CODES  # noqa: PLC0415
    from shared.preprocess import PreprocessConfig  # noqa: PLC0415
    from training.models import build_model  # noqa: PLC0415

    paddle.set_device("cpu")
    paddle.seed(seed)
    config = PreprocessConfig(method=method)
    files = sorted(Path(folder).rglob("*.png"))
    # Cards this fill cannot read (the notebook's legacy fill needs fully opaque line pixels; the simulator
    # also draws anti-aliased lines) are left out before the clock starts, as the toolkit's ingest skips them.
    files = [f for f in files if _readable(f, config)]
    labels = np.array([CODES.index(f.parent.name) for f in files], np.int64)
    order = np.random.default_rng(seed).permutation(len(files))
    # The notebook nets as a notebook writes them: stock nn.Conv2D (not the toolkit's row-wise bias add).
    net = build_model(model, **({"conv": paddle.nn.Conv2D} if model.startswith("cnn") else {}))
    net.train()
    opt = paddle.optimizer.AdamW(1e-3, parameters=net.parameters())
    seen, started = 0, None
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        idx = order[(step * batch_size) % len(files):][:batch_size]
        x = paddle.to_tensor(np.stack([_png_to_input(files[i], config) for i in idx]))
        y = paddle.to_tensor(labels[idx])
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        if step >= 1:
            seen += len(idx)
    elapsed = time.perf_counter() - started
    print(json.dumps({"samples": seen, "seconds": elapsed, "samples_per_s": seen / elapsed}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("folder")
    s.add_argument("--model", default="models/default")
    s.add_argument("--out", required=True)
    s.add_argument("--batch-size", type=int, default=128)
    v = sub.add_parser("serve")
    v.add_argument("--model", default="models/default")
    v.add_argument("--port", type=int, default=8100)
    t = sub.add_parser("train")
    t.add_argument("folder")
    t.add_argument("--model", default="cardnet")
    t.add_argument("--method", default="default")
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.cmd == "score":
        return score(args.folder, args.model, args.out, args.batch_size)
    if args.cmd == "serve":
        return serve(args.model, args.port)
    return train(args.folder, args.model, args.method, args.steps, args.batch_size)


if __name__ == "__main__":
    sys.exit(main())
