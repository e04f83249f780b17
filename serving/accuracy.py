"""How good a model is, as its ``meta.json`` says: each accuracy figure with what it was measured on, real cards first.

An engineer wants the figure that predicts what he will see on his wells, not the simulator's. A model folder's
``metrics`` holds several figures, written by different steps:

* ``field*`` entries (e.g. ``field_cards``; a cross-validated one carries ``folds``): real field cards --
  ``{"accuracy", "cards", "classes", "folds", "note", ...}``;
* ``holdout_acc`` with ``holdout_cards``: the cards held out of the training data -- simulated when the model
  was trained on the simulator (``data.source == "sim"``), the engineer's own cards otherwise;
* ``cross_validation`` (``run.py --folds K --export``): the K-fold figure on the real source in the training mix
  (``mean``, ``std``, ``folds``, ``measured_on: {source, cards, classes}``) -- each card scored by a network
  trained without it;
* ``holdout_by_source``: the holdout per source of a several-source run (the simulator's is not real wells);
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


def _cross_validated_figure(entry: dict[str, Any]) -> dict[str, Any] | None:
    """``metrics.cross_validation`` as a field figure (``None`` when it was run on simulated cards)."""
    measured = entry.get("measured_on") or {}
    if not isinstance(measured, dict) or measured.get("source") == "sim":
        return None
    figure = _field_figure("cross_validation", {"accuracy": entry.get("mean"), "std": entry.get("std"),
                                                "folds": entry.get("folds"), "cards": measured.get("cards"),
                                                "classes": measured.get("classes"), "note": entry.get("note")}, False)
    if figure is not None and measured.get("source") not in (None, "field"):
        figure["measured_on"] = figure["measured_on"].replace("real field cards", f"real cards of {measured['source']}")
    return figure


def _holdout_figure(key: str, accuracy: float, cards: int | None, source: str) -> dict[str, Any]:
    """One holdout figure: of simulated cards (``source == "sim"``, not real wells), of a named source's
    cards (real), or of cards whose source was not recorded."""
    count = f"{cards} " if cards else ""
    if source == "sim":
        real, measured = False, f"{count}simulated holdout cards (not real wells)"
    elif source:
        real, measured = True, f"{count}held-out cards of {source}, never trained on"
    else:
        real, measured = False, f"{count}held-out cards (source not recorded)"
    return {"key": key, "accuracy": accuracy, "cards": cards, "real_cards": real, "measured_on": measured}


def _holdout_figures(metrics: dict[str, Any], source: str, trained_on_sim: bool) -> list[dict[str, Any]]:
    """The holdout figures, per source when the run had several."""
    by_source = metrics.get("holdout_by_source")
    if isinstance(by_source, dict) and by_source:
        # a source without a holdout accuracy had every card trained on (e.g. --folds --export)
        return [_holdout_figure(f"holdout_acc/{name}", accuracy, _count(entry.get("holdout_cards")), name)
                for name, entry in by_source.items()
                if (accuracy := _number((entry or {}).get("holdout_acc"))) is not None]
    holdout = _number(metrics.get("holdout_acc", metrics.get("accuracy")))
    if holdout is None:
        return []
    return [_holdout_figure("holdout_acc", holdout, _count(metrics.get("holdout_cards")),
                            "sim" if trained_on_sim else source)]


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
    cross = metrics.get("cross_validation")
    if isinstance(cross, dict) and (figure := _cross_validated_figure(cross)) is not None:
        field.append(figure)
    field.sort(key=lambda f: "cross-validated" not in f["measured_on"])
    holdout = _holdout_figures(metrics, source, trained_on_sim)
    figures = [*field, *(f for f in holdout if f["real_cards"]), *(f for f in holdout if not f["real_cards"])]

    fresh = metrics.get("sim_fresh")
    if isinstance(fresh, dict) and _number(fresh.get("accuracy")) is not None:
        cards = _count(fresh.get("cards"))
        figures.append({"key": "sim_fresh", "accuracy": float(fresh["accuracy"]), "cards": cards, "real_cards": False,
                        "measured_on": f"{str(cards) + ' ' if cards else ''}freshly simulated cards"})
    return figures
