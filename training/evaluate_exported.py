"""Evaluate an exported model folder on labelled cards: the answers an engineer gets, and how good they are.

``python training/run.py eval --model models/<name> --data <train.zip | folder | field-cards.csv | field | field-all>``

The model is run the way serving runs it (Paddle Inference on the exported ``inference.json``), on the
inputs of its kind (:func:`training.inputs.make_inputs`) made with the preprocessing its ``meta.json``
names, and its first output is read by the model folder's contract (:func:`read_outputs`: an old folder's
softmax probabilities as they are; a new folder's logits with its temperature, review rule and open-set
threshold). Every card gets what an answer says: its label among the twelve, the calibrated confidence,
``review`` and ``unknown`` -- the structural card check of what the model read (:mod:`shared.card_check`:
the outline for an image model, the samples for a series model, both for a dual one) failed, or the
model's own "none of the twelve" (``p(other) >= open_set.threshold``), the same two pieces of evidence the
service uses.

The report: accuracy, per-class precision/recall/F1 and confusion over the cards of the twelve conditions;
how many answers are unknown and sent to review and the accuracy of those that are not; the expected
calibration error of the served probabilities (and of the uncalibrated ones) with a reliability diagram;
and, when the data has cards of other conditions (a field-format CSV's rows without a code; ``field-all``),
the share of them answered unknown and the share of in-class cards wrongly answered unknown. Writes
``report.json``, ``confusion.txt``, ``confusion.png``, ``reliability.png`` and ``cards.csv`` (one row per card).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared import confidence as C
from shared.atomic import atomic_write_bytes, atomic_write_text
from shared.card_check import check_outline, check_series
from shared.labels import CODES
from shared.meta import ModelFolderError, load_meta, model_files
from shared.preprocess import PreprocessConfig
from shared.series import SeriesConfig
from training.answer_rules import ECE_BINS, reliability_png
from training.classes import OTHER, label_code
from training.data import CardSet, field_csv_to_folder, load_data
from training.inputs import make_inputs
from training.metrics import class_probabilities, confusion_matrix, in_class, per_class_report
from training.other_class import as_other, condition_of, field_other_to_folder
from training.series_data import cards_with_series, load_strokes
from training.sources import merge_cards
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
        """The network's first output for named inputs (``image``, ``series``, or both for a dual model):
        probabilities ``[n, 12]`` of an old folder, logits ``[n, 12 | 13]`` of a new one (:func:`read_outputs`).

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
        """The first output of a one-input model (image or series) for the array ``x``."""
        if len(self.inputs) != 1:
            raise ValueError(f"a {self.kind} model takes {', '.join(self.inputs)}: use run() with named inputs")
        return self.run({next(iter(self.inputs)): x})


@dataclass(frozen=True)
class Answers:
    """A batch of a model's raw outputs read by its ``meta.json`` (one row per card)."""

    probabilities: np.ndarray  # [n, 12] the served (calibrated) probabilities
    uncalibrated: np.ndarray  # [n, 12] before temperature scaling
    other: np.ndarray | None  # [n] p(other), or None without the 13th output
    review: np.ndarray  # [n] bool
    open_set_unknown: np.ndarray  # [n] bool: the model's own "none of the twelve"
    review_rule: str


LOW_CONFIDENCE = 0.5  # the review fallback of a model without a fitted rule (as the service)


def read_outputs(raw: np.ndarray, meta: dict[str, Any]) -> Answers:
    """Read a batch of a model's first output by its ``meta.json`` (the contract of :mod:`training.export`).

    ``output: "probabilities"`` (old folders): the probabilities as they are, review below
    :data:`LOW_CONFIDENCE`, no open-set answer. ``output: "logits"``: probabilities ``softmax(logits[:, :12] / T)``,
    ``p(other) = softmax(logits)[:, 12]`` (13th output), review by ``confidence.review``, unknown when
    ``p(other) >= open_set.threshold``.

    Raises:
        ValueError: an output format this toolkit does not know.
    """
    raw = np.asarray(raw, np.float64)
    output = meta.get("output", "probabilities")
    if output == "probabilities":
        probs = raw
        return Answers(probs, probs, None, probs.max(axis=1) < LOW_CONFIDENCE, np.zeros(len(raw), bool),
                       "low_confidence")
    if output != "logits":
        raise ValueError(f"meta.json output {output!r} is not 'probabilities' or 'logits'")
    confidence = meta.get("confidence") or {}
    probs = C.softmax(raw[:, : len(CODES)], confidence.get("temperature", 1.0))
    other = C.softmax(raw)[:, OTHER] if meta.get("other_class") else None
    rule = confidence.get("review")
    if rule:
        top, margin = C.top_two(probs)
        review, name = (top < rule["min_top"]) | (margin < rule["min_margin"]), "meta"
    else:
        review, name = probs.max(axis=1) < LOW_CONFIDENCE, "low_confidence"
    open_set = meta.get("open_set")
    unknown = other >= open_set["threshold"] if open_set and other is not None else np.zeros(len(raw), bool)
    return Answers(probs, class_probabilities(raw), other, review, unknown, name)


def _cards_and_series(source: Path, config: PreprocessConfig, kind: str, meta: dict[str, Any], other: bool,
                      cache_dir, progress: bool) -> tuple[CardSet, np.ndarray | None, list, list[str]]:
    """The cards to score (with outline masks and strokes for the structural check), their series, strokes,
    and the fingerprint of each part read (the coded rows, the rows of other conditions)."""
    parts, series_parts, strokes = [], [], []
    if source.suffix.lower() == ".csv":  # a field-format CSV: its coded rows, and (other) its rows without a code
        sources = [(field_csv_to_folder(source, cache_dir=cache_dir), False)]
        if other:
            sources.append((field_other_to_folder(source, cache_dir=cache_dir), True))
    else:
        sources = [(source, False)]
    for path, is_other in sources:
        try:
            cs = load_data(path, config, cache_dir=cache_dir, keep_ink=kind != "series", labelled=not is_other,
                           progress=progress)
        except ValueError:
            if is_other:  # a CSV without rows of other conditions
                continue
            raise
        if is_other:
            cs = as_other(cs)
        series = None
        if kind != "image":  # series/dual models score the cards that have a usable CSV (the rest are counted)
            cs, series = cards_with_series(cs, SeriesConfig.from_dict(meta["series_preprocess"]), cache_dir=cache_dir,
                                           progress=progress)
            if not len(cs):
                continue
        parts.append(cs)
        series_parts.append(series)
        strokes += load_strokes(cs, progress=False) if kind != "image" else [None] * len(cs)
    if not parts:
        raise ValueError(f"{source}: no card with a usable CSV for the {kind} model")
    cs = merge_cards(parts, [source.stem, f"{source.stem}-other"]) if len(parts) > 1 else parts[0]
    return cs, None if kind == "image" else np.concatenate(series_parts), strokes, [p.fingerprint for p in parts]


def _is_card(kind: str, cs: CardSet, strokes: list) -> np.ndarray:
    """The structural check of what the model reads (outline, samples or both): True when it looks like a card."""
    ok = np.ones(len(cs), bool)
    for i in range(len(cs)):
        if kind != "series" and cs.ink is not None:
            ok[i] &= check_outline(cs.ink[i]).ok
        if kind != "image" and strokes[i] is not None:
            ok[i] &= check_series(*strokes[i]).ok
    return ok


def _rate(mask: np.ndarray) -> float | None:
    return round(float(np.mean(mask)), 4) if np.size(mask) else None


def evaluate_exported(model_dir: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      batch_size: int = 64, progress: bool = True, cache_dir=None,
                      other_conditions: bool | None = None) -> dict[str, Any]:
    """Evaluate an exported model on labelled cards and write the report.

    Args:
        model_dir: the exported model folder.
        data: a zip or folder of ``A01 … A12/`` cards, or a field-format CSV.
        out_dir: where the report goes (None: not written).
        other_conditions: read a field-format CSV's rows without a code as cards of other conditions
            (default: yes for a CSV).

    Returns:
        The report dict (also written as ``report.json``).

    Raises:
        ValueError: no usable card.
    """
    from tqdm import tqdm

    model_dir = Path(model_dir)
    model = ExportedModel(model_dir)
    meta, kind = model.meta, model.kind
    config = PreprocessConfig.from_dict(meta["preprocess"]) if kind != "series" else PreprocessConfig()
    data = Path(data)
    is_csv = data.suffix.lower() == ".csv"
    other = is_csv if other_conditions is None else (other_conditions and is_csv)
    cs, series, strokes, fingerprints = _cards_and_series(data, config, kind, meta, other, cache_dir, progress)
    inputs = make_inputs(kind, cs, series)
    raw = []
    start = time.perf_counter()
    for s in tqdm(range(0, len(cs), batch_size), desc="eval", unit="batch", disable=not progress):
        raw.append(model.run(inputs.arrays(np.arange(s, min(s + batch_size, len(cs))))))
    seconds = time.perf_counter() - start
    raw = np.concatenate(raw)
    answers = read_outputs(raw, meta)
    is_card = _is_card(kind, cs, strokes)
    unknown = ~is_card | answers.open_set_unknown
    y = cs.labels
    inside, others = in_class(y), y == OTHER
    pred = answers.probabilities.argmax(axis=1)
    yi, pi = y[inside], pred[inside]
    cm = confusion_matrix(yi, pi)
    present = [CODES[i] for i in range(len(CODES)) if cm[i].sum()]
    per_class = per_class_report(cm)
    correct = pi == yi
    review_in = answers.review[inside]
    report = {
        "model": str(model_dir),
        "model_name": meta.get("name"),
        "model_output": meta.get("output", "probabilities"),
        "data": str(data),
        "cards": int(len(y)),
        "cards_of_the_twelve": int(inside.sum()),
        "cards_of_other_conditions": int(others.sum()),
        "accuracy": round(float(correct.mean()), 4) if len(yi) else None,
        "macro_f1_present_classes": round(float(np.mean([per_class[c]["f1"] for c in present])), 4) if present else None,
        "classes_present": present,
        "per_class": per_class,
        "confusion": {"labels": list(CODES), "rows_are": "true class", "matrix": cm.tolist()},
        "answers": answers_summary(answers, unknown, is_card, inside, others, correct, review_in, cs.names),
        "calibration": calibration_summary(answers, yi, inside, meta),
        "ingest": {k: v for k, v in cs.report.items() if k != "source"},
        "data_fingerprint": cs.fingerprint,
        "preprocess": config.to_dict() if kind != "series" else meta["series_preprocess"],
        "kind": kind,
        "cards_per_s": round(len(y) / max(seconds, 1e-9), 1),
    }
    trained = trained_on_this(meta, fingerprints)
    if trained:
        report["warning"] = (f"the model was trained on {', '.join(trained)} (same fingerprint): these figures are "
                             f"not on held-out cards")
    if out_dir is not None:
        write_report(Path(out_dir), report, cm, answers, unknown, is_card, cs, pred, meta, data, yi, inside)
    return report


def answers_summary(answers: Answers, unknown, is_card, inside, others, correct, review_in, names) -> dict[str, Any]:
    """Counts of unknown and review answers, the accuracy of the answers not sent to review, and the
    open-set figures on cards of other conditions (with their condition) and of the twelve."""
    kept = ~review_in
    out = {
        "review_rule": answers.review_rule,
        "unknown": int(unknown.sum()), "unknown_by_card_check": int((~is_card).sum()),
        "unknown_by_model": int(answers.open_set_unknown.sum()),
        "review": int(answers.review.sum()),
        "review_of_the_twelve": int(review_in.sum()),
        "answered_without_review_share": _rate(kept),
        "accuracy_without_review": round(float(correct[kept].mean()), 4) if kept.any() else None,
        "accuracy_of_review": round(float(correct[~kept].mean()), 4) if (~kept).any() else None,
        "accuracy_known_without_review": (round(float(correct[kept & ~unknown[inside]].mean()), 4)
                                          if (kept & ~unknown[inside]).any() else None),
        "false_unknown_rate": _rate(unknown[inside]),
        "false_unknown_by_model": _rate(answers.open_set_unknown[inside]),
        "false_unknown_by_card_check": _rate(~is_card[inside]),
    }
    if others.any():
        conditions = np.asarray([condition_of(n) for n, o in zip(names, others) if o])
        caught = unknown[others]
        out["other_conditions"] = {
            "cards": int(others.sum()), "called_unknown_rate": _rate(caught),
            "by_model": _rate(answers.open_set_unknown[others]), "by_card_check": _rate(~is_card[others]),
            "by_condition": {c: {"cards": int((conditions == c).sum()), "called_unknown_rate": _rate(caught[conditions == c])}
                             for c in sorted(set(conditions))},
        }
        if answers.other is not None:
            out["other_conditions"]["auroc_p_other"] = round(C.auroc(1 - answers.other[inside], 1 - answers.other[others]), 4)
    return out


def calibration_summary(answers: Answers, yi: np.ndarray, inside: np.ndarray, meta: dict[str, Any]) -> dict[str, Any] | None:
    """ECE of the served and of the uncalibrated probabilities on the cards of the twelve, and their reliability bins."""
    if not len(yi):
        return None
    served, raw = answers.probabilities[inside], answers.uncalibrated[inside]
    return {"ece": round(C.expected_calibration_error(served, yi, ECE_BINS), 4),
            "ece_uncalibrated": round(C.expected_calibration_error(raw, yi, ECE_BINS), 4),
            "temperature": (meta.get("confidence") or {}).get("temperature", 1.0), "bins": ECE_BINS,
            "reliability": {"before": C.reliability_bins(raw, yi, ECE_BINS),
                            "after": C.reliability_bins(served, yi, ECE_BINS)}}


def trained_on_this(meta: dict[str, Any], fingerprints: list[str]) -> list[str]:
    """The model's training sources whose fingerprint is one of the evaluated data's parts'."""
    sources = ((meta.get("data") or {}).get("sources") or [])
    return [s.get("name", "?") for s in sources if s.get("fingerprint") in set(fingerprints)]


def write_report(out_dir: Path, report: dict[str, Any], cm, answers: Answers, unknown, is_card, cs: CardSet, pred,
                 meta, data: Path, yi, inside) -> None:
    """``report.json``, ``confusion.txt``/``.png``, ``reliability.png`` and ``cards.csv`` (one row per card)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "report.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(out_dir / "confusion.txt", format_eval_report(report) + "\n")
    ok, png = cv2.imencode(".png", confusion_image(cm, f"{meta.get('name')} on {data.name}: acc "
                                                       f"{report['accuracy'] or 0:.3f}")[:, :, ::-1])
    if ok:
        atomic_write_bytes(out_dir / "confusion.png", png.tobytes())
    cal = report["calibration"]
    if cal is not None:
        atomic_write_bytes(out_dir / "reliability.png", reliability_png(
            cal["reliability"], f"{meta.get('name')} on {data.name} ({int(inside.sum())} cards of the twelve)",
            (cal["ece_uncalibrated"], cal["ece"])))
    buf = io.StringIO()
    w = csv.writer(buf)
    second = np.argsort(-answers.probabilities, axis=1)[:, 1]
    w.writerow(["name", "true", "label", "confidence", "second", "second_confidence", "p_other", "unknown",
                "card_check_ok", "review", "correct"])
    for i, name in enumerate(cs.names):
        p = answers.probabilities[i]
        w.writerow([name, label_code(int(cs.labels[i])), CODES[pred[i]], f"{p[pred[i]]:.6f}", CODES[second[i]],
                    f"{p[second[i]]:.6f}", "" if answers.other is None else f"{answers.other[i]:.6f}",
                    int(unknown[i]), int(is_card[i]), int(answers.review[i]),
                    "" if not inside[i] else int(pred[i] == cs.labels[i])])
    atomic_write_text(out_dir / "cards.csv", buf.getvalue())


def format_eval_report(report: dict[str, Any]) -> str:
    """Accuracy, the answers (unknown, review, calibration, other conditions), the per-class table and the confusion."""
    acc = report["accuracy"]
    lines = [f"model {report['model_name']}  data {report['data']}  cards {report['cards']}  "
             f"accuracy {'-' if acc is None else f'{acc:.4f}'} (on the {report['cards_of_the_twelve']} cards of the "
             f"twelve conditions)"]
    if report.get("warning"):
        lines.append(f"warning: {report['warning']}")
    a = report.get("answers")
    if a:
        pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
        num = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        lines += [f"unknown {a['unknown']} (card check {a['unknown_by_card_check']}, model {a['unknown_by_model']}); "
                  f"review {a['review']} ({a['review_rule']} rule); of the twelve: {pct(a['answered_without_review_share'])} "
                  f"answered without review, accuracy {num(a['accuracy_without_review'])} (review ones "
                  f"{num(a['accuracy_of_review'])}); in-class cards called unknown {pct(a['false_unknown_rate'])}"]
        o = a.get("other_conditions")
        if o:
            lines.append(f"cards of other conditions: {o['cards']}, called unknown {pct(o['called_unknown_rate'])} "
                         f"(model {pct(o['by_model'])}, card check {pct(o['by_card_check'])})"
                         + (f", AUROC of p(other) {o['auroc_p_other']:.3f}" if "auroc_p_other" in o else ""))
            for cond, v in o["by_condition"].items():
                lines.append(f"  {cond:<26} {v['cards']:4d} cards  called unknown {pct(v['called_unknown_rate'])}")
    cal = report.get("calibration")
    if cal:
        lines.append(f"calibration (cards of the twelve): ECE {cal['ece']:.4f} as served (T = {cal['temperature']:.3f}), "
                     f"{cal['ece_uncalibrated']:.4f} uncalibrated ({cal['bins']} bins; reliability.png)")
    lines += ["", "class  precision  recall     f1  support"]
    for code, r in report["per_class"].items():
        if r["support"] or r["precision"]:
            lines.append(f"{code}   {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['support']:8d}")
    lines += ["", "confusion (rows = true, columns = predicted)", "     " + " ".join(f"{c[1:]:>4}" for c in CODES)]
    for code, row in zip(CODES, report["confusion"]["matrix"]):
        lines.append(f"{code}  " + " ".join(f"{v:4d}" for v in row))
    return "\n".join(lines)
