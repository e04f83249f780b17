"""Training-only augmentation of preprocessed series (``--series-augment``, on by default for ``--input series|dual``).

Works on the shared preprocessing's output ``float32 [n, 5, L]`` (position, load, their scaled
derivatives, min/max load ratio; :mod:`shared.series`) and keeps its invariants: position and load in
[0, 1] over the stroke, derivatives scaled by their largest magnitude, the stroke starting near its
lowest position. What it varies is what differs between two recordings of the same pump condition:

* where the recorder put the first sample: the stroke starts at the lowest position, which on a
  flat-bottomed card is a few samples uncertain — a small circular shift;
* the crank speed profile (unit geometry, motor slip): a smooth monotone time warp;
* load-cell noise: a little Gaussian noise on the load, then rescaled to [0, 1].

Inference never augments; the derivative channels are recomputed exactly as the preprocessing does.
"""

from __future__ import annotations

import numpy as np

from shared.series import periodic_derivative

MAX_SHIFT = 3  # samples of 256 (~1 % of the stroke)
MAX_WARP = 0.03  # largest time displacement, as a share of the stroke
LOAD_NOISE = 0.01  # standard deviation, in units of the load range


def _warp(values: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Resample each closed stroke at ``t + displacement(t)`` (periodic linear interpolation)."""
    n, length = values.shape
    t = np.arange(length, dtype=np.float64)
    out = np.empty_like(values)
    for i in range(n):
        out[i] = np.interp(t + displacement[i], np.arange(length + 1), np.append(values[i], values[i, 0]),
                           period=length)
    return out


def augment_series(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly varied copy of ``batch`` (``float32 [n, 5, L]``); the input is not modified."""
    n, _, length = batch.shape
    position, load, ratio = batch[:, 0].astype(np.float64), batch[:, 1].astype(np.float64), batch[:, 4]
    # smooth monotone warp: one sine period with a random phase; |d displacement/dt| < 1 keeps it monotone
    t = np.arange(length) / length
    amplitude = rng.uniform(-MAX_WARP, MAX_WARP, (n, 1)) * length
    displacement = amplitude * np.sin(2 * np.pi * (t[None, :] + rng.uniform(0, 1, (n, 1))))
    displacement += rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, (n, 1))
    position, load = _warp(position, displacement), _warp(load, displacement)
    load = load + rng.normal(0.0, LOAD_NOISE, load.shape)
    span = np.ptp(load, axis=-1, keepdims=True)
    load = np.divide(load - load.min(axis=-1, keepdims=True), span, out=np.zeros_like(load), where=span > 0)
    out = np.stack([position, load, periodic_derivative(position), periodic_derivative(load), ratio], axis=1)
    return out.astype(np.float32)
