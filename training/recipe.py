"""What defines a training run: :class:`Recipe`, the presets, and how the command line resolves into one.

A recipe is written into the run's ``config.json`` and the model's ``meta.json``; a run resumes only
with the recipe it was started with. :func:`resolve_recipe` takes a preset, then every flag given
explicitly, then picks the network for ``--input`` from the registry (:mod:`training.models`);
:func:`fit_length_to_data` lengthens the default recipe on a small training set.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any

from training.data import DEFAULT_SIM, DEFAULT_WELL_PATTERN
from training.models import DEFAULT_FOR_INPUT, NETWORKS, network_kind

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
    series_augment: bool = True  # series: shift, time warp, load noise (cheap; field 70/30 0.817 -> 0.850)
    patience: int = 4
    preprocess: str = "default"
    sim_per_class: int = DEFAULT_SIM["per_class"]
    input: str = "image"  # image | series | dual (what the network reads; see training.models)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The notebook's recipe, exactly: CNN01 on the notebook's own fill, SGD lr 1e-4, batch 128, 2 epochs,
# every class oversampled to 7,500, 90/10 split per class, no schedule, no smoothing, no early stop.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "seed": {"model": "cnn01", "epochs": 2, "batch_size": 128, "lr": 1e-4, "optimizer": "sgd", "weight_decay": 0.0,
             "schedule": "constant", "label_smoothing": 0.0, "holdout": 0.1, "split": "card",
             "per_class_target": 7500, "augment": False, "series_augment": False, "patience": 0,
             "preprocess": "legacy"},
}


# A small training set (a field's few hundred labelled cards) gets too few optimiser steps from the
# default 8 epochs: the one-cycle schedule has annealed before the network has learnt. Measured on the
# 709 field cards (70/30, docs/TRAINING.md): series 0.786 with 8 epochs, 0.817 with 30 and patience 10.
MIN_STEPS = 240  # at least this many steps when the length is not given (30 epochs of 500 cards at batch 64)
MAX_AUTO_EPOCHS = 30


def length_for(recipe: Recipe, train_cards: int, world_size: int = 1) -> tuple[int, int]:
    """(epochs, patience) of the default recipe for ``train_cards`` training cards.

    Epochs grow so that a run makes at least :data:`MIN_STEPS` optimiser steps (never fewer than the
    recipe's, at most :data:`MAX_AUTO_EPOCHS`); patience grows with them to a third of the epochs, so the
    noisy holdout of a small set does not stop the run on one bad epoch. ``recipe.batch_size`` is per
    process, as with ``--procs``.
    """
    steps_per_epoch = max(1, -(-train_cards // (recipe.batch_size * world_size)))
    epochs = min(MAX_AUTO_EPOCHS, max(recipe.epochs, -(-MIN_STEPS // steps_per_epoch)))
    patience = recipe.patience if not recipe.patience else max(recipe.patience, epochs // 3)
    return epochs, patience


def resolve_recipe(args: argparse.Namespace) -> Recipe:
    """Preset values, then any flag given explicitly; the network defaults to the one for ``--input``.

    Raises:
        SystemExit: an unknown network, or one that reads another input than ``--input``.
    """
    values = Recipe().to_dict()
    values.update(PRESETS[args.preset])
    for key in values:
        v = getattr(args, key, None)
        if v is not None:
            values[key] = v
    kind = values.get("input") or "image"
    if values["model"] == "default" or (kind != "image" and getattr(args, "model", None) is None):
        values["model"] = DEFAULT_FOR_INPUT[kind]
    if values["model"] not in NETWORKS:
        raise SystemExit(f"error: unknown model {values['model']!r}; choose one of {', '.join(NETWORKS)} or default")
    if network_kind(values["model"]) != kind:
        raise SystemExit(f"error: model {values['model']!r} takes {network_kind(values['model'])} input, "
                         f"not --input {kind}")
    return Recipe.from_dict(values)


def fit_length_to_data(args: argparse.Namespace, recipe: Recipe, train_cards: int, size: int = 1,
                       announce: bool = True) -> Recipe:
    """The default preset on a small training set: more epochs and patience (:func:`length_for`).

    Only what the user left unset changes; ``--preset seed`` keeps the notebook's recipe exactly.
    """
    if args.preset != "default" or (args.epochs is not None and args.patience is not None):
        return recipe
    epochs, patience = length_for(recipe, train_cards, size)
    epochs = recipe.epochs if args.epochs is not None else epochs
    patience = recipe.patience if args.patience is not None else patience
    if announce and (epochs, patience) != (recipe.epochs, recipe.patience):
        print(f"small training set ({train_cards} cards): {epochs} epochs, patience {patience} "
              f"(--epochs/--patience set them)", flush=True)
    return dataclasses.replace(recipe, epochs=epochs, patience=patience)
