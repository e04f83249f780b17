"""What the service says about a card: the answer of ``POST /classify``, of each card of ``/classify/batch``, and
the row of the batch scorer's predictions CSV, all built from one :func:`answer`.

A field every answer gains goes into :func:`answer` (and, as a column, into :func:`csv_header` /
:func:`csv_row`), so the HTTP API, the web page and the CSV cannot drift apart. Which answers a person should
look at first is :func:`needs_review` (one rule for the batch summary and the page).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np

from serving.routing import CardInput
from shared.cards import checked_card_arrays, decode_card_png, read_card_csv
from shared.preprocess import card_ink, to_grey_png, to_model_input

if TYPE_CHECKING:  # annotations only: this module needs no Paddle
    from serving.predictor import Predictor

PROB_FORMAT = ".8f"  # probabilities and confidence in the predictions CSV
# Answers less sure than this are counted for a person to check (batch summary, web page). Documented in
# docs/USER_GUIDE.md; the batch scorer's --low-confidence overrides it.
LOW_CONFIDENCE = 0.5
PLOT_POINTS = 1000  # at most this many samples of a CSV card go to the web page's plot


def answer(predictor: Predictor, probs: np.ndarray, top_k: int = 0) -> dict[str, Any]:
    """The JSON-ready answer for one card from the model that read it.

    Args:
        predictor: the model that answered (labels and identity).
        probs: its probabilities for the card, in the order of ``predictor.codes``.
        top_k: add a ranked ``top_k`` list of this many labels (0: none).

    Returns:
        ``{"label", "name", "name_en", "confidence", "probabilities", ["top_k"], "model"}``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels, codes = predictor.labels, predictor.codes
    best = int(np.argmax(probs))
    label = labels[best]
    out: dict[str, Any] = {
        "label": label["code"],
        "name": label["name"],
        "name_en": label["name_en"],
        "confidence": float(probs[best]),
        "probabilities": {code: float(p) for code, p in zip(codes, probs)},
    }
    if top_k > 0:
        order = np.argsort(-probs, kind="stable")[:top_k]
        out["top_k"] = [
            {"label": codes[i], "name": labels[i]["name"], "name_en": labels[i]["name_en"],
             "probability": float(probs[i])}
            for i in order
        ]
    out["model"] = predictor.model_id
    return out


def needs_review(card_answer: dict[str, Any], threshold: float = LOW_CONFIDENCE) -> bool:
    """Whether a person should check this answer: its confidence is below ``threshold``.

    The one rule the batch summary counts and the web page marks by.
    """
    return card_answer["confidence"] < threshold


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


def csv_header(codes: Sequence[str]) -> list[str]:
    """``id,label,name,confidence,model,model_version,input,A01,...,A12,error``."""
    return ["id", "label", "name", "confidence", "model", "model_version", "input", *codes, "error"]


def csv_row(card_id: str, codes: Sequence[str], card_answer: dict[str, Any] | None, error: str = "",
            used: str = "") -> list[str]:
    """One predictions-CSV row: the card's :func:`answer`, or empty prediction columns and its error.

    Args:
        card_id: the card's id (file stem).
        codes: the label codes, in column order.
        card_answer: the card's answer, None for a card that could not be read.
        error: why the card could not be read.
        used: what the model read (``png``, ``csv`` or ``pair``).
    """
    if card_answer is None:
        return [card_id, "", "", "", "", "", used, *([""] * len(codes)), error]
    probabilities = card_answer["probabilities"]
    model = card_answer["model"]
    return [card_id, card_answer["label"], card_answer["name"], format(card_answer["confidence"], PROB_FORMAT),
            model["kind"], f"{model['name']} {model['version']}", used,
            *(format(probabilities[code], PROB_FORMAT) for code in codes), ""]


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


def grey_png(image: np.ndarray) -> bytes:
    """Encode a ``uint8 [H, W]`` image as an 8-bit grey PNG."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image, dtype=np.uint8))
    if not ok:  # pragma: no cover - cv2 fails here only on impossible images
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def outline_png(ink: np.ndarray) -> bytes:
    """The card outline as dark ink on white (the competition PNGs hold it in alpha only)."""
    return grey_png(255 - np.asarray(ink, dtype=np.uint8))
