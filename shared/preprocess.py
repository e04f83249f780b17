"""The one preprocessing path: card outline -> filled card -> model input ``float32 [1, 190, 400]``.

Training and serving both call these functions, so the two can never drift. Augmentation is
training-only and happens on the outline mask *before* :func:`preprocess_ink`.

Methods:
    default  Fill the region the outline encloses (robust to concave and thin cards, self-touching
             outlines and small gaps), crop to the card and rescale it to the input size, so margins,
             scaling and image size of the renderer do not matter.
    legacy   The original notebook's fill, bit for bit: the alpha pixels equal to 255, in
             ``numpy.argwhere`` order, swapped to (x, y) and filled as one polygon with
             ``cv2.fillPoly`` (4-connected lines) on the alpha image, divided by 255.

CLI (what the model sees)::

    python -m shared.preprocess CARD.png [--method default|legacy] --out FILLED.png
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.atomic import atomic_write_bytes
from shared.cards import (
    CARD_HEIGHT,
    CARD_WIDTH,
    Card,
    CardError,
    decode_card_png,
    ink_binary,
    read_card_csv,
    render_card_ink,
)

# Version strings recorded in exported models. Bump one whenever its method's output changes.
METHOD_VERSIONS = {"default": "fill-v1", "legacy": "legacy-v1"}

# Closing kernels tried in turn until the outline encloses an area (closes gaps of about k - 1 px).
_CLOSING_SIZES = (3, 7, 15, 31)
# Blank border kept around the rescaled card in the default method.
_PAD = 2
_OUTPUT_LINE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


@dataclass(frozen=True)
class PreprocessConfig:
    """How a card becomes model input. Recorded in every exported model's ``meta.json``."""

    method: str = "default"
    height: int = CARD_HEIGHT
    width: int = CARD_WIDTH

    def __post_init__(self) -> None:
        if self.method not in METHOD_VERSIONS:
            raise ValueError(
                f"unknown preprocessing method {self.method!r}; expected one of {', '.join(METHOD_VERSIONS)}"
            )
        if self.method == "legacy" and (self.height, self.width) != (CARD_HEIGHT, CARD_WIDTH):
            raise ValueError("the legacy method works on 190 x 400 cards only")

    @property
    def version(self) -> str:
        """The version string of this method's output."""
        return METHOD_VERSIONS[self.method]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one model input: ``(1, height, width)``."""
        return (1, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, including the version."""
        return {**asdict(self), "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        """Rebuild a config from ``meta.json``.

        Raises:
            ValueError: unknown method, or a version this code does not produce.
        """
        config = cls(
            method=data.get("method", "default"),
            height=int(data.get("height", CARD_HEIGHT)),
            width=int(data.get("width", CARD_WIDTH)),
        )
        version = data.get("version", config.version)
        if version != config.version:
            raise ValueError(
                f"preprocessing {config.method!r} version {version!r} is not supported by this code "
                f"(it produces {config.version!r})"
            )
        return config


DEFAULT_CONFIG = PreprocessConfig()


def _fill_enclosed(binary: np.ndarray, closing: int) -> np.ndarray:
    """Close gaps with a ``closing`` kernel, fill everything not reachable from the border, undo the dilation."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (closing, closing))
    grown = cv2.dilate(binary, kernel)
    # Pad so the outside is one connected region even when the card touches the image edge.
    padded = cv2.copyMakeBorder(grown, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    outside = padded.copy()
    mask = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(outside, mask, (0, 0), 255)
    filled = padded | cv2.bitwise_not(outside)
    filled = filled[1:-1, 1:-1]
    return cv2.erode(filled, kernel) | binary


def fill_outline(ink: np.ndarray) -> np.ndarray:
    """Fill the region enclosed by a card outline; returns a ``uint8`` 0/255 mask of the ink's size.

    A closed outline is filled with a small closing kernel; if that encloses nothing (the outline
    has a gap), larger kernels are tried. A card that encloses no area at any kernel (a gas-lock
    sliver) is returned as its closed outline.
    """
    return _fill_binary(ink_binary(ink))


@dataclass(frozen=True, eq=False)
class TracedOutline:
    """What every reader of a card picture takes from its outline mask, computed once per card.

    The model's fill (:func:`filled_card`), the structural check (:func:`shared.card_check.check_outline`)
    and the measures (:func:`shared.measures.measure_outline`) each need the thresholded line, the filled
    card and the line width, and two of them the filled card peeled to the line's centre; a service request
    used to compute each of them three times. The arrays are read-only: a reader that changed them would
    change what the others see.

    Attributes:
        binary: the outline, 0/255 ``uint8`` (:func:`shared.cards.ink_binary`).
        filled: the filled card at the ink's size, 0/255 ``uint8`` (:func:`fill_outline`).
        line_width: the drawn line's width in pixels (:func:`estimate_line_width`).
    """

    binary: np.ndarray
    filled: np.ndarray
    line_width: float

    @cached_property
    def centre(self) -> np.ndarray:
        """The filled card peeled to the drawn line's centre (:func:`_centre_region`), read-only; computed once."""
        centre = _centre_region(self.filled, self.line_width)
        centre.setflags(write=False)
        return centre


def trace_outline(ink: np.ndarray) -> TracedOutline:
    """An outline mask (:func:`shared.cards.decode_card_png`) -> its :class:`TracedOutline`."""
    binary = ink_binary(np.asarray(ink, np.uint8))
    filled = _fill_binary(binary)
    line_width = estimate_line_width(binary)
    binary.setflags(write=False)
    filled.setflags(write=False)
    return TracedOutline(binary, filled, line_width)


def _fill_binary(binary: np.ndarray) -> np.ndarray:
    line_area = max(1, cv2.countNonZero(binary))
    first = None
    for size in _CLOSING_SIZES:
        filled = _fill_enclosed(binary, size)
        if first is None:
            first = filled
        # Enclosed interior clearly larger than the line itself: the outline was closed.
        if cv2.countNonZero(filled) > 1.5 * line_area:
            return filled
    return first


def estimate_line_width(binary: np.ndarray) -> float:
    """Estimate the drawn line width in pixels: a band of length L and width w has area L*w and perimeter ~2L."""
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    return 2.0 * cv2.countNonZero(binary) / max(perimeter, 1.0)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_SQUARE = np.ones((3, 3), np.uint8)


def _centre_region(filled: np.ndarray, line_width: float) -> np.ndarray:
    """Peel half a line width off the filled card, so its edge sits on the line's centre.

    That makes thick- and thin-line renderings of one card the same shape; a card whose
    centre region vanishes (never seen in practice) keeps its full fill.

    Keeps the pixels whose L2 distance to the background is at least ``line_width / 2 - 0.5``.
    Distances come in steps (the 5 x 5 chamfer mask's 1 next to the background, 1.4 diagonally, then
    2, 2.1969 and more), so the common thresholds have exact shortcuts: below 1 every pixel stays;
    below 1.4 only the pixels 4-adjacent to the background go (an erosion with a cross); below 2 the
    pixels 8-adjacent to it go (an erosion with a 3 x 3 square) -- the lines of the competition cards,
    about 3.7-4.4 px wide, land there. Only thicker lines pay for the distance transform. The shortcuts
    give the same bits as the transform (tested).
    """
    threshold = max(line_width / 2.0 - 0.5, 0.5) - 1e-4  # keep distance > threshold, i.e. ">=" the target
    if threshold < 1.0:
        return filled
    if threshold < 1.4:
        centre = cv2.erode(filled, _CROSS)
    elif threshold < 2.0:
        centre = cv2.erode(filled, _SQUARE)
    else:
        distance = cv2.distanceTransform(filled, cv2.DIST_L2, 5)
        centre = cv2.threshold(distance, threshold, 255, cv2.THRESH_BINARY)[1].astype(np.uint8)
    return centre if cv2.countNonZero(centre) else filled


def _centre_region_reference(filled: np.ndarray, line_width: float) -> np.ndarray:
    """The distance-transform definition of :func:`_centre_region`, for the equivalence test."""
    threshold = max(line_width / 2.0 - 0.5, 0.5) - 1e-4
    distance = cv2.distanceTransform(filled, cv2.DIST_L2, 5)
    centre = cv2.threshold(distance, threshold, 255, cv2.THRESH_BINARY)[1].astype(np.uint8)
    return centre if cv2.countNonZero(centre) else filled


def _crop_and_rescale(filled: np.ndarray, height: int, width: int) -> np.ndarray:
    x, y, w, h = cv2.boundingRect(filled)
    if w == 0 or h == 0:
        raise CardError("image has no card outline in it")
    crop = filled[y : y + h, x : x + w]
    inner = cv2.resize(crop, (width - 2 * _PAD, height - 2 * _PAD), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width), np.uint8)
    out[_PAD : height - _PAD, _PAD : width - _PAD] = inner
    return out


def _legacy_fill(ink: np.ndarray) -> np.ndarray:
    alpha = ink
    if alpha.shape != (CARD_HEIGHT, CARD_WIDTH):
        alpha = cv2.resize(alpha, (CARD_WIDTH, CARD_HEIGHT), interpolation=cv2.INTER_AREA)
    alpha = alpha.copy()
    points = np.argwhere(alpha == 255)[:, ::-1].astype(np.int32)
    if points.shape[0] < 3:
        raise CardError("image has no fully opaque outline pixels for the legacy fill")
    cv2.fillPoly(alpha, [points], 255, lineType=cv2.LINE_4)
    return alpha


def filled_card(ink: np.ndarray, config: PreprocessConfig = DEFAULT_CONFIG,
                traced: TracedOutline | None = None) -> np.ndarray:
    """The filled card the model sees, as ``uint8 [height, width]`` (model input x 255, before scaling).

    Args:
        ink: the outline mask.
        config: the model's preprocessing.
        traced: ``trace_outline(ink)`` when the caller has it already (the same bits, one fill less).
    """
    if config.method == "legacy":
        return _legacy_fill(ink)
    traced = traced if traced is not None else trace_outline(ink)
    centre = traced.centre
    # A fixed 3 x 3 line in output space replaces the renderer's own line width.
    return cv2.dilate(_crop_and_rescale(centre, config.height, config.width), _OUTPUT_LINE)


def to_model_input(filled: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Filled card ``uint8 [H, W]`` (from :func:`filled_card`) -> model input ``float32 [1, H, W]`` in [0, 1].

    Split from :func:`preprocess_ink` so a batch scorer can move the 4x smaller ``uint8`` card between
    processes and scale it where it is batched; the result is the same bits either way.

    Args:
        filled: the filled card.
        out: optional ``float32 [1, H, W]`` to write into (a row of a batch: no temporary, no copy);
            the same bits as without it.

    Returns:
        the model input (``out`` when given).
    """
    if out is None:
        return (filled.astype(np.float32) / np.float32(255.0))[None]
    np.divide(filled, np.float32(255.0), out=out[0], dtype=np.float32)
    return out


def preprocess_ink(ink: np.ndarray, config: PreprocessConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Outline mask (from :func:`shared.cards.decode_card_png`) -> model input ``float32 [1, H, W]`` in [0, 1]."""
    return to_model_input(filled_card(ink, config))


def filled_card_bytes(data: bytes, kind: str, config: PreprocessConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Card file bytes (``kind`` ``"png"`` or ``"csv"``) -> filled card ``uint8 [H, W]``.

    ``to_model_input(filled_card_bytes(data, kind))`` equals :func:`preprocess_png` /
    :func:`preprocess_csv` of the same bytes. Needs only numpy and cv2 (no Paddle), so it is what
    the batch scorer's worker processes run.

    Raises:
        CardError: the file is not a usable card, or ``kind`` is neither ``png`` nor ``csv``.
    """
    if kind == "png":
        return filled_card(decode_card_png(data), config)
    if kind == "csv":
        return filled_card(card_ink(read_card_csv(data)), config)
    raise CardError(f"unsupported card type {kind!r}; expected png or csv")


def preprocess_png(source: bytes | str | os.PathLike, config: PreprocessConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Card PNG (bytes or path) -> model input ``float32 [1, H, W]``.

    Raises:
        CardError: the PNG is not a usable card.
    """
    return preprocess_ink(decode_card_png(source), config)


def card_ink(card: Card) -> np.ndarray:
    """Render a numeric card to the competition outline, exactly as a competition PNG would hold it."""
    return render_card_ink(card.position, card.load)


def preprocess_card(card: Card, config: PreprocessConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Numeric card -> rendered competition outline -> the same tail as a PNG."""
    return preprocess_ink(card_ink(card), config)


def preprocess_csv(source: bytes | str | os.PathLike, config: PreprocessConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Raw-data CSV (bytes or path) -> model input, through the renderer and the PNG path.

    Raises:
        CardError: the CSV is not a usable card.
    """
    return preprocess_card(read_card_csv(source), config)


def preprocess_file(path: str | os.PathLike, config: PreprocessConfig = DEFAULT_CONFIG) -> np.ndarray:
    """A ``.png`` or ``.csv`` card file -> model input.

    Raises:
        CardError: unknown extension or an unusable card.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return preprocess_png(path, config)
    if suffix == ".csv":
        return preprocess_csv(path, config)
    raise CardError(f"{Path(path).name}: unsupported card file type {suffix or '(none)'}; expected .png or .csv")


def to_grey_png(model_input: np.ndarray) -> bytes:
    """Encode a model input ``[1, H, W]`` in [0, 1] as an 8-bit grey PNG (input x 255)."""
    grey = np.clip(np.rint(model_input[0] * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", grey)
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def main(argv: list[str] | None = None) -> int:
    """``python -m shared.preprocess CARD.png [--method default|legacy] --out FILLED.png``."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.preprocess", description="Write the model input of a card as an 8-bit grey PNG."
    )
    parser.add_argument("card", help="card PNG or CSV")
    parser.add_argument("--method", choices=sorted(METHOD_VERSIONS), default="default")
    parser.add_argument("--out", required=True, help="output PNG (grey, model input x 255)")
    args = parser.parse_args(argv)
    try:
        model_input = preprocess_file(args.card, PreprocessConfig(method=args.method))
    except CardError as exc:
        print(f"error: {args.card}: {exc}", file=sys.stderr)
        return 2
    atomic_write_bytes(args.out, to_grey_png(model_input))
    print(f"wrote {args.out} ({model_input.shape[2]} x {model_input.shape[1]}, method {args.method})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
