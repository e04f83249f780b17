"""What the service says about a card: the answer of ``POST /classify``, of each card of ``/classify/batch``, and
the row of the batch scorer's predictions CSV, all built from one :func:`answer`.

A field every answer gains goes into :func:`answer` (and, as a column, into :func:`csv_header` /
:func:`csv_row`), so the HTTP API and the CSV cannot drift apart.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np

from serving.routing import CardInput
from shared.cards import decode_card_png, read_card_csv
from shared.preprocess import card_ink, to_grey_png, to_model_input

if TYPE_CHECKING:  # annotations only: this module needs no Paddle
    from serving.predictor import Predictor

PROB_FORMAT = ".8f"  # probabilities and confidence in the predictions CSV


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


# ---------------------------------------------------------------------------------- the predictions CSV


def csv_header(codes: Sequence[str]) -> list[str]:
    """``id,label,name,confidence,A01,...,A12,error``."""
    return ["id", "label", "name", "confidence", *codes, "error"]


def csv_row(card_id: str, codes: Sequence[str], card_answer: dict[str, Any] | None, error: str = "") -> list[str]:
    """One predictions-CSV row: the card's :func:`answer`, or empty prediction columns and its error."""
    if card_answer is None:
        return [card_id, "", "", "", *([""] * len(codes)), error]
    probabilities = card_answer["probabilities"]
    return [card_id, card_answer["label"], card_answer["name"], format(card_answer["confidence"], PROB_FORMAT),
            *(format(probabilities[code], PROB_FORMAT) for code in codes), ""]


# ---------------------------------------------------------------------------------- pictures (?include_input=1)


def input_images(png: bytes | None, csv: bytes | None, card_input: CardInput) -> dict[str, str]:
    """The card's outline as the preprocessing sees it and, for a model with an image input, that input.

    Args:
        png, csv: the card's files; the outline is the PNG's, else the CSV's rendered.
        card_input: the card's model input.

    Returns:
        ``{"card_png": data URL[, "input_png": data URL]}``.

    Raises:
        CardError: the file is not a usable card.
    """
    ink = decode_card_png(png) if png is not None else card_ink(read_card_csv(csv))
    images = {"card_png": png_data_url(outline_png(ink))}
    if "image" in card_input:
        images["input_png"] = png_data_url(to_grey_png(to_model_input(card_input["image"])))
    return images


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
