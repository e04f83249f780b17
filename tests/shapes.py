"""Simple parametric card shapes for foundation tests (no simulator needed): position (m), load (kN)."""

from __future__ import annotations

import numpy as np


def _stroke(n: int = 220) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return t, 1.5 * (1.0 - np.cos(t))  # 3 m stroke, bottom at t=0, upstroke first


def normal_card(n: int = 220) -> tuple[np.ndarray, np.ndarray]:
    """Parallelogram-like card with small ripples."""
    t, x = _stroke(n)
    up = t < np.pi
    load = np.where(up, 60.0, 35.0) + 2.0 * np.sin(9 * t)
    ramp = np.clip(x / 0.4, 0, 1)
    load = np.where(up, 35.0 + (60.0 - 35.0) * ramp, 60.0 - (60.0 - 35.0) * np.clip((3.0 - x) / 0.4, 0, 1))
    return x, load + 0.8 * np.sin(11 * t)


def fluid_pound_card(n: int = 220) -> tuple[np.ndarray, np.ndarray]:
    """Concave card: load stays high into the downstroke, then drops almost vertically."""
    t, x = _stroke(n)
    up = t < np.pi
    load_up = 35.0 + 25.0 * np.clip(x / 0.4, 0, 1)
    load_down = np.where(x > 1.2, 60.0, 35.0 + 25.0 * np.clip((x - 1.0) / 0.2, 0, 1))
    return x, np.where(up, load_up, load_down)


def gas_lock_card(n: int = 220) -> tuple[np.ndarray, np.ndarray]:
    """Thin sloped sliver with almost no area."""
    t, x = _stroke(n)
    return x, 40.0 + 4.0 * x + np.where(t < np.pi, 0.6, -0.6)


SHAPES = {"normal": normal_card, "fluid_pound": fluid_pound_card, "gas_lock": gas_lock_card}
