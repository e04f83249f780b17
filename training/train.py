"""The training loop: recipes, ``train_one_epoch``, ``evaluate``, ``fit`` (checkpoints, resume, early stop,
data-parallel, VisualDL).

Read top to bottom: :class:`Recipe` is everything that defines a run; :func:`fit` builds the network and
optimiser, restores a checkpoint when resuming, then per epoch trains, evaluates on the holdout, logs and
checkpoints (atomically), and stops early when the holdout stops improving.

Determinism: the shuffle of epoch ``e`` comes from ``(seed, e)`` and Paddle's generator is reseeded from
``(seed, e)`` at the start of each epoch, so a run resumed from the checkpoint of epoch ``e`` continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F

from shared.atomic import atomic_directory, atomic_write_text
from shared.labels import CODES
from training import vdl
from training.data import DEFAULT_SIM, CardSet, augmented_inputs
from training.models import build_model, split_stem

log = logging.getLogger(__name__)

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
    well_pattern: str = r"^(.+?)[_\-]"
    per_class_target: int = 0
    augment: bool = False  # image: outline jitter before the shared fill (re-fills every card: slower)
    series_augment: bool = True  # series: shift, time warp, load noise (cheap; field 70/30 0.817 -> 0.850)
    patience: int = 4
    preprocess: str = "default"
    sim_per_class: int = DEFAULT_SIM["per_class"]
    input: str = "image"  # image | series | dual (what the network takes; see training.series_models)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
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


def length_for(recipe: "Recipe", train_cards: int, world_size: int = 1) -> tuple[int, int]:
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


# ------------------------------------------------------------------------------------------
# Distributed helpers (no-ops in a single process)
# ------------------------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment."""
    return int(os.environ.get("PADDLE_TRAINER_ID", "0")), int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


_PARALLEL_READY = False


def init_distributed() -> tuple[int, int]:
    """Initialise data-parallel training when started by ``paddle.distributed.launch``; return (rank, world)."""
    global _PARALLEL_READY
    rank, size = world()
    if size > 1 and not _PARALLEL_READY:
        paddle.distributed.init_parallel_env()
        _PARALLEL_READY = True
    if size > 1:
        rank, size = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    return rank, size


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, size: int = 1) -> np.ndarray:
    """The distributed sampler: a permutation from (seed, epoch), dealt round-robin to the ranks.

    Every rank gets the same number of samples (the remainder is dropped), so all ranks run the same
    number of steps, which data-parallel all-reduce needs.
    """
    perm = np.random.default_rng(np.random.SeedSequence((seed, 1000 + epoch))).permutation(n)
    per_rank = n // size
    return perm[rank::size][:per_rank]


def _sync_buffers(layer: paddle.nn.Layer, size: int) -> None:
    # BatchNorm running statistics are per process under DataParallel; rank 0's become everyone's so that
    # all ranks evaluate, early-stop and checkpoint identically.
    if size > 1:
        for buf in layer.buffers():
            paddle.distributed.broadcast(buf, src=0)


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


class Inputs:
    """Model inputs of a :class:`CardSet`, after the network's parameter-free stem.

    For ``cardnet`` the stem (2 x 2 average pool) is applied once to every card and kept; for the
    notebook networks (no stem) batches are converted from the ``uint8`` cache on the fly.
    """

    def __init__(self, cs: CardSet, stem, batch: int = 256):
        self.cs = cs
        self.stem = stem
        self.pre = None
        if stem is not None:
            chunks = []
            with paddle.no_grad():
                for s in range(0, len(cs), batch):
                    x = paddle.to_tensor(cs.model_input(np.arange(s, min(s + batch, len(cs)))))
                    chunks.append(stem(x).numpy())
            self.pre = np.concatenate(chunks) if chunks else None

    def batch(self, idx: np.ndarray, augment_rng: np.random.Generator | None = None, config=None,
              series_rng: np.random.Generator | None = None) -> paddle.Tensor:
        """Inputs of cards ``idx``; outline-jittered when ``augment_rng`` is given (``series_rng``: unused here)."""
        if augment_rng is not None:
            x = paddle.to_tensor(augmented_inputs(self.cs, idx, augment_rng, config))
            if self.stem is not None:
                with paddle.no_grad():
                    x = self.stem(x)
            return x
        if self.pre is not None:
            return paddle.to_tensor(self.pre[idx])
        return paddle.to_tensor(self.cs.model_input(idx))


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
        sched = paddle.optimizer.lr.OneCycleLR(recipe.lr, total_steps=total + 1, phase_pct=0.25,
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

    Most networks return logits. A multi-head network (``training.series_models.DualBody`` with
    per-trunk heads) returns ``(prediction, [heads…])`` in training mode: every head is trained on the
    labels (summed cross-entropies) and ``prediction`` is what the network answers with in eval mode,
    used for the training accuracy.
    """
    if isinstance(out, (tuple, list)):
        prediction, heads = out
        loss = paddle.add_n([F.cross_entropy(h, y, label_smoothing=label_smoothing) for h in heads])
        return prediction, loss
    return out, F.cross_entropy(out, y, label_smoothing=label_smoothing)


def train_one_epoch(body, opt, sched, inputs: Inputs, labels: np.ndarray, order: np.ndarray, recipe: Recipe,
                    epoch: int, writer=None, progress: bool = True, log_every: int = 20,
                    global_step: int = 0, preprocess_config=None) -> dict[str, float]:
    """One pass over ``order`` (indices into ``inputs``). Returns loss, accuracy, samples/s, steps."""
    from tqdm import tqdm

    body.train()
    rng = np.random.default_rng(np.random.SeedSequence((recipe.seed, 2000 + epoch)))
    aug_rng = rng if recipe.augment else None  # image inputs
    series_rng = rng if recipe.series_augment else None  # series inputs (ignored by image-only inputs)
    n, bs = len(order), recipe.batch_size
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(total=n, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="card", disable=not progress,
               mininterval=1.0, leave=False)
    start = time.perf_counter()
    step = global_step
    for s in range(0, n, bs):
        idx = order[s:s + bs]
        x = inputs.batch(idx, aug_rng, preprocess_config, series_rng=series_rng)
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


def evaluate(body, inputs: Inputs, labels: np.ndarray, idx: np.ndarray, batch_size: int = 256) -> dict[str, Any]:
    """Holdout loss (plain cross-entropy), accuracy, probabilities and confusion matrix."""
    body.eval()
    probs = []
    with paddle.no_grad():
        for s in range(0, len(idx), batch_size):
            probs.append(F.softmax(body(inputs.batch(idx[s:s + batch_size])), axis=-1).numpy())
    probs = np.concatenate(probs) if probs else np.zeros((0, len(CODES)), np.float32)
    y = labels[idx]
    acc, loss = accuracy_and_loss(probs, y)
    pred = probs.argmax(axis=1) if len(y) else np.zeros(0, np.int64)
    return {"loss": loss, "acc": acc, "probs": probs, "labels": y, "pred": pred, "confusion": confusion_matrix(y, pred)}


def accuracy_and_loss(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of class probabilities ``[n, classes]``; NaNs for no cards."""
    if not len(labels):
        return float("nan"), float("nan")
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))
    return float((probs.argmax(axis=1) == labels).mean()), loss


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n: int = len(CODES)) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (np.asarray(y, np.int64), np.asarray(pred, np.int64)), 1)
    return cm


def per_class_report(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    out = {}
    for i, code in enumerate(CODES):
        tp = cm[i, i]
        p = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        r = tp / cm[i].sum() if cm[i].sum() else 0.0
        out[code] = {"precision": round(float(p), 4), "recall": round(float(r), 4),
                     "f1": round(float(2 * p * r / (p + r)) if p + r else 0.0, 4), "support": int(cm[i].sum())}
    return out


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
    import hashlib

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
        preprocess_config=None, series: np.ndarray | None = None) -> tuple[paddle.nn.Layer, dict[str, Any]]:
    """Train ``recipe.model`` on ``cs[train_idx]``, evaluating on ``cs[test_idx]`` after every epoch.

    Args:
        run_dir: the run folder (checkpoint/, best.pdparams, history.json). Only rank 0 writes.
        writer: VisualDL writer (None: no logging).
        resume: continue from ``run_dir/checkpoint`` when it exists.
        stop_after: stop (as if killed) after this many epochs of this invocation — for tests.
        series: ``float32 [N, 5, L]`` aligned with ``cs``, for ``recipe.input`` ``series`` or ``dual``.

    Returns:
        (the trained network with the best holdout weights, summary dict).
    """
    paddle.seed(recipe.seed)
    if recipe.input == "image":
        net = build_model(recipe.model)
        stem, body = split_stem(net)
        inputs = Inputs(cs, stem)
    else:
        from training.series_data import make_inputs

        net, body, inputs = make_inputs(recipe.model, cs, series)
    labels = cs.labels
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
    elif rank == 0:
        vdl.log_card_images(writer, cs.examples())

    epochs_run = 0
    while state["epoch"] < recipe.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        paddle.seed(recipe.seed * 1000 + epoch)  # dropout masks of this epoch, reproducible on resume
        order = train_idx[epoch_order(len(train_idx), epoch, recipe.seed, rank, size)]
        tr = train_one_epoch(train_body, opt, sched, inputs, labels, order, recipe, epoch,
                             writer=writer, progress=progress and rank == 0, global_step=state["global_step"],
                             preprocess_config=preprocess_config)
        _sync_buffers(body, size)
        ev = evaluate(body, inputs, labels, test_idx)
        state["global_step"] += tr["steps"]
        state["train_seconds"] += tr["seconds"]
        state["samples_seen"] += len(order) * size
        record = {"epoch": epoch + 1, "train_loss": round(tr["loss"], 5), "train_acc": round(tr["acc"], 5),
                  "holdout_loss": round(ev["loss"], 5), "holdout_acc": round(ev["acc"], 5),
                  "lr": tr["lr"], "samples_per_s": round(tr["samples_per_s"] * size, 1)}
        state["history"].append(record)
        improved = ev["acc"] > state["best_acc"] or (ev["acc"] == state["best_acc"] and ev["loss"] < state["best_loss"])
        if improved:
            state.update(best_acc=ev["acc"], best_loss=ev["loss"], best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        if recipe.patience and state["bad_epochs"] >= recipe.patience:
            state["stopped_early"] = True
        state["epoch"] = epoch + 1
        if rank == 0:
            log.info("epoch %d/%d  train loss %.4f acc %.4f | holdout loss %.4f acc %.4f | %.0f cards/s",
                     epoch + 1, recipe.epochs, tr["loss"], tr["acc"], ev["loss"], ev["acc"], record["samples_per_s"])
            vdl.log_scalars(writer, epoch + 1, {"train/loss": tr["loss"], "train/acc": tr["acc"],
                                                "holdout/loss": ev["loss"], "holdout/acc": ev["acc"],
                                                "train/lr": tr["lr"], "train/samples_per_s": record["samples_per_s"]})
            vdl.log_histograms(writer, body, epoch + 1)
            vdl.log_pr_roc(writer, ev["labels"], ev["probs"], epoch + 1)
            vdl.log_confusion(writer, ev["confusion"], epoch + 1)
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
    final = evaluate(body, inputs, labels, test_idx)
    log.info("rank %d of %d: parameters sha1 %s", rank, size, parameters_digest(net))
    samples_per_s = state["samples_seen"] / max(state["train_seconds"], 1e-9)
    summary = {**state, "interrupted": False, "final": {"holdout_acc": final["acc"], "holdout_loss": final["loss"]},
               "confusion": final["confusion"].tolist(), "per_class": per_class_report(final["confusion"]),
               "samples_per_s": round(samples_per_s, 1), "probs": final["probs"], "labels": final["labels"]}
    return net, summary
