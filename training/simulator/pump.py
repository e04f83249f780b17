"""Downhole pump model: barrel pressure from plunger motion, valve states, gas, leaks and stops.

One ``PumpBatch`` holds the pump state of a batch of wells and, each time step, turns the plunger
position and velocity into the force the pump puts on the bottom of the rod string. Volumes are in
metres of plunger travel (volume / plunger area). The barrel holds liquid (``liq``, volume it
would have at zero pressure; bulk modulus ``LIQUID_BULK``) and free gas (``gas_c`` = p·V_g^k,
polytropic). With both valves closed the barrel pressure p solves

    liq·(1 − p/K) − (p − p_i)·c_t + (gas_c/p)^(1/k) = barrel volume,

where c_t is the extra volume from the unanchored tubing stretching as the fluid load moves onto
it. If that p exceeds the discharge pressure p_d the traveling valve opens (p = p_d, the excess
flows out through the plunger, gas and liquid mixed); if it falls below the intake pressure p_i
the standing valve opens (p = p_i, liquid flows in as far as the supply allows, free gas with it,
the rest of the space fills with low-pressure gas: partial fillage). The plunger load is
(p_d − p)·A_p plus friction and stop contact forces. Conditions are parameters of this one model:

- fluid pound (A02/A11): limited liquid per stroke; once the supply is used up the barrel goes on
  expanding into a vapour cavity (pressure ``P_FLOOR``) that admits only ``void_gas`` of its volume
  as intake-pressure gas. With little gas the load holds until the plunger meets the liquid and then
  drops sharply (knife handle); with more gas the drop rounds off into gas interference;
- gas interference (A03) and gas lock (A04): free gas with the liquid; for gas lock a dead space
  so large that compression barely reaches p_d;
- leaks (A09/A10): slip flow ∝ (Δp/F_o)^e (e 0.5 orifice … 1 laminar clearance) through the
  traveling/standing valve, up to about the plunger's peak displacement rate;
- sticky traveling valve (A07): the ball hangs part-open for the first part of the upstroke (late
  closing) and part-closed for the first part of the downstroke (late opening); while it hangs, the
  throttled valve holds the barrel at a pressure between intake and discharge, so the load sits on
  a mid-level step on both strokes (a "Z");
- plunger leaving the barrel (A08): above a height near the top a bypass to the tubing opens over
  ``out_ramp_m`` of travel; its capacity (``out_bypass``) limits how far the load falls;
- tagging (A05/A06): a contact spring (``tag_stiffness`` × the stiffest the time step allows) at
  the top/bottom of the plunger travel;
- sand (A11): time-correlated Coulomb-like friction at the plunger.

Stops, fillage and plunger-out heights are relative to the plunger's free travel, measured during
the second simulated stroke (``measure`` phase) and applied from the third stroke on.
"""

from __future__ import annotations

import numpy as np

from .params import STEEL_E, TUBING_AREA, WellParams

LIQUID_BULK = 1.2e9  # Pa, gassy oil/water effective bulk modulus
P_FLOOR = 2.0e4  # Pa, vapour pressure: the barrel pressure never goes below it
V_FRICTION = 0.02  # m/s, velocity scale that smooths Coulomb friction
NEWTON_ITERS = 4
VALVE_LAG_S = 0.04  # s, time constant of the hydraulic load's response to valve events
STICK_START = 0.01  # m the plunger falls from its top before a late-opening traveling valve counts as stuck


class PumpBatch:
    """Vectorised pump state for a batch of wells (one entry per card)."""

    def __init__(self, params: list[WellParams], dt: np.ndarray, steps_per_stroke: np.ndarray,
                 bottom_mass: np.ndarray, sand: np.ndarray | None, sand_per_stroke: int):
        f = lambda name: np.array([getattr(p, name) for p in params], dtype=float)  # noqa: E731
        self.n = len(params)
        self.area = f("plunger_area")
        self.p_d = f("discharge_pa")
        self.p_i = f("intake_pa")
        self.k = f("polytropic_k")
        self.inv_k = 1.0 / self.k
        self.dead = f("dead_space_m")
        self.phi = f("gas_fraction")
        self.fillage = f("fillage")
        self.tv_close_delay = f("tv_close_delay_m")
        self.tv_open_delay = f("tv_open_delay_m")
        self.void_gas = f("void_gas")
        self.out_ramp = np.maximum(f("out_ramp_m"), 1e-3)
        self.tag_top = f("tag_top_m")
        self.tag_bottom = f("tag_bottom_m")
        self.out = f("plunger_out_m")
        self.friction = f("plunger_friction_n")
        self.fluid_load = self.p_d - self.p_i
        anchored = np.array([p.tubing_anchored for p in params])
        depth = f("depth_m")
        self.c_t = np.where(anchored, 0.0, self.area * depth / (STEEL_E * TUBING_AREA))
        # Minimum compliance (valve seat, cage, trapped gas): keeps the fluid spring on the plunger
        # softer than the explicit time step can carry, so valve transitions do not chatter.
        self.c_t = self.c_t + self.area * dt**2 / (0.8 * bottom_mass)
        self.sand_amp = f("sand_friction") * self.fluid_load * self.area
        self.sand = sand
        self.sand_per_stroke = sand_per_stroke
        # Leak coefficients in metres of plunger travel per second at the full pressure difference.
        self.v_peak = v_peak = np.pi * f("stroke_m") * f("spm") / 60.0
        self.tv_leak = f("tv_leak") * v_peak
        self.sv_leak = f("sv_leak") * v_peak
        self.leak_exp = f("leak_exponent")
        self.out_bypass = f("out_bypass") * v_peak
        # Barrel pressure while the sticky traveling valve hangs part-open (a throttle): the plunger load
        # sits at ``tv_stick_load`` of the fluid load.
        self.p_stick = self.p_d - f("tv_stick_load") * (self.p_d - self.p_i)
        self.dt = dt
        self.m = steps_per_stroke
        # Contact stiffness: as stiff as the explicit scheme allows at the bottom node.
        self.k_contact = 1.5 * bottom_mass / dt**2 * f("tag_stiffness")
        self.log_floor = np.log(P_FLOOR)
        self.log_hi = np.log(3.0 * self.p_d)
        self.log_pd, self.log_pi = np.log(self.p_d), np.log(self.p_i)
        self.shrink_d = 1.0 - self.p_d / LIQUID_BULK
        self.shrink_i = 1.0 - self.p_i / LIQUID_BULK
        self.has_delay = (self.tv_close_delay > 0) | (self.tv_open_delay > 0)
        self.any_delay = bool(self.has_delay.any())
        self.top_phase = 0.5 + f("time_asymmetry") / np.pi
        self.has_leak = bool(np.any(self.tv_leak > 0) or np.any(self.sv_leak > 0) or np.any(self.out >= 0))
        self.has_sand = sand is not None
        self.any_top, self.any_bottom = bool(np.any(self.tag_top >= 0)), bool(np.any(self.tag_bottom >= 0))
        self.any_out, self.any_fill = bool(np.any(self.out >= 0)), bool(np.any(self.fillage < 1.0))

        # State: start at the bottom of the stroke, traveling valve open, barrel at p_d.
        self.p = self.p_d.copy()
        self.y_lo = np.zeros(self.n)
        gas_len = np.where(self.phi > 0.5, self.dead, self.phi * self.dead)
        self.gas_c = np.maximum(self.p_d * gas_len**self.k, 1e-30)
        self.liq = (self.dead - gas_len) / (1.0 - self.p_d / LIQUID_BULK)
        self.y_hi_m = np.full(self.n, -np.inf)
        self.y_lo_m = np.full(self.n, np.inf)
        self.stroke_idx = np.zeros(self.n, dtype=np.int64)
        self.y_lo_stroke = np.zeros(self.n)
        self.y_hi_stroke = np.zeros(self.n)
        self.budget = np.full(self.n, np.inf)
        self.barrel_prev = self.dead.copy()
        self.f_hyd = np.zeros(self.n)
        self.lag = np.minimum(1.0, dt / VALVE_LAG_S)

    def _closed_pressure(self, barrel: np.ndarray, log_c: np.ndarray) -> np.ndarray:
        """Barrel pressure with both valves closed (Newton on log p, a few iterations)."""
        s = np.log(self.p)  # p ≥ P_FLOOR always
        compliance = self.liq / LIQUID_BULK + self.c_t
        rest = self.liq + self.p_i * self.c_t - barrel
        for _ in range(NEWTON_ITERS):
            p = np.exp(s)
            gas = np.exp((log_c - s) * self.inv_k)
            pc = p * compliance
            s = s + (rest - pc + gas) / (pc + gas * self.inv_k)
            np.minimum(np.maximum(s, self.log_floor, out=s), self.log_hi, out=s)
        return np.exp(s)

    def force(self, n: int, y: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance the pump to step ``n`` with plunger position ``y`` and velocity ``v``.

        Returns:
            (force pulling the rod bottom down in N, barrel pressure in Pa).
        """
        stroke = n // self.m
        new = stroke != self.stroke_idx
        if new.any():
            self.stroke_idx = stroke
            self.y_lo_stroke = np.where(new, y, self.y_lo_stroke)
            self.y_hi_stroke = np.where(new, y, self.y_hi_stroke)
            span = self.y_hi_m - self.y_lo_m
            self.budget = np.where(new & (stroke >= 2) & (self.fillage < 1.0), self.fillage * span, self.budget)
        measuring = stroke == 1
        if measuring.any():
            self.y_hi_m = np.where(measuring, np.maximum(self.y_hi_m, y), self.y_hi_m)
            self.y_lo_m = np.where(measuring, np.minimum(self.y_lo_m, y), self.y_lo_m)
        active = stroke >= 2
        self.y_lo = np.minimum(self.y_lo, y)
        self.y_lo_stroke = np.minimum(self.y_lo_stroke, y)
        self.y_hi_stroke = np.maximum(self.y_hi_stroke, y)
        barrel = self.dead + y - self.y_lo

        # Slip through leaking valves, ∝ (Δp/F_o)^e (explicit; the valve projection below keeps p in range).
        dp_scale = self.fluid_load
        if self.has_leak:
            down = np.maximum(self.p_d - self.p, 0.0) / dp_scale
            inflow = self.tv_leak * down**self.leak_exp
            if self.any_out:
                # Plunger leaving the barrel: a bypass to the tubing opens over out_ramp of travel (orifice law).
                out = active & (self.out >= 0)
                opening = np.clip((y - (self.y_hi_m - self.out)) / self.out_ramp, 0.0, 1.0)
                inflow = inflow + np.where(out, opening * self.out_bypass * np.sqrt(down), 0.0)
            up = np.maximum(self.p - self.p_i, 0.0) / dp_scale
            self.liq = np.maximum(self.liq + (inflow - self.sv_leak * up**self.leak_exp) * self.dt, 0.0)

        log_c = np.log(self.gas_c)
        p_c = self._closed_pressure(barrel, log_c)
        stuck = None
        if self.any_delay:
            # Sticky traveling valve: hangs part-open early in the upstroke, part-closed early in the downstroke.
            # Which half of the stroke from the surface phase (the top of the stroke at 0.5 + β/π), not from
            # the plunger's velocity, which flips sign with every rod vibration.
            upstroke = (n % self.m) < self.m * self.top_phase
            late_close = upstroke & (y - self.y_lo_stroke < self.tv_close_delay)
            fallen = self.y_hi_stroke - y
            late_open = ~upstroke & (fallen > STICK_START) & (fallen < self.tv_open_delay)
            stuck = self.has_delay & active & (late_close | late_open)
        tv_open = (p_c > self.p_d) if stuck is None else (stuck | (p_c > self.p_d))
        sv_open = ~tv_open & (p_c < self.p_i)
        p_valve = self.p_d if stuck is None else np.where(stuck, self.p_stick, self.p_d)
        p = np.where(tv_open, p_valve, np.where(sv_open, self.p_i, p_c))

        if tv_open.any():
            shrink_v = 1.0 - p_valve / LIQUID_BULK
            log_pv = self.log_pd if stuck is None else np.log(p_valve)
            gas_v = np.exp((log_c - log_pv) * self.inv_k)
            content = self.liq * shrink_v + gas_v
            excess = content - (p_valve - self.p_i) * self.c_t - barrel
            frac = np.clip(excess / np.maximum(content, 1e-12), 0.0, 1.0)
            out_liq = self.liq * (1.0 - frac)
            out_gas = np.maximum(self.gas_c * (1.0 - frac) ** self.k, 1e-30)
            keep = self.liq
            if stuck is not None:
                # A valve hanging open also lets tubing liquid in when the barrel has room.
                keep = np.where(stuck, self.liq + np.maximum(-excess, 0.0) / shrink_v, self.liq)
            self.liq = np.where(tv_open, np.where(excess > 0, out_liq, keep), self.liq)
            self.gas_c = np.where(tv_open & (excess > 0), out_gas, self.gas_c)
        if sv_open.any():
            shrink_i = self.shrink_i
            gas_i = np.exp((log_c - self.log_pi) * self.inv_k)
            need = np.maximum(barrel - self.liq * shrink_i - gas_i, 0.0)
            gas_in = need * self.phi
            liquid = need - gas_in
            short = None
            if self.any_fill:
                # The liquid supply of the stroke runs out: the barrel goes on expanding into a vapour
                # cavity, of which only ``void_gas`` fills with gas at intake pressure.
                wanted = liquid
                liquid = np.minimum(liquid, np.maximum(self.budget, 0.0))
                short = wanted - liquid
                growth = np.maximum(barrel - self.barrel_prev, 0.0)
                with_liquid = liquid * self.phi / np.maximum(1.0 - self.phi, 1e-6)
                gas_in = np.where(short > 1e-12, with_liquid + self.void_gas * np.minimum(short, growth), gas_in)
                self.budget = np.where(sv_open, self.budget - liquid, self.budget)
            self.liq = np.where(sv_open, self.liq + liquid / shrink_i, self.liq)
            self.gas_c = np.where(sv_open, np.maximum(self.p_i * (gas_i + gas_in) ** self.k, 1e-30), self.gas_c)
            if short is not None and bool(np.any(sv_open & (short > 1e-12))):
                cavity = sv_open & (short > 1e-12)
                p = np.where(cavity, self._closed_pressure(barrel, np.log(self.gas_c)), p)
        self.barrel_prev = barrel
        self.p = p

        # The hydraulic load reaches the plunger through valve motion and the fluid column's inertia: a
        # first-order lag of VALVE_LAG_S (without it every valve event would be an ideal step that rings
        # the rods' highest modes as hard as the lowest).
        self.f_hyd += (((self.p_d - p) * self.area) - self.f_hyd) * self.lag
        load = self.f_hyd.copy()
        smooth_sign = np.tanh(v / V_FRICTION)
        load = load + self.friction * smooth_sign
        if self.has_sand:
            pos = n / self.m * self.sand_per_stroke
            i0 = np.minimum(pos.astype(np.int64), self.sand.shape[1] - 2)
            w = pos - i0
            rows = np.arange(self.n)
            seq = self.sand[rows, i0] * (1.0 - w) + self.sand[rows, i0 + 1] * w
            load = load + self.sand_amp * seq * smooth_sign
        top = active & (self.tag_top >= 0) if self.any_top else None
        if top is not None and top.any():
            load = load + np.where(top, self.k_contact * np.maximum(y - (self.y_hi_m - self.tag_top), 0.0), 0.0)
        bottom = active & (self.tag_bottom >= 0) if self.any_bottom else None
        if bottom is not None and bottom.any():
            load = load - np.where(bottom, self.k_contact * np.maximum(self.y_lo_m + self.tag_bottom - y, 0.0), 0.0)
        return load, p
