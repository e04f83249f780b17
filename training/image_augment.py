"""Training-only variation of the image input (``--augment``), applied *before* the shared preprocessing.

:func:`augment_ink` jitters a card's outline mask the way other renderers and recorders differ; the
result goes through the same deterministic tail as every card (:func:`shared.preprocess.preprocess_ink`),
so training never sees an input that the shared preprocessing could not have produced. Inference never
augments. :func:`augmented_inputs` also re-draws cards from their series first when asked
(``--render-augment``, :mod:`training.render_augment`). The series input has its own,
:mod:`training.series_augment`.
"""

from __future__ import annotations

import cv2
import numpy as np

from shared.cards import CardError
from shared.preprocess import PreprocessConfig, preprocess_ink
from training.data import CardSet
from training.render_augment import rerender_ink


def augment_ink(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jitter an outline mask the way other renderers and recorders differ.

    Small shift and per-axis scale, line width (dilate/erode), pixel noise. The result then goes through
    :func:`shared.preprocess.preprocess_ink` like any card.
    """
    h, w = ink.shape
    sx, sy = rng.uniform(0.9, 1.05, size=2)
    tx, ty = rng.uniform(-4, 4, size=2)
    m = np.float32([[sx, 0, (1 - sx) * w / 2 + tx], [0, sy, (1 - sy) * h / 2 + ty]])
    out = cv2.warpAffine(ink, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    r = rng.random()
    if r < 0.25:
        out = cv2.dilate(out, np.ones((2, 2), np.uint8))
    elif r < 0.4:
        out = cv2.erode(out, np.ones((2, 1), np.uint8)) if out.max() > 0 else out
    if rng.random() < 0.5:
        noise = rng.random(out.shape) < 0.002
        out = out.copy()
        out[noise] = 255
    return out


def augmented_inputs(cs: CardSet, idx: np.ndarray, rng: np.random.Generator, config: PreprocessConfig,
                     jitter: bool = True, rerender: bool = False) -> np.ndarray:
    """Model inputs ``float32 [n, 1, H, W]`` of cards ``idx`` after augmentation and the shared tail.

    Args:
        jitter: jitter each outline (:func:`augment_ink`, ``--augment``; needs ``cs.ink``).
        rerender: draw each card that has a stroke in ``cs.strokes`` anew first
            (:func:`training.render_augment.rerender_ink`, ``--render-augment``); the others keep their outline.

    A card whose variation leaves no usable outline (pushed off the canvas) gets its clean input.
    """
    out = np.empty((len(idx), 1, config.height, config.width), np.float32)
    for k, i in enumerate(idx):
        stroke = cs.strokes[i] if rerender and cs.strokes is not None else None
        try:
            if stroke is not None:
                ink = rerender_ink(*stroke, rng, config.height, config.width)
            elif cs.ink is not None:
                ink = cs.ink[i]
            else:  # nothing to vary: no stroke and no outline kept
                out[k] = cs.model_input([i])[0]
                continue
            out[k] = preprocess_ink(augment_ink(ink, rng) if jitter else ink, config)
        except CardError:
            out[k] = cs.model_input([i])[0]
    return out
