"""Polished-rod motion of a beam pumping unit.

Pure sinusoid x = S/2·(1 − cos θ) plus the second-order four-bar (crank/pitman) term
λ·sin²θ, which steepens the motion near the bottom as on a conventional unit, and a time warp
θ = 2π·φ − β·(1 − cos 2π·φ) that makes the upstroke and downstroke last differently (crank phase
offset of asymmetric units). φ is the stroke phase in [0, 1): φ = 0 is the bottom of the stroke.
"""

from __future__ import annotations

import numpy as np


def crank_angle(phase: np.ndarray, asymmetry: np.ndarray | float) -> np.ndarray:
    """Crank angle θ for stroke phase φ (θ − 2πφ periodic; monotone while |asymmetry| < 1).

    θ = π (top of the stroke) falls at φ ≈ 0.5 + β/π: β > 0 lengthens the upstroke.
    """
    w = 2.0 * np.pi * phase
    return w - asymmetry * (1.0 - np.cos(w))


def polished_rod_position(phase: np.ndarray, stroke: np.ndarray | float, crank_ratio: np.ndarray | float,
                          asymmetry: np.ndarray | float) -> np.ndarray:
    """Polished-rod position (m above the bottom of the stroke) at stroke phase ``phase``.

    Args:
        phase: stroke phase (any real; periodic with period 1), 0 = bottom dead centre.
        stroke: stroke length S (m).
        crank_ratio: r/l of the four-bar approximation, 0 ≤ λ < 0.5 keeps the motion monotone per half.
        asymmetry: time-warp coefficient β; > 0 makes the upstroke slower than the downstroke.

    Returns:
        position with 0 at the bottom and S at the top of the stroke.
    """
    th = crank_angle(phase, asymmetry)
    return 0.5 * stroke * (1.0 - np.cos(th) + crank_ratio * np.sin(th) ** 2)
