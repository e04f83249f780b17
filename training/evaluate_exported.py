"""Evaluate an exported model folder on labelled cards: accuracy, per-class precision/recall/F1, confusion.

``python training/run.py eval --model models/<name> --data <train.zip | folder | field-cards.csv>``

The model is run the way serving runs it (Paddle Inference on the exported ``inference.json``), on the
inputs of its kind (:func:`training.inputs.make_inputs`) made with the preprocessing its ``meta.json``
names. Writes ``report.json``, ``confusion.txt`` and ``confusion.png`` into the output folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.atomic import atomic_write_bytes, atomic_write_text
from shared.labels import CODES
from shared.meta import ModelFolderError, load_meta, model_files
from shared.preprocess import PreprocessConfig
from shared.series import SeriesConfig
from training.data import field_csv_to_folder, load_data
from training.inputs import make_inputs
from training.metrics import confusion_matrix, per_class_report
from training.series_data import cards_with_series
from training.vdl import confusion_image

log = logging.getLogger(__name__)


class ExportedModel:
    """An exported model folder run by Paddle Inference (oneDNN on CPU, no memory_optim: see PADDLE_NOTES).

    The toolkit's own runner, for evaluation and parity tests: one batch at a time, fed by the input
    names of the folder's ``meta.json`` (``image``, ``series``, or both for a dual model). The service's
    predictors (``serving/``) add batching, devices and start-up checks.

    Raises:
        shared.meta.ModelFolderError: missing files, invalid ``meta.json``, or inputs that disagree with it.
    """

    def __init__(self, folder: str | os.PathLike, threads: int = 2):
        import paddle.inference as pi

        self.meta = load_meta(folder)
        self.kind = self.meta.get("kind", "image")
        graph, params = model_files(folder)
        config = pi.Config(str(graph), str(params))
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        self.predictor = pi.create_predictor(config)
        names = [spec["name"] for spec in self.meta.get("inputs", [])] or ["image"]
        handles = self.predictor.get_input_names()
        if len(handles) != len(names):
            raise ModelFolderError(f"{folder}: the network takes {len(handles)} inputs, meta.json names {names}")
        # an image model's one input keeps the network's argument name; series and dual inputs are named
        self.inputs = ({names[0]: self.predictor.get_input_handle(handles[0])} if len(names) == 1 else
                       {name: self.predictor.get_input_handle(name) for name in names})
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities ``[n, 12]`` for named inputs (``image``, ``series``, or both for a dual model).

        Raises:
            ValueError: an input of the model is missing from ``feeds``.
        """
        for name, handle in self.inputs.items():
            if name not in feeds:
                raise ValueError(f"the network wants input {name!r}; got {sorted(feeds)}")
            handle.reshape(list(feeds[name].shape))
            handle.copy_from_cpu(np.ascontiguousarray(feeds[name], np.float32))
        self.predictor.run()
        return self.output.copy_to_cpu()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of a one-input model (image or series) for the array ``x``."""
        if len(self.inputs) != 1:
            raise ValueError(f"a {self.kind} model takes {', '.join(self.inputs)}: use run() with named inputs")
        return self.run({next(iter(self.inputs)): x})


def evaluate_exported(model_dir: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                    batch_size: int = 64, progress: bool = True, cache_dir=None) -> dict[str, Any]:
    """Evaluate an exported model on labelled cards and write the report.

    Returns:
        The report dict (also written as ``report.json``).
    """
    from tqdm import tqdm

    model_dir = Path(model_dir)
    model = ExportedModel(model_dir)
    meta, kind = model.meta, model.kind
    config = PreprocessConfig.from_dict(meta["preprocess"]) if kind != "series" else PreprocessConfig()
    data = Path(data)
    source = field_csv_to_folder(data) if data.suffix.lower() == ".csv" else data
    cs = load_data(source, config, cache_dir=cache_dir, progress=progress)
    series = None
    if kind != "image":  # series/dual models score the cards that have a usable CSV (the rest are counted)
        cs, series = cards_with_series(cs, SeriesConfig.from_dict(meta["series_preprocess"]), cache_dir=cache_dir,
                                       progress=progress)
        if not len(cs):
            raise ValueError(f"{data}: no card with a usable CSV for the {kind} model")
    inputs = make_inputs(kind, cs, series)
    probs = []
    start = time.perf_counter()
    for s in tqdm(range(0, len(cs), batch_size), desc="eval", unit="batch", disable=not progress):
        probs.append(model.run(inputs.arrays(np.arange(s, min(s + batch_size, len(cs))))))
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
        atomic_write_text(out_dir / "confusion.txt", format_eval_report(report) + "\n")
        ok, png = cv2.imencode(".png", confusion_image(cm, f"{meta.get('name')} on {data.name}: acc {report['accuracy']:.3f}")[:, :, ::-1])
        if ok:
            atomic_write_bytes(out_dir / "confusion.png", png.tobytes())
    return report


def format_eval_report(report: dict[str, Any]) -> str:
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
