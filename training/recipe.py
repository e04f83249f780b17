"""What defines a training run: :class:`Recipe`, the presets, and how the command line resolves into one.

A recipe is written into the run's ``config.json`` and the model's ``meta.json``; a run resumes only
with the recipe it was started with. :func:`resolve_recipe` takes a preset (``finetune`` by default
with ``--init``), the ``--init`` model's network and inputs, then every flag given explicitly, then
picks the network for ``--input`` from the registry (:mod:`training.models`);
:func:`fit_length_to_data` lengthens the default and finetune recipes on a small training set.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any

from training.data import DEFAULT_SIM, DEFAULT_WELL_PATTERN
from training.models import DEFAULT_FOR_INPUT, NETWORKS, network_kind
from training.warm_start import InitModel, check_compatible, read_init

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


@dataclass
class Recipe:
    """Everything that defines a training run (written to ``config.json`` and the model's ``meta.json``)."""

    model: str = "cardnet"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    label_smoothing: float = 0.05
    seed: int = 0
    holdout: float = 0.1
    split: str = "card"
    well_pattern: str = DEFAULT_WELL_PATTERN
    per_class_target: int = 0
    augment: bool = False  # image: outline jitter before the shared fill (re-fills every card: slower)
    render_augment: bool = False  # image: cards with a CSV re-drawn (points, line, margin, aliasing) each batch
    series_augment: bool = True  # series: shift, time warp, load noise (cheap; field 70/30 0.817 -> 0.850)
    patience: int = 4
    freeze_epochs: int = 0  # the first N epochs train only the fully connected head (conv/BN trunk frozen)
    preprocess: str = "default"
    sim_per_class: int = DEFAULT_SIM["per_class"]
    input: str = "image"  # image | series | dual (what the network reads; see training.models)
    other_class: bool = False  # a 13th output "other" (none of the twelve), trained by outlier exposure

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The notebook's recipe, exactly: CNN01 on the notebook's own fill, SGD lr 1e-4, batch 128, 2 epochs,
# every class oversampled to 7,500, 90/10 split per class, no schedule, no smoothing, no early stop.
# "finetune" (the default with --init): a handful of real cards on top of a trained model. Chosen on the
# field learning curve (run.py learning-curve, 5 and 10 cards per class, two dev splits; docs/TRAINING.md):
# from the sim-only base, lr 1e-3 beat 3e-4 and 3e-3 (k=5: 0.517 vs 0.501 / 0.495), augmentation with
# re-drawing beat none (0.517 vs 0.498), batch 8 beat 16 (0.532 vs 0.517; 0.585 vs 0.578 at k=10);
# freezing 3 or 10 epochs, no smoothing, longer runs, weight decay 1e-2 and replaying simulated cards
# moved it by less than the spread between splits.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "seed": {"model": "cnn01", "epochs": 2, "batch_size": 128, "lr": 1e-4, "optimizer": "sgd", "weight_decay": 0.0,
             "schedule": "constant", "label_smoothing": 0.0, "holdout": 0.1, "split": "card",
             "per_class_target": 7500, "augment": False, "series_augment": False, "patience": 0,
             "preprocess": "legacy"},
    "finetune": {"lr": 1e-3, "batch_size": 8, "epochs": 20, "patience": 0, "freeze_epochs": 3, "augment": True,
                 "render_augment": True, "label_smoothing": 0.1},
}


# A small training set (a field's few hundred labelled cards) gets too few optimiser steps from the
# default 8 epochs: the one-cycle schedule has annealed before the network has learnt. Measured on the
# 709 field cards (70/30, docs/TRAINING.md): series 0.786 with 8 epochs, 0.817 with 30 and patience 10.
MIN_STEPS = 240  # at least this many steps when the length is not given (30 epochs of 500 cards at batch 64)
MAX_AUTO_EPOCHS = 30
# (at least this many steps, at most this many epochs) of the presets whose length follows the data
LENGTH_RULES = {"default": (MIN_STEPS, MAX_AUTO_EPOCHS), "finetune": (120, 60)}


def length_for(recipe: Recipe, train_cards: int, world_size: int = 1, min_steps: int = MIN_STEPS,
               max_epochs: int = MAX_AUTO_EPOCHS) -> tuple[int, int]:
    """(epochs, patience) of a recipe whose length follows the data, for ``train_cards`` training cards.

    Epochs grow so that a run makes at least ``min_steps`` optimiser steps (never fewer than the
    recipe's, at most ``max_epochs``); patience grows with them to a third of the epochs, so the
    noisy holdout of a small set does not stop the run on one bad epoch. ``recipe.batch_size`` is per
    process, as with ``--procs``.
    """
    steps_per_epoch = max(1, -(-train_cards // (recipe.batch_size * world_size)))
    epochs = min(max_epochs, max(recipe.epochs, -(-min_steps // steps_per_epoch)))
    patience = recipe.patience if not recipe.patience else max(recipe.patience, epochs // 3)
    return epochs, patience


def preset_name(args: argparse.Namespace) -> str:
    """``--preset``; when not given, ``finetune`` for a run started from a model (``--init``), else ``default``."""
    return getattr(args, "preset", None) or ("finetune" if getattr(args, "init", None) else "default")


def resolve_recipe(args: argparse.Namespace, init: InitModel | None = None) -> Recipe:
    """Preset values, then any flag given explicitly; the network defaults to the one for ``--input``.

    With ``--init`` the starting model's network, input kind and preprocessing are the defaults, and the
    result is checked against the model (:func:`training.warm_start.check_compatible`).

    Args:
        init: the ``--init`` model when already read (else read from ``args.init`` when given).

    Raises:
        SystemExit: an unknown network, or one that reads another input than ``--input``.
        training.warm_start.InitError: an ``--init`` model that is missing, damaged or does not fit.
    """
    values = Recipe().to_dict()
    if init is None and getattr(args, "init", None):
        init = read_init(args.init)
    if init is not None:  # the starting model's network and inputs, unless the preset or flags say otherwise
        values.update(model=init.architecture, input=init.kind, other_class=bool(init.meta.get("other_class", False)))
        if init.kind != "series":
            values["preprocess"] = init.meta["preprocess"].get("method", "default")
    values.update(PRESETS[preset_name(args)])
    for key in values:
        v = getattr(args, key, None)
        if v is not None:
            values[key] = v
    kind = values.get("input") or "image"
    explicit_model = getattr(args, "model", None) is not None or (init is not None and getattr(args, "input", None)
                                                                   in (None, init.kind))
    if values["model"] == "default" or (kind != "image" and not explicit_model):
        values["model"] = DEFAULT_FOR_INPUT[kind]
    if values["model"] not in NETWORKS:
        raise SystemExit(f"error: unknown model {values['model']!r}; choose one of {', '.join(NETWORKS)} or default")
    if network_kind(values["model"]) != kind:
        raise SystemExit(f"error: model {values['model']!r} takes {network_kind(values['model'])} input, "
                         f"not --input {kind}")
    recipe = Recipe.from_dict(values)
    if init is not None:
        check_compatible(init, recipe.model, recipe.input, recipe.preprocess, recipe.other_class)
    return recipe


def fit_length_to_data(args: argparse.Namespace, recipe: Recipe, train_cards: int, size: int = 1,
                       announce: bool = True) -> Recipe:
    """The default and finetune presets on a small training set: more epochs and patience (:func:`length_for`).

    Only what the user left unset changes; ``--preset seed`` keeps the notebook's recipe exactly.
    """
    rule = LENGTH_RULES.get(preset_name(args))
    if rule is None or (args.epochs is not None and args.patience is not None):
        return recipe
    epochs, patience = length_for(recipe, train_cards, size, *rule)
    epochs = recipe.epochs if args.epochs is not None else epochs
    patience = recipe.patience if args.patience is not None else patience
    if announce and (epochs, patience) != (recipe.epochs, recipe.patience):
        print(f"small training set ({train_cards} cards): {epochs} epochs, patience {patience} "
              f"(--epochs/--patience set them)", flush=True)
    return dataclasses.replace(recipe, epochs=epochs, patience=patience)
