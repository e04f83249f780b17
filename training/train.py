"""The training loop: ``make_optimizer``, ``train_one_epoch``, ``evaluate``, checkpoints and ``fit``.

Read top to bottom: :func:`fit` builds the network named by the :class:`training.recipe.Recipe` (from the
registry, :mod:`training.models`), its inputs (:func:`training.inputs.make_inputs`) and optimiser,
restores a checkpoint when resuming, then per epoch trains, evaluates on the holdout, logs to VisualDL
and checkpoints (atomically), and stops early when the holdout stops improving. Data-parallel runs go
through the helpers of :mod:`training.distributed`.

Determinism: the shuffle of epoch ``e`` comes from ``(seed, e)`` and Paddle's generator is reseeded from
``(seed, e)`` at the start of each epoch, so a run resumed from the checkpoint of epoch ``e`` continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paddle
import paddle.nn.functional as F

from shared.atomic import atomic_directory, atomic_write_text
from shared.labels import CODES
from training import vdl
from training.data import CardSet
from training.distributed import epoch_order, sync_buffers
from training.inputs import ModelInputs, make_inputs
from training.classes import num_outputs
from training.metrics import other_figures, per_class_report, twelve_way
from training.models import build_model, network_kind, split_stem
from training.recipe import OPTIMIZERS, SCHEDULES, Recipe
from training.warm_start import apply_state

log = logging.getLogger(__name__)
OTHER_SCALARS = ("other_recall", "in_class_called_other")  # the "other" class's figures logged per epoch


# ------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------


def make_optimizer(recipe: Recipe, params, steps_per_epoch: int):
    """(optimizer, LR scheduler) for a recipe; the scheduler is stepped once per batch."""
    total = max(1, recipe.epochs * steps_per_epoch)
    if recipe.schedule == "constant":
        sched = paddle.optimizer.lr.LambdaDecay(recipe.lr, lambda step: 1.0)
    elif recipe.schedule == "cosine":
        sched = paddle.optimizer.lr.CosineAnnealingDecay(recipe.lr, T_max=total)
    elif recipe.schedule == "onecycle":
        # Paddle's one-cycle divides by the warm-up's length in steps, zero below 8 steps: a run that short
        # (a handful of cards, one epoch) gets the first part of an 8-step cycle
        sched = paddle.optimizer.lr.OneCycleLR(recipe.lr, total_steps=max(total + 1, 8), phase_pct=0.25,
                                               end_learning_rate=recipe.lr / 1000)
    else:
        raise ValueError(f"unknown schedule {recipe.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    wd = recipe.weight_decay or None
    if recipe.optimizer == "sgd":
        opt = paddle.optimizer.SGD(sched, parameters=params, weight_decay=wd)
    elif recipe.optimizer == "momentum":
        opt = paddle.optimizer.Momentum(sched, momentum=0.9, parameters=params, weight_decay=wd, use_nesterov=True)
    elif recipe.optimizer == "adam":
        opt = paddle.optimizer.Adam(sched, parameters=params, weight_decay=wd)
    elif recipe.optimizer == "adamw":
        opt = paddle.optimizer.AdamW(sched, parameters=params, weight_decay=recipe.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    return opt, sched


def training_loss(out, y: paddle.Tensor, label_smoothing: float) -> tuple[paddle.Tensor, paddle.Tensor]:
    """(prediction logits, loss) from what a network returns in training mode.

    Most networks return logits. A multi-head network (``training.dual_models.DualBody`` with
    per-trunk heads) returns ``(prediction, [heads…])`` in training mode: every head is trained on the
    labels (summed cross-entropies) and ``prediction`` is what the network answers with in eval mode,
    used for the training accuracy.
    """
    if isinstance(out, (tuple, list)):
        prediction, heads = out
        loss = paddle.add_n([F.cross_entropy(h, y, label_smoothing=label_smoothing) for h in heads])
        return prediction, loss
    return out, F.cross_entropy(out, y, label_smoothing=label_smoothing)


def trunk_parameters(net: paddle.nn.Layer) -> list:
    """The parameters ``--freeze-epochs`` holds still: the trainable ones outside the fully connected
    (``Linear``) layers. Ask before freezing: a frozen parameter no longer looks trainable."""
    head = {id(p) for layer in net.sublayers(include_self=True) if isinstance(layer, paddle.nn.Linear)
            for p in layer.parameters(include_sublayers=False)}
    return [p for p in net.parameters() if id(p) not in head and not p.stop_gradient]


def freeze(params: list, frozen: bool) -> None:
    """Hold ``params`` still (``frozen``) or let them train again."""
    for p in params:
        p.stop_gradient = frozen


def train_one_epoch(body, opt, sched, inputs: ModelInputs, labels: np.ndarray, order: np.ndarray, recipe: Recipe,
                    epoch: int, writer=None, progress: bool = True, log_every: int = 20,
                    global_step: int = 0, frozen: bool = False) -> dict[str, float]:
    """One pass over ``order`` (indices into ``inputs``). Returns loss, accuracy, samples/s, steps.

    ``frozen``: the trunk is held still (:func:`freeze`), and its batch norms keep the running
    statistics they came with instead of re-estimating them from a handful of cards.
    """
    from tqdm import tqdm

    body.train()
    if frozen:
        for layer in body.sublayers():
            if isinstance(layer, (paddle.nn.BatchNorm1D, paddle.nn.BatchNorm2D)):
                layer.eval()
    # the epoch's augmentation draws: the inputs vary a batch only when made with augmentation on
    rng = np.random.default_rng(np.random.SeedSequence((recipe.seed, 2000 + epoch)))
    n, bs = len(order), recipe.batch_size
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(total=n, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="card", disable=not progress,
               mininterval=1.0, leave=False)
    start = time.perf_counter()
    step = global_step
    for s in range(0, n, bs):
        idx = order[s:s + bs]
        x = inputs.batch(idx, rng)
        y = paddle.to_tensor(labels[idx])
        logits, loss = training_loss(body(x), y, recipe.label_smoothing)
        loss.backward()
        opt.step()
        opt.clear_grad()
        lr = opt.get_lr()
        sched.step()
        step += 1
        pred = logits.argmax(axis=-1).numpy()
        batch_loss = float(loss)
        loss_sum += batch_loss * len(idx)
        correct += int((pred == labels[idx]).sum())
        seen += len(idx)
        bar.update(len(idx))
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.2e}", refresh=False)
        if writer is not None and step % log_every == 0:
            vdl.log_scalars(writer, step, {"batch/loss": batch_loss, "batch/acc": float((pred == labels[idx]).mean()),
                                           "batch/lr": lr})
    bar.close()
    elapsed = time.perf_counter() - start
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1), "samples_per_s": seen / max(elapsed, 1e-9),
            "seconds": elapsed, "steps": step - global_step, "lr": lr if seen else 0.0}


def predict(net, inputs: ModelInputs, idx: np.ndarray, batch_size: int = 256, unpack: bool = False) -> np.ndarray:
    """The network's raw outputs ``[n, 12 | 13]`` for cards ``idx`` (eval mode, no augmentation): logits
    (a late-fusion dual: log-probabilities), what the exported model returns.
    :func:`training.metrics.class_probabilities` turns them into the twelve conditions' probabilities.

    Args:
        net: a network body (what the training loop trains: one argument, a list for dual inputs) or,
            with ``unpack``, a whole network whose dual inputs are two arguments (``net(image, series)``).
    """
    net.eval()
    outputs = []
    with paddle.no_grad():
        for s in range(0, len(idx), batch_size):
            x = inputs.batch(idx[s:s + batch_size])
            outputs.append((net(*x) if unpack and isinstance(x, list) else net(x)).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, len(CODES)), np.float32)


def evaluate(body, inputs: ModelInputs, labels: np.ndarray, idx: np.ndarray, batch_size: int = 256,
             groups: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Holdout loss (plain cross-entropy) and accuracy over the twelve conditions, probabilities, confusion,
    and what the "other" output does (a network with a 13th output).

    Accuracy, loss and confusion count the holdout cards of the twelve conditions only, with the
    softmax of the first twelve outputs (:func:`training.metrics.twelve_way`); ``other`` has the
    "other" class's own figures (:func:`training.metrics.other_figures`), None for a twelve-output network.
    ``groups``: name -> boolean mask over ``idx`` (e.g. the cards of each source); their accuracies are
    returned under ``by_group``.
    """
    outputs = predict(body, inputs, idx, batch_size)
    y = labels[idx]
    t = twelve_way(outputs, y)
    by_group = {name: float((t["pred"][m & t["mask"]] == y[m & t["mask"]]).mean()) if (m & t["mask"]).any()
                else float("nan") for name, m in (groups or {}).items()}
    return {"loss": t["loss"], "acc": t["acc"], "outputs": outputs, "probs": t["probs"], "labels": y,
            "pred": t["pred"], "confusion": t["confusion"], "by_group": by_group, "other": other_figures(outputs, y)}


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


def _rename_opt_state(opt_state: dict, mapping: dict[str, str]) -> dict:
    # Optimiser accumulators are keyed by Paddle's global parameter names (``conv2d_8.w_0_moment1_0``),
    # which depend on how many layers the process built before; key them by structured names instead.
    out = {}
    for key, value in opt_state.items():
        match = max((k for k in mapping if key == k or key.startswith(k + "_")), key=len, default=None)
        out[mapping[match] + key[len(match):] if match else key] = value
    return out


def save_checkpoint(ckpt_dir: Path, net, opt, sched, state: dict[str, Any]) -> None:
    """Model, optimiser, scheduler and loop state of the last finished epoch, replaced atomically as a folder."""
    portable = {p.name: f"@{sn}" for sn, p in net.named_parameters()}
    with atomic_directory(ckpt_dir) as tmp:
        paddle.save(net.state_dict(), str(tmp / "model.pdparams"))
        paddle.save(_rename_opt_state(opt.state_dict(), portable), str(tmp / "optimizer.pdopt"))
        paddle.save(sched.state_dict(), str(tmp / "scheduler.pdstate"))
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=1))


def load_checkpoint(ckpt_dir: Path, net, opt, sched) -> dict[str, Any]:
    net.set_state_dict(paddle.load(str(ckpt_dir / "model.pdparams")))
    local = {f"@{sn}": p.name for sn, p in net.named_parameters()}
    opt.set_state_dict(_rename_opt_state(paddle.load(str(ckpt_dir / "optimizer.pdopt")), local))
    sched.set_state_dict(paddle.load(str(ckpt_dir / "scheduler.pdstate")))
    return json.loads((ckpt_dir / "state.json").read_text())


def parameters_digest(net) -> str:
    """SHA-1 of all parameters and buffers, to check that data-parallel ranks hold the same network."""
    h = hashlib.sha1()
    for name, value in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(value.numpy()).tobytes())
    return h.hexdigest()


def save_params(path: Path, net) -> None:
    """Write ``net``'s state dict to ``path`` atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    paddle.save(net.state_dict(), str(tmp))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


def fit(recipe: Recipe, cs: CardSet, train_idx: np.ndarray, test_idx: np.ndarray, run_dir: Path, writer=None,
        resume: bool = False, progress: bool = True, rank: int = 0, size: int = 1, stop_after: int | None = None,
        series: np.ndarray | None = None, init_state: dict | None = None,
        epoch_pool: Callable[[int], np.ndarray] | None = None,
        holdout_groups: dict[str, np.ndarray] | None = None) -> tuple[paddle.nn.Layer, dict[str, Any]]:
    """Train ``recipe.model`` on ``cs[train_idx]``, evaluating on ``cs[test_idx]`` after every epoch.

    With an empty ``test_idx`` the run has no holdout: it trains the recipe's epochs (no early stop)
    and keeps the last epoch's weights.

    Args:
        run_dir: the run folder (checkpoint/, best.pdparams, history.json). Only rank 0 writes.
        writer: VisualDL writer (None: no logging).
        resume: continue from ``run_dir/checkpoint`` when it exists.
        stop_after: stop (as if killed) after this many epochs of this invocation — for tests.
        series: ``float32 [N, 5, L]`` aligned with ``cs``, for ``recipe.input`` ``series`` or ``dual``.
        init_state: the starting weights (``--init``, :mod:`training.warm_start`) instead of random ones.
        epoch_pool: ``epoch -> training card indices`` of that epoch, as long as ``train_idx``
            (:class:`training.sources.ShareSampler`); default ``train_idx`` every epoch.
        holdout_groups: name -> boolean mask over ``test_idx``: each group's holdout accuracy is logged
            (``holdout_by_source/<name>``) and kept in the history.

    Returns:
        (the trained network with the best holdout weights, summary dict).

    Raises:
        ValueError: ``freeze_epochs`` in a data-parallel run; training.warm_start.InitError: ``init_state``
            does not fit the network.
    """
    if recipe.freeze_epochs and size > 1:
        raise ValueError("--freeze-epochs is not supported in data-parallel runs (--procs)")
    paddle.seed(recipe.seed)
    net = build_model(recipe.model, num_classes=num_outputs(recipe.other_class))
    if init_state is not None:
        apply_state(net, init_state)
    stem, body = split_stem(net)  # the body trains on inputs kept after the parameter-free stem
    trunk = trunk_parameters(body) if recipe.freeze_epochs else []
    inputs = make_inputs(network_kind(recipe.model), cs, series, stem, augment_image=recipe.augment,
                         augment_series=recipe.series_augment, rerender_image=recipe.render_augment)
    labels = cs.labels
    validate = len(test_idx) > 0
    per_rank = len(train_idx) // size
    steps_per_epoch = -(-per_rank // recipe.batch_size)
    opt, sched = make_optimizer(recipe, body.parameters(), steps_per_epoch)
    train_body = paddle.DataParallel(body) if size > 1 else body

    ckpt = run_dir / "checkpoint"
    state = {"epoch": 0, "global_step": 0, "history": [], "best_acc": -1.0, "best_loss": float("inf"),
             "best_epoch": -1, "bad_epochs": 0, "recipe": recipe.to_dict(), "train_seconds": 0.0,
             "samples_seen": 0, "stopped_early": False}
    if resume and (ckpt / "state.json").is_file():
        saved = json.loads((ckpt / "state.json").read_text())
        if saved.get("recipe") != recipe.to_dict():
            diff = {k: (saved.get("recipe", {}).get(k), v) for k, v in recipe.to_dict().items()
                    if saved.get("recipe", {}).get(k) != v}
            raise ValueError(f"cannot resume {run_dir}: the recipe differs from the checkpoint's (saved, now): {diff}")
        state = load_checkpoint(ckpt, net, opt, sched)
        log.info("resuming %s after epoch %d", run_dir.name, state["epoch"])
    else:
        if rank == 0:
            vdl.log_card_images(writer, cs.examples())
        if init_state is not None and validate:  # where fine-tuning starts: the starting model on this holdout
            ev0 = evaluate(body, inputs, labels, test_idx, groups=holdout_groups)
            state["init_holdout"] = {"holdout_acc": ev0["acc"], "holdout_loss": ev0["loss"]}
            if rank == 0:
                log.info("epoch 0 (the --init model): holdout loss %.4f acc %.4f", ev0["loss"], ev0["acc"])
                vdl.log_scalars(writer, 0, {"holdout/loss": ev0["loss"], "holdout/acc": ev0["acc"]})

    epochs_run = 0
    while state["epoch"] < recipe.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        paddle.seed(recipe.seed * 1000 + epoch)  # dropout masks of this epoch, reproducible on resume
        pool = train_idx if epoch_pool is None else epoch_pool(epoch)
        order = pool[epoch_order(len(pool), epoch, recipe.seed, rank, size)]
        frozen = epoch < recipe.freeze_epochs
        freeze(trunk, frozen)
        tr = train_one_epoch(train_body, opt, sched, inputs, labels, order, recipe, epoch,
                             writer=writer, progress=progress and rank == 0, global_step=state["global_step"],
                             frozen=frozen)
        sync_buffers(body, size)
        state["global_step"] += tr["steps"]
        state["train_seconds"] += tr["seconds"]
        state["samples_seen"] += len(order) * size
        record = {"epoch": epoch + 1, "train_loss": round(tr["loss"], 5), "train_acc": round(tr["acc"], 5),
                  "lr": tr["lr"], "samples_per_s": round(tr["samples_per_s"] * size, 1)}
        if validate:
            ev = evaluate(body, inputs, labels, test_idx, groups=holdout_groups)
            record.update(holdout_loss=round(ev["loss"], 5), holdout_acc=round(ev["acc"], 5))
            if ev["by_group"]:
                record["holdout_acc_by_source"] = {k: round(v, 5) for k, v in ev["by_group"].items() if v == v}
            if ev["other"]:
                record.update({f"holdout_{k}": v for k, v in ev["other"].items() if k in OTHER_SCALARS})
            improved = ev["acc"] > state["best_acc"] or (ev["acc"] == state["best_acc"]
                                                         and ev["loss"] < state["best_loss"])
        else:  # no holdout: the last epoch is the result
            ev, improved = None, True
        state["history"].append(record)
        if improved:
            state.update(best_acc=ev["acc"] if ev else -1.0, best_loss=ev["loss"] if ev else float("inf"),
                         best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        if recipe.patience and state["bad_epochs"] >= recipe.patience:
            state["stopped_early"] = True
        state["epoch"] = epoch + 1
        if rank == 0:
            log.info("epoch %d/%d  train loss %.4f acc %.4f | %s | %.0f cards/s", epoch + 1, recipe.epochs, tr["loss"],
                     tr["acc"], f"holdout loss {ev['loss']:.4f} acc {ev['acc']:.4f}" if ev else "no holdout",
                     record["samples_per_s"])
            vdl.log_scalars(writer, epoch + 1, {"train/loss": tr["loss"], "train/acc": tr["acc"],
                                                "train/lr": tr["lr"], "train/samples_per_s": record["samples_per_s"]})
            if ev is not None:
                vdl.log_scalars(writer, epoch + 1, {"holdout/loss": ev["loss"], "holdout/acc": ev["acc"],
                                                    **{f"holdout_by_source/{k}": v for k, v in ev["by_group"].items()
                                                       if v == v},  # a source without holdout cards: NaN, skipped
                                                    **{f"holdout/{k}": v for k, v in (ev["other"] or {}).items()
                                                       if k in OTHER_SCALARS and v is not None}})
                vdl.log_pr_roc(writer, ev["labels"], ev["probs"], epoch + 1, outputs=ev["outputs"])
                vdl.log_confusion(writer, ev["confusion"], epoch + 1)
            vdl.log_histograms(writer, body, epoch + 1)
            if writer is not None:
                writer.flush()
            if improved:
                save_params(run_dir / "best.pdparams", net)
            save_checkpoint(ckpt, net, opt, sched, state)
            atomic_write_text(run_dir / "history.json", json.dumps(state["history"], indent=1))
        epochs_run += 1
        if stop_after is not None and epochs_run >= stop_after and state["epoch"] < recipe.epochs:
            return net, {"interrupted": True, **state}
    if size > 1:
        paddle.distributed.barrier()
    # Keep the best holdout weights (every rank reads rank 0's file, so all export the same network).
    best = run_dir / "best.pdparams"
    if best.is_file():
        net.set_state_dict(paddle.load(str(best)))
    freeze(trunk, False)
    final = evaluate(body, inputs, labels, test_idx)
    log.info("rank %d of %d: parameters sha1 %s", rank, size, parameters_digest(net))
    samples_per_s = state["samples_seen"] / max(state["train_seconds"], 1e-9)
    summary = {**state, "interrupted": False, "final": {"holdout_acc": final["acc"], "holdout_loss": final["loss"]},
               "confusion": final["confusion"].tolist(), "per_class": per_class_report(final["confusion"]),
               "samples_per_s": round(samples_per_s, 1), "probs": final["probs"], "labels": final["labels"],
               "outputs": final["outputs"], "other": final["other"]}
    return net, summary
