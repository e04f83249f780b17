"""Well parameters and their random sampling over field ranges, per working condition.

Everything is SI (m, s, Pa, kg/m³, N) except ``spm`` (strokes per minute). A ``WellParams`` fully
determines one simulated card; ``sample_params`` draws one from the field ranges in CARDS.md with
the condition's fault set to a random severity between borderline (0) and severe (1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from shared.labels import CODES

G = 9.81
STEEL_DENSITY = 7850.0
STEEL_E = 2.06e11
SOUND_SPEED = math.sqrt(STEEL_E / STEEL_DENSITY)  # ≈ 5,123 m/s
TUBING_AREA = 1.16e-3  # 2 7/8" tubing steel cross-section, m²

# Rod diameters available to a taper (Chinese/API sizes 16–25 mm), thickest at the top.
ROD_DIAMETERS = (0.016, 0.019, 0.022, 0.025)
# Inertia rotation (W_r·S·N²/1790 over F_o): every class but A12 draws up to this; A12 draws 0.45–0.8.
INERTIA_MAX_OTHERS = 0.3
PLUNGER_DIAMETERS = (0.028, 0.032, 0.038, 0.044, 0.056, 0.057, 0.063, 0.070, 0.083)


@dataclass(frozen=True)
class WellParams:
    """All inputs of one simulated card.

    Fault fields default to "no fault"; ``sample_params`` sets the one(s) its condition needs.
    Lengths that refer to the pump (``dead_space_m``, ``tag_*_m``, ``plunger_out_m``,
    ``tv_close_delay_m``) are metres of plunger travel.
    """

    stroke_m: float = 3.0
    spm: float = 5.0
    depth_m: float = 1500.0
    rod_sections: tuple[tuple[float, float], ...] = ((600.0, 0.022), (900.0, 0.019))  # (length m, diameter m), top first
    plunger_d_m: float = 0.044
    fluid_density: float = 900.0
    submergence_m: float = 300.0  # fluid level above the pump intake
    wellhead_pa: float = 0.5e6
    casing_pa: float = 0.3e6
    damping: float = 0.12  # Gibbs dimensionless damping factor ν
    crank_ratio: float = 0.0  # r/l of the beam unit's four-bar approximation (0 = pure sinusoid)
    time_asymmetry: float = 0.0  # >0: upstroke slower than downstroke
    tubing_anchored: bool = True
    dead_space_m: float = 0.15
    gas_fraction: float = 0.0  # free-gas volume fraction of what enters through the standing valve
    polytropic_k: float = 1.2
    fillage: float = 1.0  # liquid supply per stroke as a fraction of the plunger stroke (fluid pound < 1)
    void_gas: float = 0.0  # share of the space the liquid supply leaves that fills with intake-pressure gas (0: vapour)
    tv_leak: float = 0.0  # traveling-valve leak: peak slip rate / peak plunger displacement rate
    sv_leak: float = 0.0  # standing-valve leak, same scale
    leak_exponent: float = 0.5  # slip ∝ (Δp/F_o)^e: 0.5 orifice (worn seat), 1 laminar (plunger clearance)
    tv_close_delay_m: float = 0.0  # sticky traveling valve hangs part-open for this much upstroke travel
    tv_open_delay_m: float = 0.0  # ... and part-closed for this much downstroke travel
    tv_stick_load: float = 0.0  # load while it hangs, as a share of the fluid load (0: as if fully open)
    tag_top_m: float = -1.0  # plunger hits the pump top this far before the free top of its stroke (<0: never)
    tag_bottom_m: float = -1.0  # plunger hits bottom this far before the free bottom of its stroke (<0: never)
    tag_stiffness: float = 1.0  # stop stiffness relative to the stiffest the time step allows (< 1: cushioned)
    plunger_out_m: float = -1.0  # plunger leaves the barrel this far below the free top of its stroke (<0: never)
    out_ramp_m: float = 0.2  # travel over which the plunger leaving the barrel opens the bypass
    out_bypass: float = 6.0  # bypass capacity once out, relative to the peak plunger displacement rate
    sand_friction: float = 0.0  # amplitude of sand friction at the plunger as a fraction of the fluid load
    plunger_friction_n: float = 500.0
    noise_kn: float = 0.1  # load-cell noise (standard deviation, kN)
    points: int = 200

    def __post_init__(self) -> None:
        # Rod sections always span the pump depth: scale their lengths when they do not (e.g. only
        # depth_m was given), keeping the taper proportions.
        total = sum(length for length, _ in self.rod_sections)
        if total <= 0 or not self.rod_sections:
            raise ValueError("rod_sections needs at least one (length, diameter) section")
        if abs(total - self.depth_m) > 1e-6 * self.depth_m:
            scaled = tuple((length * self.depth_m / total, d) for length, d in self.rod_sections)
            object.__setattr__(self, "rod_sections", scaled)

    @property
    def plunger_area(self) -> float:
        return math.pi * self.plunger_d_m**2 / 4.0

    @property
    def discharge_pa(self) -> float:
        """Pressure above the plunger: wellhead plus the tubing fluid column."""
        return self.wellhead_pa + self.fluid_density * G * self.depth_m

    @property
    def intake_pa(self) -> float:
        """Pump intake pressure: casing pressure plus the fluid above the pump."""
        return self.casing_pa + self.fluid_density * G * self.submergence_m

    @property
    def fluid_load_n(self) -> float:
        """Static fluid load on the plunger, F_o = (p_d − p_i)·A_p."""
        return (self.discharge_pa - self.intake_pa) * self.plunger_area

    @property
    def rod_weight_n(self) -> float:
        """Rod string weight in air."""
        return sum(STEEL_DENSITY * G * math.pi * d**2 / 4.0 * length for length, d in self.rod_sections)

    @property
    def buoyant_rod_weight_n(self) -> float:
        return self.rod_weight_n * (1.0 - self.fluid_density / STEEL_DENSITY)

    @property
    def rod_stretch_m(self) -> float:
        """Static rod stretch under the fluid load, λ = F_o/E·Σ L_i/A_i."""
        return self.fluid_load_n / STEEL_E * sum(length / (math.pi * d**2 / 4.0) for length, d in self.rod_sections)

    @property
    def inertia_ratio(self) -> float:
        """Approximate inertia load W_r·S·N²/1790 relative to the fluid load (what rotates the card)."""
        return self.rod_weight_n * self.stroke_m * self.spm**2 / 1790.0 / max(self.fluid_load_n, 1.0)

    def replace(self, **changes) -> "WellParams":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def _rod_string(depth: float, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    """A 1–3 section taper, thickest at the top; deeper wells get thicker and more sections."""
    n = int(rng.choice([1, 2, 3], p=[0.2, 0.5, 0.3] if depth > 1000 else [0.5, 0.4, 0.1]))
    top = int(rng.choice([1, 2, 3], p=[0.2, 0.5, 0.3] if depth > 1200 else [0.45, 0.45, 0.1]))
    idx = [max(top - i, 0) for i in range(n)]
    fracs = rng.dirichlet(np.full(n, 3.0))
    return tuple((float(depth * f), ROD_DIAMETERS[i]) for f, i in zip(fracs, idx))


def _base(rng: np.random.Generator) -> dict:
    """Well parameters common to every condition, drawn over field ranges (nuisance variables of every class)."""
    stroke = float(np.clip(rng.lognormal(math.log(3.1), 0.4), 1.2, 10.0))
    depth = float(np.clip(rng.lognormal(math.log(1150.0), 0.35), 500.0, 3000.0))
    rods = _rod_string(depth, rng)
    weights = np.array([0.8, 1.5, 2.0, 2.0, 1.0, 0.4, 0.4, 0.2, 0.1])
    if depth > 1800:
        weights[6:] = 0.0
    plunger = float(rng.choice(PLUNGER_DIAMETERS, p=weights / weights.sum()))
    # Speed: 2–12 strokes/min, but long-stroke units run slowly (polished-rod speed S·N ≤ 25–40 m/min).
    spm_max = max(2.0, min(12.0, rng.uniform(25.0, 40.0) / stroke))
    return dict(
        stroke_m=stroke,
        spm=float(np.exp(rng.uniform(np.log(2.0), np.log(spm_max)))) if spm_max > 2.0 else 2.0,
        depth_m=depth,
        rod_sections=rods,
        plunger_d_m=plunger,
        fluid_density=float(rng.uniform(850.0, 1050.0)),
        submergence_m=float(rng.uniform(60.0, 0.65 * depth)),
        wellhead_pa=float(rng.uniform(0.2e6, 1.5e6)),
        casing_pa=float(rng.uniform(0.1e6, 0.8e6)),
        damping=float(rng.uniform(0.1, 0.3)),
        crank_ratio=float(rng.uniform(0.0, 0.3)),
        time_asymmetry=float(rng.uniform(-0.08, 0.12)),
        tubing_anchored=bool(rng.random() < 0.75),
        dead_space_m=float(rng.uniform(0.05, 0.3)),
        gas_fraction=float(rng.uniform(0.0, 0.03)),
        polytropic_k=float(rng.uniform(1.05, 1.3)),
        plunger_friction_n=float(rng.uniform(200.0, 1500.0)),
        noise_kn=float(rng.uniform(0.03, 0.3)),
        points=int(rng.integers(200, 251)),
    )


def _lerp(lo: float, hi: float, s: float) -> float:
    return lo + (hi - lo) * s


def _limit_inertia(p: dict, rng: np.random.Generator, max_ratio: float) -> None:
    """Lower the speed until the inertia rotation stays below ``max_ratio`` (A12 lies above it)."""
    wp = WellParams(**p)
    if wp.inertia_ratio > max_ratio:
        n_max = math.sqrt(max_ratio * 1790.0 * wp.fluid_load_n / (wp.rod_weight_n * wp.stroke_m))
        p["spm"] = float(max(2.0, n_max * rng.uniform(0.85, 1.0)))


def _speed_for_inertia(p: dict, ratio: float) -> float:
    """Strokes/min at which the inertia rotation W_r·S·N²/1790 reaches ``ratio`` of the fluid load
    (within 2–12 strokes/min and S·N²/1790 ≤ 0.3, so the rods never float)."""
    wp = WellParams(**p)
    n = math.sqrt(ratio * 1790.0 * wp.fluid_load_n / (wp.rod_weight_n * wp.stroke_m))
    return float(np.clip(min(n, math.sqrt(0.3 * 1790.0 / wp.stroke_m)), 2.0, 12.0))


def _limit_stretch(p: dict, max_share: float) -> None:
    """Pick a smaller plunger while rod stretch would eat more than ``max_share`` of the stroke."""
    while True:
        wp = WellParams(**p)
        smaller = [d for d in PLUNGER_DIAMETERS if d < wp.plunger_d_m]
        if wp.rod_stretch_m <= max_share * wp.stroke_m or not smaller:
            return
        p["plunger_d_m"] = smaller[-1]


# Shape of the downstroke drop. Fluid pound: the barrel pressure at the top of the stroke is at most
# HOLD_MAX of the discharge pressure, so the load holds until the plunger nears the liquid and then drops
# (over at most CUSHION_POUND_MAX of the stroke). Gas interference: at least START_ROUND of it, with at
# least GAS_MIN_ROUND of the stroke in gas, so the load starts falling at the top and keeps curving.
HOLD_MAX = 0.04
START_ROUND = 0.08
CUSHION_POUND_MAX = 0.12
GAS_MIN_ROUND = 0.12


def barrel_gas(p: WellParams) -> tuple[float, float]:
    """Estimated barrel contents at the top of the stroke, as shares of the plunger stroke.

    Returns:
        ``(gas, void)``: free gas at intake pressure (dead-space gas re-expanded, gas that came in with
        the liquid, intake gas drawn into the space the liquid supply left) and the whole space not
        filled with liquid (gas + vapour).
    """
    s_p = max(p.stroke_m - p.rod_stretch_m, 0.3 * p.stroke_m)
    phi = min(p.gas_fraction, 0.99)
    inflow = min(1.0, p.fillage / max(1.0 - phi, 1e-6))  # share of the stroke filled with liquid + gas
    dead_gas = p.dead_space_m * phi * (p.discharge_pa / p.intake_pa) ** (1.0 / p.polytropic_k) / s_p
    gas = phi * inflow + p.void_gas * (1.0 - inflow) + dead_gas
    void = max(1.0 - inflow * (1.0 - phi) + dead_gas, gas)
    return gas, void


def start_pressure_ratio(p: WellParams) -> float:
    """Barrel pressure at the top of the stroke over the discharge pressure: the intake gas spread over
    the whole space the liquid left (p·V^k). Near 0: the load holds on the downstroke until the plunger
    nears the liquid; larger: the unloading starts at the top."""
    gas, void = barrel_gas(p)
    if void <= 0:
        return 1.0
    return p.intake_pa / p.discharge_pa * (gas / void) ** p.polytropic_k


def gas_cushion(p: WellParams) -> float:
    """Plunger travel (share of its stroke) over which the barrel gas takes the downstroke pressure from
    15 % to 85 % of the discharge pressure: ≈ 3.7·V_g·(p_i/p_d)^(1/k) for gas V_g at intake pressure
    (p·V^k = const): how steep the drop is."""
    gas, _ = barrel_gas(p)
    return 3.7 * gas * (p.intake_pa / p.discharge_pa) ** (1.0 / p.polytropic_k)


def is_fluid_pound(p: WellParams) -> bool:
    """The drop of a part-filled pump reads as fluid pound: the load holds, then drops steeply."""
    return start_pressure_ratio(p) <= HOLD_MAX and gas_cushion(p) <= CUSHION_POUND_MAX


def is_gas_interference(p: WellParams) -> bool:
    """The drop reads as gas interference: the load falls from the top of the stroke along a curve."""
    return start_pressure_ratio(p) >= START_ROUND and barrel_gas(p)[0] >= GAS_MIN_ROUND


def _part_filled(p: dict, rng: np.random.Generator, fillage: float, sharp: bool) -> None:
    """Pumped-off or gassy intake with the given liquid fillage.

    ``sharp``: fluid pound (drawn again until ``is_fluid_pound``); otherwise gas interference (drawn
    again until ``is_gas_interference``). Both draw free gas across 0–25 % and more: what separates them is
    the shape of the drop (where the barrel pressure starts and how much gas there is), not a gas or
    intake-pressure threshold.
    """
    for _ in range(40):
        if sharp:
            p["submergence_m"] = float(rng.uniform(0.0, 80.0))
            p["casing_pa"] = float(rng.uniform(0.05e6, 0.8e6))
            p["gas_fraction"] = float(rng.uniform(0.0, 0.25))
            p["void_gas"] = float(rng.uniform(0.0, 0.4))
        else:
            p["submergence_m"] = float(rng.uniform(20.0, max(40.0, min(400.0, 0.4 * p["depth_m"]))))
            p["casing_pa"] = float(rng.uniform(0.2e6, 1.5e6))
            p["void_gas"] = float(rng.uniform(0.5, 1.0))
        p["fillage"] = fillage
        wp = WellParams(**p)
        if is_fluid_pound(wp) if sharp else is_gas_interference(wp):
            return
    if sharp:
        p["gas_fraction"], p["void_gas"] = 0.0, 0.0
        return
    while p["gas_fraction"] < 0.8 and not is_gas_interference(WellParams(**p)):
        p["gas_fraction"] = min(0.8, p["gas_fraction"] * 1.15 + 0.01)  # deep, high-lift wells need more gas
        p["casing_pa"] = min(3.0e6, p["casing_pa"] * 1.1)


def sample_params(condition: str, rng: np.random.Generator, severity: float | None = None) -> tuple[WellParams, float]:
    """Draw well parameters for one card of ``condition`` (``"A01"`` … ``"A12"``).

    Args:
        condition: the working-condition code.
        rng: the card's random generator (the only source of randomness).
        severity: fault severity in [0, 1] (0 borderline, 1 severe); drawn uniformly when None.

    Returns:
        ``(params, severity)``.

    Raises:
        KeyError: for an unknown condition code.
    """
    if condition not in CODES:
        raise KeyError(f"unknown condition code {condition!r}; expected one of {', '.join(CODES)}")
    s = float(rng.uniform(0.0, 1.0)) if severity is None else float(np.clip(severity, 0.0, 1.0))
    p = _base(rng)
    tag = None

    # Label definitions with a margin between neighbours (a petroleum engineer's reading of the card):
    #   A01 full pump, ≤ 3 % free gas;  A02/A11 the liquid runs short (fillage ≤ 0.85), the load holds on the
    #   downstroke and then drops steeply (is_fluid_pound);  A03 the load falls from the top along a gas
    #   compression curve (is_gas_interference), from 4–65 % free gas, with or without a short liquid supply;
    #   A04 ≥ 90 % gas, valves never open;  A12 inertia ≥ 0.45 F_o, every other class ≤ INERTIA_MAX_OTHERS.
    #   Faults that co-occur with another (tagging wells that are part-filled or gassy) stay milder so the
    #   tag decides.
    if condition in ("A02", "A11"):  # fluid pound: the pump intake at the fluid level, liquid runs short
        fill = _lerp(0.85, 0.5, s) if condition == "A02" else _lerp(0.5, 0.25, rng.uniform(0.0, 1.0))
        _part_filled(p, rng, fill, sharp=True)
        if condition == "A11":  # severe pound, rods ringing, time-correlated sand drag
            p["sand_friction"] = float(_lerp(0.06, 0.12, s) * rng.uniform(0.85, 1.15))
    elif condition == "A03":  # free gas enters with the liquid and fills what the liquid leaves
        p["gas_fraction"] = _lerp(0.1, 0.65, s) * float(rng.uniform(0.4, 1.0))
        fill = 1.0 if rng.random() < 0.3 else float(rng.uniform(0.5, 0.9))
        _part_filled(p, rng, fill, sharp=False)
    elif condition == "A04":  # barrel full of gas; compression ratio too small to open the valves
        p["submergence_m"] = float(rng.uniform(10.0, 200.0))
        p["gas_fraction"] = float(rng.uniform(0.9, 0.99))
        p["dead_space_m"] = -1.0  # resolved below once the pressures are known
    elif condition in ("A05", "A06"):
        key = "tag_top_m" if condition == "A05" else "tag_bottom_m"
        # The stop is met this far before the free end of the travel: a share of the rod stretch
        # (F_o·L/EA), so the contact force it can build is about that share of the fluid load.
        tag = (key, _lerp(0.15, 0.8, s))  # resolved below once the rod string and plunger are final
        p["tag_stiffness"] = float(np.exp(rng.uniform(np.log(0.3), 0.0)))
        # Tagging wells are often pumped off or gassy too, mildly (the tag decides the label).
        u = rng.random()
        if u < 0.15:
            _part_filled(p, rng, float(rng.uniform(0.88, 0.97)), sharp=True)
        elif u < 0.25:
            p["gas_fraction"] = float(rng.uniform(0.04, 0.1))
    elif condition == "A07":  # sticky traveling valve: late to close, often late to open as well
        p["tv_close_delay_m"] = _lerp(0.08, 0.3, s) * p["stroke_m"]
        p["tv_open_delay_m"] = p["tv_close_delay_m"] * float(rng.uniform(0.3, 1.0)) if rng.random() < 0.7 else 0.0
        p["tv_stick_load"] = float(rng.uniform(0.25, 0.65))
    elif condition == "A08":  # plunger partly leaves the barrel near the top
        p["plunger_out_m"] = _lerp(0.05, 0.25, s) * p["stroke_m"]
        p["out_ramp_m"] = float(rng.uniform(0.01, 0.04)) * p["stroke_m"]
        p["out_bypass"] = float(rng.uniform(3.0, 10.0))
    elif condition in ("A09", "A10"):  # leak up to about the plunger's displacement rate
        p["tv_leak" if condition == "A09" else "sv_leak"] = _lerp(0.15, 0.95, s)
        p["leak_exponent"] = float(rng.uniform(0.5, 1.0))
    elif condition == "A12":  # a normal full pump, rotated clockwise by the rods' inertia
        p["depth_m"] = float(rng.uniform(600.0, 1600.0))
        p["rod_sections"] = _rod_string(p["depth_m"], rng)
        p["submergence_m"] = float(rng.uniform(60.0, 0.5 * p["depth_m"]))
        p["plunger_d_m"] = float(rng.choice(PLUNGER_DIAMETERS[:5]))
        p["stroke_m"] = float(rng.uniform(2.0, 6.0))
        _limit_stretch(p, 0.12)
        target = _lerp(0.45, 0.8, s)
        p["spm"] = max(5.0, _speed_for_inertia(p, target))
        while WellParams(**p).inertia_ratio < 0.95 * target and p["plunger_d_m"] > PLUNGER_DIAMETERS[0]:
            # the speed is at its limit: a smaller plunger (smaller fluid load) makes the rods' inertia count
            p["plunger_d_m"] = max(d for d in PLUNGER_DIAMETERS if d < p["plunger_d_m"])
            p["spm"] = max(5.0, _speed_for_inertia(p, target))

    _limit_stretch(p, 0.12)
    if condition != "A12":
        _limit_inertia(p, rng, INERTIA_MAX_OTHERS)
    if tag is not None:
        p[tag[0]] = max(0.01, tag[1] * WellParams(**p).rod_stretch_m)
    wp = WellParams(**p)
    if condition == "A04":
        # Dead space so that full compression of the gas barely (or never) reaches the discharge pressure.
        s_p = max(wp.stroke_m - wp.rod_stretch_m, 0.3 * wp.stroke_m)
        ratio = (wp.intake_pa / wp.discharge_pa) ** (1.0 / wp.polytropic_k) * _lerp(1.02, 1.4, s)
        ratio = min(ratio, 0.8)
        wp = wp.replace(dead_space_m=float(s_p * ratio / (1.0 - ratio)))
    return wp, s
