"""Physics-based dynamometer-card simulator (pump model + damped wave equation in the rods).

Public API: ``simulate_card``, ``sample_params``, ``WellParams``, ``SimulatedCard``; batch helpers
``make_spec``/``run_specs``/``card_rng`` for dataset generation (``training.simulate``).
"""

from .api import CardSpec, SimulatedCard, card_rng, make_spec, run_specs, simulate_card
from .params import WellParams, sample_params

__all__ = ["CardSpec", "SimulatedCard", "WellParams", "card_rng", "make_spec", "run_specs", "sample_params",
           "simulate_card"]
