"""Damped wave equation along a tapered rod string, vectorised over a batch of wells.

Gibbs' equation u_tt = a²·u_xx − c·u_t is discretised as a lumped mass–spring chain (the
Everitt–Jennings finite-difference form that handles tapers): K elements of length dx = L/K,
element stiffness E·A/dx, half of each element's mass on each node, viscous damping
c = π·a·ν/(2L) (ν the dimensionless damping factor) and explicit central differences in time
with Courant number a·dt/dx ≤ ``COURANT``. Node 0 follows the polished rod; the last node is the
plunger and carries the pump force from ``PumpBatch``. The surface load is the buoyant rod weight
plus the tension in the top element; the static weight distribution is taken out of u, so u is
the displacement from the rods hanging at rest with no fluid load.

The simulation starts at the bottom of the stroke with the rods at rest, runs ``STROKES``
strokes and keeps the last one: by then the start-up transient has died down.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .kinematics import polished_rod_position
from .params import SOUND_SPEED, STEEL_DENSITY, STEEL_E, WellParams
from .pump import PumpBatch

log = logging.getLogger(__name__)

STROKES = 5
COURANT = 0.9
DX_TARGET = 90.0  # m, element length aimed at
MIN_ELEMENTS, MAX_ELEMENTS = 6, 30
PLUNGER_MASS = 40.0  # kg: plunger, pull rod and valve cage on the bottom node
# Strain-rate damping per time step (γ = β/dt of a Kelvin–Voigt element): damping ratio ≈ γ·ω·dt/2, about
# 0.07 for the chain's highest mode (ω·dt ≈ 1.8 at Courant 0.9, inside the explicit scheme's stability
# limit ζ ≤ 0.1) and below 0.01 for the fundamental. Real rod strings lose high frequencies faster than
# Gibbs' mass-proportional damping alone says (fluid drag grows with frequency, couplings, guides).
STRAIN_RATE_DAMPING = 0.08
SAND_PER_STROKE = 120  # random sand-friction values per stroke


@dataclass
class RodResult:
    """Time series of the last simulated stroke of one well, sampled at the solver's time steps."""

    phase: np.ndarray  # stroke phase of each sample, 0 … 1 inclusive
    surface_load_n: np.ndarray
    pump_position_m: np.ndarray  # plunger displacement (m, up positive, arbitrary origin)
    pump_load_n: np.ndarray
    barrel_pa: np.ndarray


def discretisation(p: WellParams) -> tuple[int, int]:
    """(elements K, time steps per stroke M) for one well; depends only on the well itself."""
    k = int(np.clip(round(p.depth_m / DX_TARGET), MIN_ELEMENTS, MAX_ELEMENTS))
    dx = p.depth_m / k
    period = 60.0 / p.spm
    m = int(math.ceil(period * SOUND_SPEED / (COURANT * dx)))
    return k, m


def cost(p: WellParams) -> int:
    """Relative work of simulating one well (steps × nodes), for load balancing."""
    k, m = discretisation(p)
    return m * (k + 1)


def _element_areas(p: WellParams, k: int) -> np.ndarray:
    """Cross-section of each element, from the taper section its midpoint falls in."""
    mids = (np.arange(k) + 0.5) * p.depth_m / k
    bounds = np.cumsum([length for length, _ in p.rod_sections])
    idx = np.minimum(np.searchsorted(bounds, mids), len(p.rod_sections) - 1)
    diam = np.array([d for _, d in p.rod_sections])[idx]
    return np.pi * diam**2 / 4.0


def simulate_rods(params: list[WellParams], sand: np.ndarray | None = None) -> list[RodResult]:
    """Simulate a batch of wells and return the last stroke of each.

    Args:
        params: one ``WellParams`` per well.
        sand: optional ``[len(params), STROKES*SAND_PER_STROKE + 2]`` array of non-negative random
            sand-friction multipliers (scaled by each well's ``sand_friction``).

    Returns:
        one ``RodResult`` per well, in input order.
    """
    b = len(params)
    disc = [discretisation(p) for p in params]
    ks = np.array([d[0] for d in disc])
    ms = np.array([d[1] for d in disc])
    n_nodes = int(ks.max()) + 1
    rows = np.arange(b)

    k_el = np.zeros((b, n_nodes - 1))
    mass = np.ones((b, n_nodes))
    for i, p in enumerate(params):
        k = ks[i]
        area = _element_areas(p, k)
        dx = p.depth_m / k
        k_el[i, :k] = STEEL_E * area / dx
        m_el = STEEL_DENSITY * area * dx
        mass[i, : k + 1] = 0.0
        mass[i, :k] += 0.5 * m_el
        mass[i, 1 : k + 1] += 0.5 * m_el
        mass[i, k] += PLUNGER_MASS
    period = np.array([60.0 / p.spm for p in params])
    dt = period / ms
    depth = np.array([p.depth_m for p in params])
    nu = np.array([p.damping for p in params])
    c = np.pi * SOUND_SPEED * nu / (2.0 * depth)
    stroke = np.array([p.stroke_m for p in params])
    crank = np.array([p.crank_ratio for p in params])
    asym = np.array([p.time_asymmetry for p in params])
    w_rod = np.array([p.buoyant_rod_weight_n for p in params])

    dt2m = (dt[:, None] ** 2) / mass
    damp_old = (1.0 - 0.5 * c * dt)[:, None]
    damp_inv = (1.0 / (1.0 + 0.5 * c * dt))[:, None]
    pump = PumpBatch(params, dt, ms, mass[rows, ks], sand, SAND_PER_STROKE)

    n_total = STROKES * ms
    n_max = int(n_total.max())
    rec_top = np.empty((n_max + 1, b))
    rec_pump = np.empty((n_max + 1, b))
    rec_y = np.empty((n_max + 1, b))
    rec_p = np.empty((n_max + 1, b))

    u = np.zeros((b, n_nodes))
    u_old = np.zeros((b, n_nodes))
    tension = np.zeros((b, n_nodes + 1))  # padded: tension[:, i+1] is element i
    strain_old = np.zeros((b, n_nodes - 1))
    for n in range(n_max + 1):
        # Element tension: elastic strain plus a small strain-rate (Kelvin–Voigt) part that damps the
        # chain's highest modes within a few cycles while the lowest ring on (see STRAIN_RATE_DAMPING).
        strain = u[:, :-1] - u[:, 1:]
        np.multiply(k_el, strain + STRAIN_RATE_DAMPING * (strain - strain_old), out=tension[:, 1:-1])
        strain_old = strain
        y = u[rows, ks]
        v = (y - u_old[rows, ks]) / dt
        f_pump, p_barrel = pump.force(n, y, v)
        rec_top[n] = tension[:, 1]
        rec_pump[n] = f_pump
        rec_y[n] = y
        rec_p[n] = p_barrel
        if n == n_max:
            break
        force = tension[:, :-1] - tension[:, 1:]
        force[rows, ks] -= f_pump
        u_new = (2.0 * u - damp_old * u_old + dt2m * force) * damp_inv
        u_new[:, 0] = polished_rod_position((n + 1) / ms, stroke, crank, asym)
        u_old, u = u, u_new

    out = []
    for i in range(b):
        start, stop = int(n_total[i] - ms[i]), int(n_total[i])
        sl = slice(start, stop + 1)
        out.append(RodResult(
            phase=np.linspace(0.0, 1.0, ms[i] + 1),
            surface_load_n=w_rod[i] + rec_top[sl, i],
            pump_position_m=rec_y[sl, i].copy(),
            pump_load_n=rec_pump[sl, i].copy(),
            barrel_pa=rec_p[sl, i].copy(),
        ))
    return out
