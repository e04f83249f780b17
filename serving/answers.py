"""What the service says about a card: the answer of ``POST /classify``, of each card of ``/classify/batch``, and
the row of the batch scorer's predictions CSV, all built from one :func:`answer`.

A field every answer gains goes into :func:`answer` (and, as a column, into :func:`csv_header` /
:func:`csv_row`), so the HTTP API, the web page and the CSV cannot drift apart. Every answer says:

* the label, its confidence, all probabilities and the runner-up (``top2``), read from the network's raw
  output by the model's own contract (:class:`shared.model_outputs.OutputContract`: temperature, review rule,
  open-set rule from ``meta.json``);
* ``unknown``: the card is not a dynamometer card, or none of the twelve conditions -- the structural card
  check of the files the model read (:mod:`serving.card_facts`) failed, or the model's "none of the twelve"
  output passed its threshold (models that have one); the label and probabilities stay, for whoever wants them;
* ``review``: a person should check the answer -- by the model's fitted rule (``meta.json``
  ``confidence.review``) or, for a model without one, the low-confidence fallback; ``review_rule`` says which;
* ``measures``: what an engineer reads off the card (fillage, loads, stroke, work), with units;
* ``advice``: the likely cause and usual remedy of the predicted condition, with sources (:func:`shared.labels.advice`).

Which answers a person should look at first is :func:`needs_review` (the batch summary and the page).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np

from serving.card_facts import CardFacts
from serving.routing import CardInput
from shared.cards import checked_card_arrays, decode_card_png, read_card_csv
from shared.labels import BY_CODE, advice
from shared.model_outputs import LOW_CONFIDENCE
from shared.preprocess import card_ink, to_grey_png, to_model_input

if TYPE_CHECKING:  # annotations only: this module needs no Paddle
    from serving.predictor import Predictor

PROB_FORMAT = ".8f"  # probabilities and confidence in the predictions CSV
MEASURE_FORMAT = ".4f"  # measures in the predictions CSV
PLOT_POINTS = 1000  # at most this many samples of a CSV card go to the web page's plot


def _ranked(predictor: Predictor, probs: np.ndarray, count: int) -> list[dict[str, Any]]:
    order = np.argsort(-probs, kind="stable")[:count]
    return [{"label": predictor.codes[i], "name": predictor.labels[i]["name"], "name_en": predictor.labels[i]["name_en"],
             "probability": float(probs[i])} for i in order]


def answer(predictor: Predictor, raw: np.ndarray, facts: CardFacts | None, top_k: int = 0,
           low_confidence: float = LOW_CONFIDENCE) -> dict[str, Any]:
    """The JSON-ready answer for one card from the model that read it.

    Args:
        predictor: the model that answered (labels, identity, and ``output``: how its raw output is read).
        raw: the network's first output for the card (``[output width]``: probabilities or logits).
        facts: what the card's files say (structural check, measures: :func:`serving.card_facts.read_facts`);
            None only for a caller that has model inputs and no files (the answer then rests on the model alone).
        top_k: add a ranked ``top_k`` list of this many labels (0: none).
        low_confidence: the review threshold of a model without a fitted review rule.

    Returns:
        ``{"label", "name", "name_en", "confidence", "probabilities", "top2", ["top_k"], ["other_probability"],
        "unknown", "unknown_score", "unknown_reasons", "unknown_basis", "review", "review_rule", "measures",
        "advice", "model"}`` (docs/SERVING.md describes each).
    """
    read = predictor.output.interpret(np.asarray(raw)[None], low_confidence)
    probs = read.probabilities[0]
    labels, codes = predictor.labels, predictor.codes
    best = int(np.argmax(probs))
    label = labels[best]
    out: dict[str, Any] = {
        "label": label["code"],
        "name": label["name"],
        "name_en": label["name_en"],
        "confidence": float(probs[best]),
        "probabilities": {code: float(p) for code, p in zip(codes, probs)},
        "top2": _ranked(predictor, probs, 2),
    }
    if top_k > 0:
        out["top_k"] = _ranked(predictor, probs, top_k)
    out.update(_unknown(predictor, read, facts))
    out["review"] = bool(read.review[0])
    out["review_rule"] = predictor.output.review_rule(low_confidence)
    out["measures"] = _measures(facts)
    out["advice"] = advice(label["code"]) if label["code"] in BY_CODE else None
    out["model"] = predictor.model_id
    return out


def _unknown(predictor: Predictor, read, facts: CardFacts | None) -> dict[str, Any]:
    """``unknown`` and its evidence: the structural check of the files, and the model's open-set rule if it has one."""
    basis, reasons, scores = [], [], []
    unknown = False
    if facts is not None:
        basis += facts.checked
        scores.append(1.0 - facts.card_score)
        if not facts.is_card:
            unknown = True
            reasons += facts.reasons
    out: dict[str, Any] = {}
    if read.other is not None:
        other = float(read.other[0])
        out["other_probability"] = other
        rule = predictor.output.open_set_rule()
        if rule is not None:
            basis.append(rule["method"])
            scores.append(other)
            if read.open_set_unknown[0]:
                unknown = True
                reasons.append(f"the model's 'none of the twelve' output is {other:.2f}, at or above its "
                               f"threshold {rule['threshold']:.2f}")
    return {"unknown": unknown, "unknown_score": max(scores, default=0.0), "unknown_reasons": reasons,
            "unknown_basis": basis, **out}


def _measures(facts: CardFacts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    if facts.measures is None:
        return {"error": facts.measures_error}
    return facts.measures.to_dict()


def needs_review(card_answer: dict[str, Any]) -> bool:
    """Whether a person should check this answer: the model's review rule says so (``review``).

    The one rule the batch summary counts and the web page marks by; ``review_rule`` in the answer says
    which rule it was (the model's fitted one, or the low-confidence fallback).
    """
    return bool(card_answer["review"])


def models_summary(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a batch's top level says about the models: every model that answered, with its card count.

    Returns:
        ``{"model": the one model that answered every card, or None when several (or none) did,
        "models": [{"name", "version", "kind", "cards"}, ...] in the order they first answered}``.
    """
    counts: dict[tuple, dict[str, Any]] = {}
    for card_answer in answers:
        model = card_answer["model"]
        key = (model["kind"], model["name"], model["version"])
        counts.setdefault(key, {**model, "cards": 0})["cards"] += 1
    models = list(counts.values())
    one = {k: v for k, v in models[0].items() if k != "cards"} if len(models) == 1 else None
    return {"model": one, "models": models}


# ---------------------------------------------------------------------------------- the predictions CSV


# Measure columns: (column, measure, basis). One unit per column: a CSV card's in kN/m/kJ, a PNG card's as
# fractions of the image; fillage and fullness are fractions in both.
MEASURE_COLUMNS = (
    ("fillage", "fillage", None), ("fullness", "fullness", None),
    ("peak_load_kN", "peak_load", "series"), ("min_load_kN", "min_load", "series"),
    ("load_range_kN", "load_range", "series"), ("stroke_m", "stroke", "series"), ("work_kJ", "area", "series"),
    ("peak_load_rel", "peak_load", "outline"), ("min_load_rel", "min_load", "outline"),
    ("load_range_rel", "load_range", "outline"), ("stroke_rel", "stroke", "outline"), ("area_rel", "area", "outline"),
)
ADVICE_COLUMNS = ("cause", "remedy", "cause_en", "remedy_en", "advice_sources")


def csv_header(codes: Sequence[str], with_advice: bool = False) -> list[str]:
    """``id,label,name,confidence,unknown,unknown_score,review,second_label,second_probability,model,model_version,
    input,<measures>,A01,...,A12,unknown_reasons,[<advice>],error`` (docs/SERVING.md lists them)."""
    return ["id", "label", "name", "confidence", "unknown", "unknown_score", "review", "second_label",
            "second_probability", "model", "model_version", "input", *(c for c, _, _ in MEASURE_COLUMNS), *codes,
            "unknown_reasons", *(ADVICE_COLUMNS if with_advice else ()), "error"]


def csv_row(card_id: str, codes: Sequence[str], card_answer: dict[str, Any] | None, error: str = "",
            used: str = "", with_advice: bool = False) -> list[str]:
    """One predictions-CSV row (:func:`csv_header`): the card's :func:`answer`, or empty columns and its error.

    Args:
        card_id: the card's id (file stem).
        codes: the label codes, in column order.
        card_answer: the card's answer, None for a card that could not be read.
        error: why the card could not be read.
        used: what the model read (``png``, ``csv`` or ``pair``).
        with_advice: add the advice columns (cause, remedy in Chinese and English, sources).
    """
    header = csv_header(codes, with_advice)
    cells = dict.fromkeys(header, "")
    cells.update(id=card_id, input=used, error=error)
    if card_answer is not None:
        model = card_answer["model"]
        cells.update(label=card_answer["label"], name=card_answer["name"],
                     confidence=format(card_answer["confidence"], PROB_FORMAT),
                     unknown=str(int(card_answer["unknown"])), unknown_score=format(card_answer["unknown_score"], ".4f"),
                     review=str(int(card_answer["review"])), model=model["kind"],
                     model_version=f"{model['name']} {model['version']}",
                     unknown_reasons="; ".join(card_answer["unknown_reasons"]))
        if len(card_answer["top2"]) > 1:
            second = card_answer["top2"][1]
            cells.update(second_label=second["label"], second_probability=format(second["probability"], PROB_FORMAT))
        measures = card_answer.get("measures") or {}
        for column, name, basis in MEASURE_COLUMNS:
            value = (measures.get(name) or {}).get("value") if basis in (None, measures.get("basis")) else None
            cells[column] = "" if value is None else format(value, MEASURE_FORMAT)
        cells.update({code: format(card_answer["probabilities"][code], PROB_FORMAT) for code in codes})
        if with_advice and card_answer.get("advice"):
            tip = card_answer["advice"]
            cells.update({k: tip[k] for k in ADVICE_COLUMNS[:4]}, advice_sources=" | ".join(tip["sources"]))
    return [cells[h] for h in header]


# ---------------------------------------------------------------------------------- pictures (?include_input=1)


def input_views(png: bytes | None, csv: bytes | None, card_input: CardInput) -> dict[str, Any]:
    """What the web page draws for a card: the card itself and the input the model read.

    Args:
        png, csv: the card's files as the model was given them (``csv`` None when the model read only the PNG).
        card_input: the card's model input.

    Returns:
        ``card_png``: the outline, dark on white (the PNG's, else the CSV's rendered), as a data URL;
        ``card_samples`` (a CSV card): ``{"position_m", "load_kN"}``, the stroke in its units (at most
        :data:`PLOT_POINTS` samples); ``input_png`` (image and dual models): the filled card the network read;
        ``input_series`` (series and dual models): ``{"position", "load"}``, the network's position and load
        channels (scaled 0-1, resampled in time order).

    Raises:
        CardError: the file is not a usable card.
    """
    card = read_card_csv(csv) if csv is not None else None
    ink = decode_card_png(png) if png is not None else card_ink(card)
    views: dict[str, Any] = {"card_png": png_data_url(outline_png(ink))}
    if card is not None:
        position, load = checked_card_arrays(card.position, card.load)
        step = max(1, -(-position.size // PLOT_POINTS))
        views["card_samples"] = {"position_m": _rounded(position[::step]), "load_kN": _rounded(load[::step])}
    if "image" in card_input:
        views["input_png"] = png_data_url(to_grey_png(to_model_input(card_input["image"])))
    if "series" in card_input:
        series = card_input["series"]
        views["input_series"] = {"position": _rounded(series[0]), "load": _rounded(series[1])}
    return views


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


def png_data_url(png: bytes) -> str:
    """``data:image/png;base64,...`` for a web page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def encode_png(image: np.ndarray) -> bytes:
    """Encode a ``uint8`` image as a PNG: ``[H, W]`` grey, or ``[H, W, 4]`` BGRA (OpenCV's channel order)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image, dtype=np.uint8))
    if not ok:  # pragma: no cover - cv2 fails here only on impossible images
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def outline_png(ink: np.ndarray) -> bytes:
    """The card outline as dark ink on white (the competition PNGs hold it in alpha only)."""
    return encode_png(255 - np.asarray(ink, dtype=np.uint8))
