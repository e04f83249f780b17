"""How good a model is, as its ``meta.json`` says: each accuracy figure with what it was measured on, real cards first.

An engineer wants the figure that predicts what he will see on his wells, not the simulator's. A model folder's
``metrics`` holds several figures, written by different steps:

* ``field*`` entries (e.g. ``field_cards``; a cross-validated one carries ``folds``): real field cards --
  ``{"accuracy", "cards", "classes", "folds", "note", ...}``;
* ``holdout_acc`` with ``holdout_cards``: the cards held out of the training data -- simulated when the model
  was trained on the simulator (``data.source == "sim"``), the engineer's own cards otherwise;
* ``sim_fresh``: freshly simulated cards the model never saw.

:func:`accuracy_figures` lists what is there, in that order of relevance, and skips what is not: a model
without a field figure is shown with its holdout figure and where that came from.
"""

from __future__ import annotations

from typing import Any


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _field_figure(key: str, entry: dict[str, Any], trained_on_sim: bool) -> dict[str, Any] | None:
    accuracy = _number(entry.get("accuracy", entry.get("accuracy_mean")))
    if accuracy is None:
        return None
    cards = _count(entry.get("cards"))
    parts = [f"{cards} real field cards" if cards else "real field cards"]
    classes = entry.get("classes")
    if isinstance(classes, list) and classes:
        parts.append(f"{len(classes)} of the 12 conditions")
    folds = _count(entry.get("folds"))
    if folds:
        spread = _number(entry.get("accuracy_std", entry.get("std")))
        parts.append(f"{folds}-fold cross-validated" + (f", ± {spread:.3f}" if spread is not None else ""))
    elif trained_on_sim:
        parts.append("model trained on simulated cards only")
    figure = {"key": key, "accuracy": accuracy, "cards": cards, "real_cards": True, "measured_on": ", ".join(parts)}
    if isinstance(entry.get("note"), str):
        figure["note"] = entry["note"]
    return figure


def accuracy_figures(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The accuracy figures of a model folder, most telling first.

    Args:
        meta: the model's ``meta.json``.

    Returns:
        ``[{"key", "accuracy", "cards", "real_cards", "measured_on"[, "note"]}, ...]``: field figures
        (cross-validated before others), then the holdout (first when it is of the engineer's own cards),
        then fresh simulated cards. Empty when the folder records none.
    """
    metrics = meta.get("metrics") or {}
    if not isinstance(metrics, dict):
        return []
    source = str((meta.get("data") or {}).get("source", ""))
    trained_on_sim = source == "sim"
    field = [f for key, entry in metrics.items() if key.startswith("field") and isinstance(entry, dict)
             if (f := _field_figure(key, entry, trained_on_sim)) is not None]
    field.sort(key=lambda f: "cross-validated" not in f["measured_on"])
    figures = list(field)

    holdout = _number(metrics.get("holdout_acc", metrics.get("accuracy")))
    if holdout is not None:
        cards = _count(metrics.get("holdout_cards"))
        count = f"{cards} " if cards else ""
        if trained_on_sim:
            figures.append({"key": "holdout_acc", "accuracy": holdout, "cards": cards, "real_cards": False,
                            "measured_on": f"{count}simulated holdout cards (not real wells)"})
        elif source:
            own = {"key": "holdout_acc", "accuracy": holdout, "cards": cards, "real_cards": True,
                   "measured_on": f"{count}held-out cards of {source}, never trained on"}
            figures.insert(len(field), own)
        else:
            figures.append({"key": "holdout_acc", "accuracy": holdout, "cards": cards, "real_cards": False,
                            "measured_on": f"{count}held-out cards (source not recorded)"})

    fresh = metrics.get("sim_fresh")
    if isinstance(fresh, dict) and _number(fresh.get("accuracy")) is not None:
        cards = _count(fresh.get("cards"))
        figures.append({"key": "sim_fresh", "accuracy": float(fresh["accuracy"]), "cards": cards, "real_cards": False,
                        "measured_on": f"{str(cards) + ' ' if cards else ''}freshly simulated cards"})
    return figures
