"""Evaluate an exported model folder on labelled cards: accuracy, per-class precision/recall/F1, confusion.

``python training/run.py eval --model models/<name> --data <train.zip | folder | field-cards.csv>``

The model is run the way serving runs it (Paddle Inference on the exported ``inference.json``), with
the preprocessing its ``meta.json`` names. Writes ``report.json``, ``confusion.txt`` and
``confusion.png`` into the output folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.atomic import atomic_write_bytes, atomic_write_text
from shared.cards import CardError, render_card_png, write_card_csv
from shared.labels import CODES
from shared.meta import load_meta, model_files
from shared.preprocess import PreprocessConfig
from training.data import CACHE_FORMAT, default_cache_dir, load_data
from training.train import confusion_matrix, per_class_report
from training.vdl import confusion_image

log = logging.getLogger(__name__)


class Predictor:
    """Paddle Inference predictor of an exported folder (oneDNN on CPU, no memory_optim: see PADDLE_NOTES)."""

    def __init__(self, folder: str | os.PathLike, threads: int = 2):
        import paddle.inference as pi

        graph, params = model_files(folder)
        config = pi.Config(str(graph), str(params))
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        self.predictor = pi.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run a model with named inputs (``series``, or ``image`` + ``series`` for a dual model)."""
        for name in self.predictor.get_input_names():
            if name not in feeds:
                raise ValueError(f"the network wants input {name!r}; got {sorted(feeds)}")
            handle = self.predictor.get_input_handle(name)
            handle.reshape(list(feeds[name].shape))
            handle.copy_from_cpu(np.ascontiguousarray(feeds[name], np.float32))
        self.predictor.run()
        return self.output.copy_to_cpu()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.input.reshape(list(x.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(x, np.float32))
        self.predictor.run()
        return self.output.copy_to_cpu()


def field_csv_to_folder(csv_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Turn ``field-cards.csv`` (one card per row, series only) into a competition-layout folder.

    Only rows with one of our condition codes are written (``<out>/<code>/<id>.png + .csv``); the PNG is
    drawn by :func:`shared.cards.render_card_png`, the renderer the competition format assumes.
    """
    csv_path = Path(csv_path)
    st = csv_path.stat()
    out = Path(out_dir or default_cache_dir() / f"field-{st.st_size}-{st.st_mtime_ns}-v{CACHE_FORMAT}")
    if (out / ".complete").is_file():
        return out
    written = 0
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code = (row.get("code") or "").strip()
            if code not in CODES:
                continue
            pos = np.array(row["position_m"].split(), float)
            load = np.array(row["load_kN"].split(), float)
            folder = out / code
            folder.mkdir(parents=True, exist_ok=True)
            try:
                atomic_write_bytes(folder / f"{row['id']}.png", render_card_png(pos, load))
            except CardError as exc:
                log.warning("field card %s not rendered: %s", row["id"], exc)
                continue
            write_card_csv(folder / f"{row['id']}.csv", pos, load)
            written += 1
    atomic_write_text(out / ".complete", f"{written}\n")
    return out


def evaluate_folder(model_dir: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                    batch_size: int = 64, progress: bool = True, cache_dir=None) -> dict[str, Any]:
    """Evaluate an exported model on labelled cards and write the report.

    Returns:
        The report dict (also written as ``report.json``).
    """
    from tqdm import tqdm

    model_dir = Path(model_dir)
    meta = load_meta(model_dir)
    kind = meta.get("kind", "image")
    config = PreprocessConfig.from_dict(meta["preprocess"]) if kind != "series" else PreprocessConfig()
    data = Path(data)
    source = field_csv_to_folder(data) if data.suffix.lower() == ".csv" else data
    cs = load_data(source, config, cache_dir=cache_dir, progress=progress)
    series = None
    if kind != "image":  # series/dual models score the cards that have a usable CSV (the rest are counted)
        from shared.series import SeriesConfig
        from training.series_data import load_series, restrict

        series, ok, series_report = load_series(cs, SeriesConfig.from_dict(meta["series_preprocess"]),
                                                cache_dir=cache_dir, progress=progress)
        cs, series = restrict(cs, ok), series[ok]
        cs.report = {**cs.report, "series": series_report}
        if not len(cs):
            raise ValueError(f"{data}: no card with a usable CSV for the {kind} model")
    predictor = Predictor(model_dir)
    probs = []
    start = time.perf_counter()
    for s in tqdm(range(0, len(cs), batch_size), desc="eval", unit="batch", disable=not progress):
        b = np.arange(s, min(s + batch_size, len(cs)))
        if kind == "image":
            probs.append(predictor(cs.model_input(b)))
        elif kind == "series":
            probs.append(predictor.run({"series": series[b]}))
        else:
            probs.append(predictor.run({"image": cs.model_input(b), "series": series[b]}))
    seconds = time.perf_counter() - start
    probs = np.concatenate(probs)
    pred = probs.argmax(axis=1)
    y = cs.labels
    cm = confusion_matrix(y, pred)
    present = [CODES[i] for i in range(len(CODES)) if cm[i].sum()]
    per_class = per_class_report(cm)
    report = {
        "model": str(model_dir),
        "model_name": meta.get("name"),
        "data": str(data),
        "cards": int(len(y)),
        "accuracy": round(float((pred == y).mean()), 4),
        "macro_f1_present_classes": round(float(np.mean([per_class[c]["f1"] for c in present])), 4) if present else None,
        "classes_present": present,
        "per_class": per_class,
        "confusion": {"labels": list(CODES), "rows_are": "true class", "matrix": cm.tolist()},
        "ingest": {k: v for k, v in cs.report.items() if k != "source"},
        "data_fingerprint": cs.fingerprint,
        "preprocess": config.to_dict() if kind != "series" else meta["series_preprocess"],
        "kind": kind,
        "cards_per_s": round(len(y) / max(seconds, 1e-9), 1),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "report.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        atomic_write_text(out_dir / "confusion.txt", format_report(report) + "\n")
        ok, png = cv2.imencode(".png", confusion_image(cm, f"{meta.get('name')} on {data.name}: acc {report['accuracy']:.3f}")[:, :, ::-1])
        if ok:
            atomic_write_bytes(out_dir / "confusion.png", png.tobytes())
    return report


def format_report(report: dict[str, Any]) -> str:
    """Accuracy, the per-class table and the confusion matrix as text."""
    lines = [f"model {report['model_name']}  data {report['data']}  cards {report['cards']}  "
             f"accuracy {report['accuracy']:.4f}", "", "class  precision  recall     f1  support"]
    for code, r in report["per_class"].items():
        if r["support"] or r["precision"]:
            lines.append(f"{code}   {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['support']:8d}")
    lines += ["", "confusion (rows = true, columns = predicted)", "     " + " ".join(f"{c[1:]:>4}" for c in CODES)]
    for code, row in zip(CODES, report["confusion"]["matrix"]):
        lines.append(f"{code}  " + " ".join(f"{v:4d}" for v in row))
    return "\n".join(lines)
