"""Where the model looked: occlusion maps of one card's answer (``POST /classify?explain=1``).

Occlusion (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014): hide one part
of the input, ask the model again, and score the part by how much the answered class's probability drops.
Model-agnostic (it needs only the network's output, so it works for every exported model kind and both
output formats) and honest about what it measures: what the answer depends on, not what the network
"attends" to.

* Image input (image and dual models): a mid-grey patch (0.5: neither card nor background, so the empty
  corner a fluid pound leaves counts as much as the filled region) of :data:`PATCH` pixels slides over the
  filled card the model read in steps of half a patch: :data:`PATCH_ROWS` x :data:`PATCH_COLS` copies.
* Series input (series and dual models): a window of :data:`WINDOW` samples of the load channel is replaced by
  the straight line between its ends (its derivative channel recomputed with :func:`shared.series.periodic_derivative`),
  sliding round the closed stroke in steps of half a window: :data:`WINDOWS` copies.

:func:`occlusion_plan` makes the copies; the app sends the card and all its copies through the predictor in
**one** request (:meth:`serving.model_set.ModelSet.predict_cards`: the batcher owns the predictors), so an
explanation costs one call of about a hundred cards, and nothing at all when it is not asked for.
:func:`explanation` turns the answers into heat maps: PNG data URIs the web page overlays -- the image map on
the filled card the model read (same frame as ``input_png``), the series map on the card's plot (the frame of
the stroke's bounding box: position and load from their minimum to their maximum).

Paddle-free (numpy and OpenCV), like :mod:`serving.answers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from serving.answers import encode_png, png_data_url
from serving.routing import CardInput
from shared.series import periodic_derivative

PATCH = (48, 50)  # rows, columns of the grey patch over the 190 x 400 filled card
GREY = 128  # the patch: mid-grey in the uint8 filled card (0.5 in the model input)
WINDOW = 16  # samples of the 256-sample load channel hidden at a time
LOAD, LOAD_RATE = 1, 3  # series channels: load and its derivative (shared.series)
MAP_SIZE = (190, 400)  # height, width of the series heat map (the competition card's)
LINE = 5  # px, the series heat map's line


def _starts(size: int, patch: int) -> list[int]:
    """Patch starts in steps of half a patch, the last one flush with the far edge."""
    step = max(1, patch // 2)
    starts = list(range(0, max(size - patch, 0) + 1, step))
    if starts[-1] != max(size - patch, 0):
        starts.append(size - patch)
    return starts


@dataclass
class OcclusionPlan:
    """One card's occluded copies and what each one hides.

    Attributes:
        base: the card's own input (row 0 of the prediction).
        inputs: the occluded copies, image ones first (rows 1 ...).
        boxes: ``(top, bottom, left, right)`` of each image copy's patch.
        windows: the sample indices each series copy hides.
    """

    base: CardInput
    inputs: list[CardInput] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    windows: list[np.ndarray] = field(default_factory=list)


def occlusion_plan(card_input: CardInput) -> OcclusionPlan:
    """The occluded copies of one card's model input (image, series or both, as the model reads).

    Args:
        card_input: the card's input (:data:`serving.routing.CardInput`: ``image`` uint8 [H, W] filled card,
            ``series`` float32 [5, L]).

    Returns:
        :class:`OcclusionPlan`; predict ``[plan.base, *plan.inputs]`` in one call.
    """
    plan = OcclusionPlan(base=card_input)
    if "image" in card_input:
        filled = card_input["image"]
        height, width = filled.shape
        for top in _starts(height, PATCH[0]):
            for left in _starts(width, PATCH[1]):
                copy = filled.copy()
                copy[top:top + PATCH[0], left:left + PATCH[1]] = GREY
                plan.inputs.append({**card_input, "image": copy})
                plan.boxes.append((top, top + PATCH[0], left, left + PATCH[1]))
    if "series" in card_input:
        series = card_input["series"]
        length = series.shape[1]
        ramp = np.arange(1, WINDOW + 1) / (WINDOW + 1)
        for start in range(0, length, WINDOW // 2):
            hidden = (start + np.arange(WINDOW)) % length
            load = series[LOAD].astype(np.float64)
            before, after = load[(start - 1) % length], load[(start + WINDOW) % length]
            load[hidden] = before + (after - before) * ramp
            copy = series.copy()
            copy[LOAD] = load
            copy[LOAD_RATE] = periodic_derivative(load)
            plan.inputs.append({**card_input, "series": copy.astype(np.float32)})
            plan.windows.append(hidden)
    return plan


def explanation(plan: OcclusionPlan, probabilities: np.ndarray, target: int, code: str) -> dict[str, Any]:
    """Heat maps of what drove one answer, from the probabilities of the card and its occluded copies.

    Args:
        plan: the card's :class:`OcclusionPlan`.
        probabilities: ``[1 + len(plan.inputs), classes]`` calibrated probabilities, the card's own first.
        target: the answered class's index.
        code: its label code.

    Returns:
        ``{"method": "occlusion", "label", "probability", "copies", ["image"], ["series"]}``; ``image``:
        ``heatmap_png`` (RGBA data URI, the frame of ``input_png``), ``patch``, ``grid`` (the probability drop
        of each patch position, rows x columns), ``max_drop``; ``series``: ``heatmap_png`` (the stroke in its
        bounding box), ``window``, ``weights`` (one per input sample, 0-1), ``max_drop``. Maps are scaled to
        their largest drop (``max_drop`` says how large it is: near 0, no one part mattered).
    """
    base = float(probabilities[0, target])
    drops = np.maximum(base - probabilities[1:, target], 0.0)
    out: dict[str, Any] = {"method": "occlusion", "label": code, "probability": base, "copies": len(plan.inputs)}
    n_image = len(plan.boxes)
    if n_image:
        out["image"] = _image_map(plan, drops[:n_image])
    if plan.windows:
        out["series"] = _series_map(plan, drops[n_image:])
    return out


def _image_map(plan: OcclusionPlan, drops: np.ndarray) -> dict[str, Any]:
    height, width = plan.base["image"].shape
    total, count = np.zeros((height, width)), np.zeros((height, width))
    for (top, bottom, left, right), drop in zip(plan.boxes, drops):
        total[top:bottom, left:right] += drop
        count[top:bottom, left:right] += 1
    heat = total / np.maximum(count, 1)
    peak = float(drops.max(initial=0.0))
    rows = sorted({b[0] for b in plan.boxes})
    grid = drops.reshape(len(rows), -1)
    return {"heatmap_png": png_data_url(encode_png(_colours(heat / peak if peak > 0 else heat))), "frame": "input_png",
            "patch": list(PATCH), "grid": np.round(grid, 4).tolist(), "max_drop": peak}


def _series_map(plan: OcclusionPlan, drops: np.ndarray) -> dict[str, Any]:
    series = plan.base["series"]
    length = series.shape[1]
    total, count = np.zeros(length), np.zeros(length)
    for hidden, drop in zip(plan.windows, drops):
        total[hidden] += drop
        count[hidden] += 1
    weights = total / np.maximum(count, 1)
    peak = float(drops.max(initial=0.0))
    weights = weights / peak if peak > 0 else weights
    return {"heatmap_png": png_data_url(_stroke_png(series[0], series[LOAD], weights)), "frame": "card_box",
            "window": WINDOW, "weights": np.round(weights, 4).tolist(), "max_drop": peak}


def _colours(heat: np.ndarray) -> np.ndarray:
    """0-1 -> BGRA uint8: transparent at 0, through yellow to opaque red at 1."""
    h = np.clip(heat, 0.0, 1.0)
    bgra = np.zeros((*h.shape, 4), np.uint8)
    bgra[..., 2] = 255
    bgra[..., 1] = np.round(220 * (1.0 - h)).astype(np.uint8)
    bgra[..., 3] = np.round(170 * np.sqrt(h)).astype(np.uint8)  # sqrt: weak but real evidence stays visible
    return bgra


def _stroke_png(position: np.ndarray, load: np.ndarray, weights: np.ndarray) -> bytes:
    """The stroke drawn in its bounding box (position 0-1 left to right, load 0-1 bottom to top), each
    segment coloured by the weight of its samples; transparent elsewhere."""
    height, width = MAP_SIZE
    x = np.round(np.clip(position, 0, 1) * (width - 1)).astype(int)
    y = np.round((1.0 - np.clip(load, 0, 1)) * (height - 1)).astype(int)
    image = np.zeros((height, width, 4), np.uint8)
    order = np.argsort(weights, kind="stable")  # strongest segments drawn last, on top
    colours = _colours(weights)
    for i in order:
        j = (i + 1) % len(x)
        colour = tuple(int(c) for c in colours[i])
        if colour[3]:
            cv2.line(image, (int(x[i]), int(y[i])), (int(x[j]), int(y[j])), colour, LINE, cv2.LINE_AA)
    return encode_png(image)

