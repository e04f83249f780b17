"""The series preprocessing: one stroke of raw position/load samples -> ``float32 [C, L]`` model input.

The image path loses what the raw samples carry (timing along the stroke, ripple phase, absolute
load ratios). This path keeps them, normalised so that stroke length and load scale do not dominate:

    channel 0  position, scaled to [0, 1] over the stroke
    channel 1  load, scaled to [0, 1] over the stroke
    channel 2  d position / d sample, scaled by its largest magnitude
    channel 3  d load / d sample, scaled by its largest magnitude
    channel 4  min load / max load (the fluid-load share of the card), constant along the stroke

The stroke is rotated to start at the bottom of the stroke, oriented upstroke first, and resampled
periodically to ``length`` points in sample (time) order. Like :mod:`shared.preprocess`, training and
serving both import this one function.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shared.cards import Card, checked_card_arrays, read_card_csv

SERIES_VERSION = "series-v1"
SERIES_CHANNELS = 5


@dataclass(frozen=True)
class SeriesConfig:
    """How a stroke becomes series model input. Recorded in every exported series/dual model."""

    length: int = 256

    def __post_init__(self) -> None:
        if not 32 <= self.length <= 4096:
            raise ValueError(f"series length {self.length} is outside 32..4096")

    @property
    def version(self) -> str:
        """The version string of this preprocessing's output."""
        return SERIES_VERSION

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of one model input: ``(channels, length)``."""
        return (SERIES_CHANNELS, self.length)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, including the version."""
        return {**asdict(self), "channels": SERIES_CHANNELS, "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeriesConfig":
        """Rebuild a config from ``meta.json``.

        Raises:
            ValueError: a version or channel count this code does not produce.
        """
        config = cls(length=int(data.get("length", 256)))
        if data.get("version", SERIES_VERSION) != SERIES_VERSION:
            raise ValueError(f"series preprocessing version {data.get('version')!r} is not supported "
                             f"(this code produces {SERIES_VERSION!r})")
        if int(data.get("channels", SERIES_CHANNELS)) != SERIES_CHANNELS:
            raise ValueError(f"series input with {data.get('channels')} channels is not supported")
        return config


DEFAULT_SERIES_CONFIG = SeriesConfig()


def _orient(position: np.ndarray, load: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the closed stroke to start at its lowest position, running forward in time.

    A pump does positive work, so in time order the card is traversed clockwise (high load going
    up, low load coming down). A series stored backwards (counter-clockwise) is reversed.
    """
    signed_area = 0.5 * float(np.sum(position * np.roll(load, -1) - np.roll(position, -1) * load))
    if signed_area > 0:
        position, load = position[::-1], load[::-1]
    start = int(np.argmin(position))
    return np.roll(position, -start), np.roll(load, -start)


def _resample(values: np.ndarray, length: int) -> np.ndarray:
    """Periodic linear resampling of a closed stroke to ``length`` points."""
    n = len(values)
    source = np.arange(n + 1, dtype=np.float64)
    target = np.linspace(0.0, n, length, endpoint=False)
    return np.interp(target, source, np.append(values, values[0]))


def periodic_derivative(values: np.ndarray) -> np.ndarray:
    """Derivative per sample of closed strokes (last axis, any leading axes), scaled by its largest magnitude.

    The derivative channels of the series input; training's augmentation (``training.series_augment``)
    recomputes them with this same function after varying a stroke.
    """
    grad = np.gradient(np.concatenate([values, values[..., :1]], axis=-1), axis=-1)[..., :-1]
    peak = np.abs(grad).max(axis=-1, keepdims=True)
    return np.divide(grad, peak, out=np.zeros_like(grad), where=peak > 0)


def preprocess_series(card: Card, config: SeriesConfig = DEFAULT_SERIES_CONFIG) -> np.ndarray:
    """One stroke -> series model input ``float32 [5, length]``.

    Raises:
        CardError: too few points, non-finite values, or no extent in position or load.
    """
    position, load = checked_card_arrays(card.position, card.load)
    p_span, f_span = np.ptp(position), np.ptp(load)
    position, load = _orient(position, load)
    p = _resample((position - position.min()) / p_span, config.length)
    f = _resample((load - load.min()) / f_span, config.length)
    dp, df = periodic_derivative(p), periodic_derivative(f)
    f_max = float(np.max(np.abs(load)))
    ratio = float(np.clip(load.min() / f_max, -1.0, 1.0)) if f_max > 0 else 0.0
    return np.stack([p, f, dp, df, np.full(config.length, ratio)]).astype(np.float32)


def preprocess_series_csv(source: bytes | str | os.PathLike, config: SeriesConfig = DEFAULT_SERIES_CONFIG) -> np.ndarray:
    """Raw-data CSV (bytes or path) -> series model input ``float32 [5, length]``.

    Raises:
        CardError: the CSV is not a usable card.
    """
    return preprocess_series(read_card_csv(source), config)
