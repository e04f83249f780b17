"""What a network reads for the cards of a :class:`training.data.CardSet`: one class per input kind, one interface.

=========  ==========================================  =============================================
kind       arrays (named as the exported inputs)       training-only variation (``rng`` given)
=========  ==========================================  =============================================
image      ``image`` ``float32 [n, 1, 190, 400]``      re-drawing, outline jitter (:mod:`training.image_augment`)
series     ``series`` ``float32 [n, 5, L]``            shift/warp/noise, :mod:`training.series_augment`
dual       ``image`` then ``series``                   both, in that order, from the one ``rng``
=========  ==========================================  =============================================

:func:`make_inputs` builds the inputs of a kind; :func:`training.train.fit` (and so late fusion) and the
evaluation of an exported model (:mod:`training.evaluate_exported`) read every batch through them.
When made with a network's parameter-free stem (``training.models.split_stem``), the image arrays are
kept after the stem (``cardnet``'s 2 x 2 pool, computed once per card), which is what its body trains on.
"""

from __future__ import annotations

import abc

import numpy as np
import paddle

from shared.meta import MODEL_KINDS
from shared.preprocess import PreprocessConfig
from training import image_augment, series_augment
from training.data import CardSet


class ModelInputs(abc.ABC):
    """The inputs of one kind (``image``, ``series``, ``dual``) for the cards of a card set, by card index."""

    kind: str

    @abc.abstractmethod
    def arrays(self, idx: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """Named arrays of cards ``idx``, varied by the training-only augmentation when ``rng`` is given
        and the inputs were made with it on (evaluation passes no ``rng``)."""

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None = None) -> paddle.Tensor | list[paddle.Tensor]:
        """:meth:`arrays` as tensors, as the network's body takes them: one tensor, or ``[image, series]``."""
        tensors = [paddle.to_tensor(a) for a in self.arrays(idx, rng).values()]
        return tensors[0] if len(tensors) == 1 else tensors


class ImageInputs(ModelInputs):
    """The filled cards; after the network's stem when one is given (applied once to every card and kept).

    Without a stem (the notebook networks) batches are converted from the ``uint8`` cache on the fly.
    Augmented batches are re-filled from the outline masks through the cards' own preprocessing.

    Raises:
        ValueError: ``augment`` without the cards' outline masks (``load_data(keep_ink=True)``).
    """

    kind = "image"

    def __init__(self, cards: CardSet, stem=None, augment: bool = False, chunk: int = 256, rerender: bool = False):
        if augment and cards.ink is None:
            raise ValueError("image augmentation needs the cards' outline masks (load_data(..., keep_ink=True))")
        if rerender and cards.strokes is None:
            raise ValueError("renderer augmentation needs the cards' strokes (training.series_data.load_strokes)")
        self.cards = cards
        self.stem = stem
        self.augment = augment
        self.rerender = rerender
        self.config = PreprocessConfig.from_dict(cards.preprocess)
        self.pre = None
        if stem is not None:
            pooled = []
            with paddle.no_grad():
                for s in range(0, len(cards), chunk):
                    x = paddle.to_tensor(cards.model_input(np.arange(s, min(s + chunk, len(cards)))))
                    pooled.append(stem(x).numpy())
            self.pre = np.concatenate(pooled) if pooled else None

    def arrays(self, idx, rng=None) -> dict[str, np.ndarray]:
        if rng is not None and (self.augment or self.rerender):
            x = image_augment.augmented_inputs(self.cards, idx, rng, self.config, jitter=self.augment,
                                               rerender=self.rerender)
            if self.stem is not None:
                with paddle.no_grad():
                    x = self.stem(paddle.to_tensor(x)).numpy()
            return {"image": x}
        if self.pre is not None:
            return {"image": self.pre[idx]}
        return {"image": self.cards.model_input(idx)}


class SeriesInputs(ModelInputs):
    """The preprocessed series ``float32 [N, 5, L]`` of every card (``training.series_data``)."""

    kind = "series"

    def __init__(self, series: np.ndarray, augment: bool = False):
        self.series = series
        self.augment = augment

    def arrays(self, idx, rng=None) -> dict[str, np.ndarray]:
        if rng is not None and self.augment:
            return {"series": series_augment.augment_series(self.series[idx], rng)}
        return {"series": self.series[idx]}


class DualInputs(ModelInputs):
    """The image and the series of each card, for dual networks (image first, as the exported inputs)."""

    kind = "dual"

    def __init__(self, image: ImageInputs, series: SeriesInputs):
        self.image = image
        self.series = series

    def arrays(self, idx, rng=None) -> dict[str, np.ndarray]:
        return {**self.image.arrays(idx, rng), **self.series.arrays(idx, rng)}


def make_inputs(kind: str, cards: CardSet, series: np.ndarray | None = None, stem=None, augment_image: bool = False,
                augment_series: bool = False, rerender_image: bool = False) -> ModelInputs:
    """The inputs of a ``kind`` network for ``cards``.

    Args:
        kind: ``image``, ``series`` or ``dual`` (:func:`training.models.network_kind`).
        cards: the card set (its images, outline masks and preprocessing).
        series: ``float32 [N, 5, L]`` aligned with ``cards``, for ``series`` and ``dual``.
        stem: the network's parameter-free stem (``training.models.split_stem``), applied once to the images.
        augment_image / augment_series: vary training batches (``--augment`` / ``--series-augment``).
        rerender_image: re-draw the cards that have a stroke before the image tail (``--render-augment``).

    Raises:
        ValueError: an unknown kind, or ``series`` missing or not aligned with ``cards``.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown input kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    if kind != "image" and (series is None or len(series) != len(cards)):
        raise ValueError(f"{kind} inputs need one series per card ({0 if series is None else len(series)} "
                         f"for {len(cards)} cards)")
    if kind == "series":
        return SeriesInputs(series, augment_series)
    image = ImageInputs(cards, stem, augment_image, rerender=rerender_image)
    return image if kind == "image" else DualInputs(image, SeriesInputs(series, augment_series))
