"""Public API: one card from explicit (or sampled) parameters, or many at once.

>>> from training.simulator import WellParams, simulate_card
>>> card = simulate_card("A02", WellParams(depth_m=1800, fillage=0.6), seed=1)
>>> card.position_m.shape == card.load_kN.shape
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.labels import CODES, label_index

from .kinematics import polished_rod_position
from .params import WellParams, sample_params
from .rod import SAND_PER_STROKE, STROKES, RodResult, simulate_rods


@dataclass(frozen=True)
class SimulatedCard:
    """One simulated stroke: the surface card (what a load cell records) and the pump card.

    Surface arrays start at the bottom of the stroke, upstroke first, ``params.points`` samples.
    """

    condition: str
    severity: float
    params: WellParams
    position_m: np.ndarray  # polished-rod position, 0 … stroke
    load_kN: np.ndarray  # polished-rod load with load-cell noise
    pump_position_m: np.ndarray  # plunger position, 0 at its lowest point of the stroke
    pump_load_kN: np.ndarray  # load on the plunger end of the rods (fluid load, friction, impacts)


@dataclass(frozen=True)
class CardSpec:
    """Everything random about a card, drawn up front so the physics itself is deterministic."""

    condition: str
    severity: float
    params: WellParams
    sand: np.ndarray | None  # sand-friction multipliers over the simulated strokes
    noise: np.ndarray  # standard-normal load-cell noise, one value per output sample


def card_rng(seed: int, condition: str, index: int) -> np.random.Generator:
    """The random generator of card ``index`` of ``condition`` under dataset ``seed``.

    Derived with ``SeedSequence((seed, class, index))``, so a card does not depend on how many
    other cards are drawn or on which worker draws it.
    """
    return np.random.default_rng(np.random.SeedSequence((int(seed), label_index(condition), int(index))))


def make_spec(condition: str, rng: np.random.Generator, params: WellParams | None = None,
              severity: float | None = None) -> CardSpec:
    """Draw the parameters (unless given), the sand-friction sequence and the load-cell noise of one card."""
    if condition not in CODES:
        raise KeyError(f"unknown condition code {condition!r}; expected one of {', '.join(CODES)}")
    if params is None:
        params, severity = sample_params(condition, rng, severity)
    elif severity is None:
        severity = float("nan")
    sand = None
    if params.sand_friction > 0:
        # Sand drag that waxes and wanes with the grains passing the plunger: positive, time-correlated
        # (smoothed over 2–5 % of a stroke), mean 1.
        n = STROKES * SAND_PER_STROKE + 2
        width = int(rng.integers(3, 7))
        raw = rng.exponential(1.0, n + width)
        sand = np.convolve(raw, np.hanning(width + 2)[1:-1], mode="valid")[:n]
        sand = sand / sand.mean()
    noise = rng.standard_normal(params.points)
    return CardSpec(condition, float(severity), params, sand, noise)


def recorded_average(phase: np.ndarray, solver_phase: np.ndarray, values: np.ndarray) -> np.ndarray:
    """What a load cell sampled at ``phase`` reads: the periodic signal averaged over each sample's interval.

    A recorder integrates (or low-pass filters) between samples; point-sampling the solver's series at
    200–250 points instead aliases rod vibration far above the sampling rate into jagged noise.

    Args:
        phase: output sample phases, evenly spaced over [0, 1] inclusive.
        solver_phase: the solver's phases, 0 … 1 inclusive, increasing.
        values: the signal at ``solver_phase`` (periodic: the last value closes the stroke).

    Returns:
        the interval means at ``phase``.
    """
    half = 0.5 * (phase[1] - phase[0]) if len(phase) > 1 else 0.0
    seg = 0.5 * (values[1:] + values[:-1]) * np.diff(solver_phase)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]

    def integral(t: np.ndarray) -> np.ndarray:  # ∫_0^t of the periodic signal, any real t
        k = np.floor(t)
        return k * total + np.interp(t - k, solver_phase, cum)

    if half <= 0:
        return np.interp(phase, solver_phase, values)
    return (integral(phase + half) - integral(phase - half)) / (2.0 * half)


def _finish(spec: CardSpec, rod: RodResult) -> SimulatedCard:
    """Resample the solver's last stroke to the card's points and add load-cell noise."""
    p = spec.params
    phase = np.linspace(0.0, 1.0, p.points)
    position = polished_rod_position(phase, p.stroke_m, p.crank_ratio, p.time_asymmetry)
    load = recorded_average(phase, rod.phase, rod.surface_load_n) / 1000.0 + p.noise_kn * spec.noise
    # The polished rod cannot push the carrier bar: when the rod top would go into compression the
    # clamp lifts off the load cell, which then reads zero (the 0 kN samples of field "pump hitting down").
    load = np.maximum(load, 0.0)
    pump_pos = np.interp(phase, rod.phase, rod.pump_position_m)
    pump_load = np.interp(phase, rod.phase, rod.pump_load_n) / 1000.0
    return SimulatedCard(spec.condition, spec.severity, p, position, load, pump_pos - pump_pos.min(), pump_load)


def run_specs(specs: list[CardSpec]) -> list[SimulatedCard]:
    """Simulate a batch of cards together (vectorised); results in input order."""
    if not specs:
        return []
    sand = None
    if any(s.sand is not None for s in specs):
        width = STROKES * SAND_PER_STROKE + 2
        sand = np.zeros((len(specs), width))
        for i, s in enumerate(specs):
            if s.sand is not None:
                sand[i] = s.sand
    rods = simulate_rods([s.params for s in specs], sand)
    return [_finish(s, r) for s, r in zip(specs, rods)]


def simulate_card(condition: str, params: WellParams | None = None, severity: float | None = None, *,
                  seed: int | None = None, rng: np.random.Generator | None = None) -> SimulatedCard:
    """Simulate one dynamometer card.

    Args:
        condition: working-condition code ``"A01"`` … ``"A12"``; with ``params`` given it is only the label
            (the physics follows the parameters), otherwise it selects how parameters are drawn.
        params: explicit well parameters, e.g. ``WellParams(depth_m=1800, fillage=0.6)``; drawn when None.
        severity: fault severity in [0, 1] when parameters are drawn (random when None).
        seed: seed for the random parts (parameters, sand, noise); same seed → identical arrays.
        rng: a generator to use instead of ``seed``.

    Returns:
        the ``SimulatedCard``.

    Raises:
        KeyError: for an unknown condition code.
    """
    if rng is None:
        rng = np.random.default_rng(seed)
    return run_specs([make_spec(condition, rng, params, severity)])[0]
