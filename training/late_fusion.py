"""Training the late-fusion dual model (``dualnet_late``): an image network and a series network, then a weight.

Why not one network trained end to end: on the field cards the PNG is drawn from the same samples as
the CSV, so the image adds a second view, not new information. Trained jointly (``dualnet``, its
variants ``dualnet_sum``/``dualnet_aux``/``dualnet_ens``), the image trunk — which fits ~500 training
cards fastest — pulled the result below the series network alone (docs/TRAINING.md). Here each
network is trained by the ordinary :func:`training.train.fit` with its own early stopping (its own run
folder, checkpoints, VisualDL run), and the mixture weight of the image is chosen on the holdout
afterwards, from a grid that includes 0 (the series network alone).

Choosing the weight on the holdout is a selection on the cards that are then scored, like the choice
of the best epoch that every run makes. :func:`crossfit_accuracy` measures what that selection is
worth: the weight is chosen on one half of the holdout and scored on the other, both ways round.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from shared.confidence import softmax
from shared.labels import CODES
from training.dual_models import LateFusionDual
from training.metrics import accuracy_and_loss, in_class, other_figures, per_class_report, twelve_way
from training.models import DEFAULT_FOR_INPUT
from training.recipe import Recipe
from training.train import fit, save_params
from training.warm_start import part_state

log = logging.getLogger(__name__)

WEIGHT_GRID = tuple(i / 8 for i in range(9))  # 0, 0.125, …, 1
PARTS = ("image", "series")


def mixture(p_image: np.ndarray, p_series: np.ndarray, w: float) -> np.ndarray:
    """The fused probabilities ``w * p_image + (1 - w) * p_series`` (what :class:`LateFusionDual` computes)."""
    return w * p_image + (1.0 - w) * p_series


def _twelve(p: np.ndarray) -> np.ndarray:
    """The twelve conditions' share of (mixed) probabilities over all outputs, renormalised: what the fused
    model's label and probabilities are (a softmax of the first twelve of ``log p``)."""
    p = p[:, : len(CODES)]
    return p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)


def choose_image_weight(p_image: np.ndarray, p_series: np.ndarray, labels: np.ndarray,
                        grid: tuple[float, ...] = WEIGHT_GRID) -> tuple[float, dict[float, float]]:
    """The grid weight with the best accuracy on ``labels``; ties go to the lower log loss, then the smaller weight.

    ``p_image``/``p_series``: each network's probabilities over all its outputs (12, or 13 with "other");
    accuracy and loss are the twelve conditions', on the cards of the twelve conditions.

    Returns:
        (weight, {weight: accuracy}).
    """
    keep = in_class(labels)
    p_image, p_series, labels = p_image[keep], p_series[keep], np.asarray(labels)[keep]
    table, best, best_key = {}, grid[0], None
    for w in grid:
        acc, loss = accuracy_and_loss(_twelve(mixture(p_image, p_series, w)), labels)
        table[w] = acc
        key = (-acc, loss, w)
        if best_key is None or key < best_key:
            best, best_key = w, key
    return best, table


def crossfit_accuracy(p_image: np.ndarray, p_series: np.ndarray, labels: np.ndarray, seed: int = 0,
                      grid: tuple[float, ...] = WEIGHT_GRID) -> float:
    """Holdout accuracy when no card is scored with a weight chosen on it: two halves, each scored with the other's."""
    keep = in_class(labels)
    p_image, p_series, labels = p_image[keep], p_series[keep], np.asarray(labels)[keep]
    order = np.random.default_rng(seed).permutation(len(labels))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    correct = 0
    for pick, score in (halves, halves[::-1]):
        w, _ = choose_image_weight(p_image[pick], p_series[pick], labels[pick], grid)
        fused = _twelve(mixture(p_image[score], p_series[score], w))
        correct += int((fused.argmax(axis=1) == labels[score]).sum())
    return correct / max(len(labels), 1)


def part_recipes(recipe: Recipe, image_model: str = DEFAULT_FOR_INPUT["image"],
                 series_model: str = DEFAULT_FOR_INPUT["series"]) -> dict[str, Recipe]:
    """The recipes of the two networks: the dual run's recipe with each part's network and input."""
    return {"image": dataclasses.replace(recipe, model=image_model, input="image"),
            "series": dataclasses.replace(recipe, model=series_model, input="series")}


def fit_late_fusion(recipe: Recipe, cs, train_idx: np.ndarray, test_idx: np.ndarray, run_dir: Path,
                    open_writer: Callable[[str], Any] | None = None, resume: bool = False, progress: bool = True,
                    rank: int = 0, size: int = 1, stop_after: int | None = None, series: np.ndarray | None = None,
                    init_state: dict | None = None, **fit_options):
    """Train the image and the series network (``run_dir/image``, ``run_dir/series``), then fuse them.

    Args:
        open_writer: ``suffix -> VisualDL writer`` (each part logs to its own run, ``<run>-image`` and
            ``<run>-series``); None: no logging.
        init_state: a late-fusion model's weights (``--init``): each part starts from its half.
        The rest as :func:`training.train.fit` (``stop_after`` applies to each part; ``fit_options``:
        ``epoch_pool``, ``holdout_groups``). Without a holdout the weight cannot be chosen: it stays
        that of ``init_state`` (0, the series network alone, without one).

    Returns:
        (:class:`training.dual_models.LateFusionDual` with the chosen weight, summary dict shaped like
        ``fit``'s, plus ``late_fusion`` with each part's figures, the weight table and the cross-fitted accuracy).
    """
    subs = part_recipes(recipe)
    parts, nets = {}, {}
    for part, sub in subs.items():
        writer = open_writer(part) if open_writer is not None and rank == 0 else None
        try:
            nets[part], parts[part] = fit(sub, cs, train_idx, test_idx, Path(run_dir) / part, writer=writer,
                                          resume=resume, progress=progress, rank=rank, size=size, stop_after=stop_after,
                                          series=series, init_state=None if init_state is None else
                                          part_state(init_state, part), **fit_options)
        finally:
            if writer is not None:
                writer.close()
        if parts[part].get("interrupted"):
            return nets[part], {**parts[part], "interrupted": True}

    labels = parts["series"]["labels"]
    # each network's probabilities over all its outputs (with "other": 13): the mixture is over all of them
    p_image, p_series = (softmax(parts[part]["outputs"]) if len(labels) else parts[part]["outputs"]
                         for part in PARTS)
    if len(labels):
        w, table = choose_image_weight(p_image, p_series, labels)
    else:  # no holdout to choose on: the starting model's weight, or the series network alone
        w = float(np.asarray(init_state["image_weight"]).ravel()[0]) if init_state and "image_weight" in init_state else 0.0
        table = {}
    fused = np.log(np.clip(mixture(p_image, p_series, w), 1e-12, None))  # what LateFusionDual returns
    t = twelve_way(fused, labels)
    acc, loss, cm = t["acc"], t["loss"], t["confusion"]
    net = LateFusionDual(nets["image"], nets["series"])  # the two trained networks, mixed
    net.set_image_weight(w)
    crossfit = crossfit_accuracy(p_image, p_series, labels, seed=recipe.seed) if len(labels) else float("nan")
    if rank == 0:  # the fused network's weights, like every run's best.pdparams
        save_params(Path(run_dir) / "best.pdparams", net)
    log.info("late fusion: image %.4f, series %.4f -> weight %.3f: %.4f (cross-fitted %.4f)",
             parts["image"]["final"]["holdout_acc"], parts["series"]["final"]["holdout_acc"], w, acc, crossfit)
    s = parts["series"]
    seconds = parts["image"]["train_seconds"] + s["train_seconds"]
    samples = parts["image"]["samples_seen"] + s["samples_seen"]
    summary = {
        "interrupted": False, "epoch": s["epoch"], "best_epoch": s["best_epoch"],
        "stopped_early": s["stopped_early"], "history": s["history"], "train_seconds": seconds,
        "samples_seen": samples, "samples_per_s": round(samples / max(seconds, 1e-9), 1),
        "final": {"holdout_acc": acc, "holdout_loss": loss}, "confusion": cm.tolist(),
        "per_class": per_class_report(cm), "probs": t["probs"], "labels": labels, "outputs": fused,
        "other": other_figures(fused, labels),
        "late_fusion": {
            "image_weight": w,
            "holdout_acc_crossfit": round(crossfit, 4),
            "holdout_acc_by_weight": {f"{k:g}": round(v, 4) for k, v in table.items()},
            **{part: {"model": subs[part].model,
                      "holdout_acc": round(parts[part]["final"]["holdout_acc"], 4),
                      "best_epoch": parts[part]["best_epoch"], "epochs_run": parts[part]["epoch"],
                      "stopped_early": parts[part]["stopped_early"]} for part in PARTS},
        },
    }
    return net, summary

