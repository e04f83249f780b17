"""Which "none of the twelve" method? The measurements behind issue #14's ``unknown``.

    nice -n 10 python scripts/open_set_study.py [--sim-per-class 150] [--epochs 8] [--folds 2] [--oe-folds 1]
        [--kinds image,series] [--cache-dir /tmp/open-set] [--json report.json]

Three questions, each answered on cards the measured model never saw:

1. **Not-a-card pictures** (``tests/notcards.py``, seeds 2 and 3: 144 pictures the structural check
   was not designed on): what share the service already refuses (``CardError`` → 422), the structural
   check (``shared.card_check``) rejects, an open-set score flags, and all of them together.
2. **Cards of conditions outside the twelve**: the field set's 491 cards of five other conditions.
   For each condition left out, AUROC of telling it from the in-class field cards, per method:
   max-softmax, max-logit, energy, Mahalanobis on penultimate features (shared covariance), kNN on
   normalised features — none of which sees an unknown card — and outlier exposure (a 13th "other"
   class trained on the *other four* conditions plus generated not-a-card pictures, seed 10).
3. **False unknowns**: the share of in-class field cards called unknown at the thresholds, chosen to
   accept 95 % of held-out in-class cards.

Models:

* *shipped*: ``models/default`` (image) and ``models/series`` as they are, when they were trained on
  simulated cards only (the table below is of those; models trained with the field cards are skipped,
  since their field scores would be in-sample). Their dygraph twins are rebuilt from the exported weights and checked against Paddle
  Inference (largest probability difference printed). Thresholds come from simulated held-out cards
  (what a simulator-only run can compute) or, cross-fitted, from half of the in-class field cards.
* *retrained*: the shipped recipe's networks (``cardnet``, ``seriesnet``; AdamW, one-cycle, label
  smoothing 0.05) trained here on simulated cards plus the in-class field cards of the training folds
  — how the next shipped models will be trained. The 709 in-class field cards are split in ``--folds``
  folds stratified by class; each fold's model is trained on the other folds' cards less a quarter kept
  for calibration (temperature, thresholds), and measured on its own fold.

Everything the study fits is fitted on in-class cards only, except outlier exposure, which is fitted
on four unknown conditions and scored on the fifth. Prints the tables; ``--json`` writes them.

Results (``--sim-per-class 150 --epochs 8 --folds 2 --oe-folds 2``, commit 6b13c3d, 35 min on 2 busy cores;
AUROC = mean over the five left-out conditions, caught/FU at 95 % acceptance of held-out in-class cards):

| model | max-softmax | energy | Mahalanobis | kNN | energy+kNN | outlier exposure | OE+kNN |
|---|---|---|---|---|---|---|---|
| shipped image (sim only) | 0.579 | 0.489 | 0.639 | 0.606 | | | |
| shipped series (sim only) | 0.544 | 0.549 | 0.633 | 0.565 | | | |
| retrained image | 0.562 | 0.557 | 0.584 | 0.640 | 0.621 | **0.756** (caught 0.23, FU 0.05) | 0.754 |
| retrained series | 0.608 | 0.664 | 0.591 | 0.649 | 0.680 | 0.743 (caught 0.24, FU 0.04) | **0.762** |

Not-a-card pictures: 6 of 144 refused by the decoder (422), 137 rejected by the structural check:
99.3 % answered unknown before any model score (a score alone flags 7-62 %). Thresholds taken from
simulated held-out cards call 40-77 % of real in-class cards unknown: choose them on real cards.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

from shared import confidence as C  # noqa: E402
from shared.card_check import check_outline, check_series  # noqa: E402
from shared.cards import Card, CardError, checked_card_arrays, decode_card_png, render_card_png  # noqa: E402
from shared.labels import CODES  # noqa: E402
from shared.preprocess import preprocess_ink  # noqa: E402
from shared.series import preprocess_series  # noqa: E402
from tests.notcards import notcard_images  # noqa: E402
from training.simulator.field import load_field_cards  # noqa: E402

log = logging.getLogger("open_set_study")
REPO = Path(__file__).resolve().parents[1]
UNKNOWN_CONDITIONS = ("DOUBLE_VALVE_LEAKAGE", "OIL_ROD_LEAKAGE", "OIL_TO_DENSE", "ROD_BROKEN", "WORK_WITH_FLOAT")
EVAL_NOTCARD_SEEDS = (2, 3)
OE_NOTCARD_SEEDS = (10, 11)
ACCEPT = 0.95
METHODS = ("max_softmax", "max_logit", "energy", "mahalanobis", "knn")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class Cards:
    """Model inputs of a set of cards: filled images (uint8), series (float32), labels, groups."""

    image: np.ndarray | None  # uint8 [n, 190, 400] (None when only series are needed)
    series: np.ndarray | None  # float32 [n, 5, 256]
    labels: np.ndarray  # class index (-1 unknown)
    group: np.ndarray  # str: condition code or field source label
    ids: list[str]


def _inputs_of(position, load, want_image: bool) -> tuple[np.ndarray | None, np.ndarray]:
    position, load = checked_card_arrays(position, load)
    image = None
    if want_image:
        image = np.rint(preprocess_ink(decode_card_png(render_card_png(position, load)))[0] * 255).astype(np.uint8)
    return image, preprocess_series(Card(position, load))


def _stack(items, want_image: bool, labels, groups, ids) -> Cards:
    images = np.stack([i for i, _ in items]) if want_image else None
    return Cards(images, np.stack([s for _, s in items]), np.asarray(labels, np.int64), np.asarray(groups), ids)


def load_field(want_image: bool) -> Cards:
    cards = load_field_cards()
    items = [_inputs_of(c.position_m, c.load_kN, want_image) for c in cards]
    labels = [CODES.index(c.code) if c.code else -1 for c in cards]
    return _stack(items, want_image, labels, [c.code or c.source_label for c in cards], [c.id for c in cards])


def simulate(per_class: int, seed: int, cache: Path, want_image: bool) -> Cards:
    """``per_class`` simulated cards of every condition (cached as arrays under ``cache``)."""
    from training.simulator import card_rng, make_spec, run_specs, sample_params

    path = cache / f"sim-{per_class}-{seed}-{int(want_image)}.npz"
    if path.is_file():
        d = np.load(path)
        return Cards(d["image"] if want_image else None, d["series"], d["labels"], d["group"], list(d["ids"]))
    specs, labels = [], []
    for k, code in enumerate(CODES):
        for i in range(per_class):
            rng = card_rng(seed, code, i)
            params, severity = sample_params(code, rng)
            specs.append(make_spec(code, rng, params, severity))
            labels.append(k)
    cards = []
    for s in range(0, len(specs), 384):
        cards += run_specs(specs[s:s + 384])
        log.info("simulated %d/%d cards", len(cards), len(specs))
    items = [_inputs_of(c.position_m, c.load_kN, want_image) for c in cards]
    out = _stack(items, want_image, labels, [CODES[k] for k in labels], [f"sim-{CODES[k]}-{i}" for i, k in enumerate(labels)])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, image=out.image if want_image else np.zeros(0), series=out.series, labels=out.labels,
             group=out.group, ids=np.asarray(out.ids))
    tmp.replace(path)
    return out


@dataclass
class NotCards:
    image: np.ndarray  # uint8 inputs of the pictures that decode
    refused: int  # pictures the service refuses (CardError -> 422)
    rejected: np.ndarray  # bool per decoded picture: structural check says "not a card"
    kinds: list[str]
    total: int


def load_notcards(seeds) -> NotCards:
    images, rejected, kinds, refused, total = [], [], [], 0, 0
    for seed in seeds:
        for nc in notcard_images(seed):
            total += 1
            try:
                ink = decode_card_png(nc.png)
                x = preprocess_ink(ink)
            except CardError:
                refused += 1
                continue
            images.append(np.rint(x[0] * 255).astype(np.uint8))
            rejected.append(not check_outline(ink).ok)
            kinds.append(nc.kind)
    return NotCards(np.stack(images), refused, np.asarray(rejected), kinds, total)


# --------------------------------------------------------------------------------------------
# Networks: logits and penultimate features
# --------------------------------------------------------------------------------------------


def build(kind: str, num_classes: int = len(CODES)):
    if kind == "image":
        from training.image_models import CardNet

        return CardNet(num_classes=num_classes)
    from training.series_models import SeriesNet

    return SeriesNet(num_classes=num_classes)


def _to_tensor(kind: str, x: np.ndarray) -> paddle.Tensor:
    if kind == "image":
        return paddle.to_tensor(x.astype(np.float32)[:, None] / np.float32(255.0))
    return paddle.to_tensor(x)


def forward(net, kind: str, x: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(logits, penultimate features) of ``x`` in eval mode."""
    net.eval()
    logits, feats = [], []
    with paddle.no_grad():
        for s in range(0, len(x), batch):
            t = _to_tensor(kind, x[s:s + batch])
            if kind == "image":
                h = net.body[:-1](net.stem(t))
                z = net.body[-1](h)
            else:
                h = net.trunk(t)
                z = net.fc(h)
            logits.append(z.numpy())
            feats.append(h.numpy())
    return np.concatenate(logits).astype(np.float64), np.concatenate(feats).astype(np.float64)


def shipped_folder(kind: str) -> Path:
    """The shipped model folder of ``kind`` (``models/default`` for the image model)."""
    return REPO / "models" / ("default" if kind == "image" else "series")


def saw_field_cards(folder: Path) -> bool:
    """Whether the model in ``folder`` was trained with field cards (its ``meta.json`` data sources): then
    its scores on the field cards are in-sample, and the study's shipped arm would not be honest."""
    meta = json.loads((folder / "meta.json").read_text())
    sources = (meta.get("data") or {}).get("sources") or []
    return any(str(s.get("name", "")).startswith("field") for s in sources)


def shipped_twin(kind: str, probe: np.ndarray):
    """The dygraph network of a shipped model folder, rebuilt from its exported weights and checked.

    Paddle's exported parameter list holds every batch-norm layer's (bias, weight, mean, variance),
    then the convolution weights, then each linear layer's (bias, weight), in layer order; the
    assignment is verified against Paddle Inference on ``probe`` inputs (probabilities or logits, as the
    folder's ``meta.json`` says; a 13th "other" output when it has one).
    """
    from training.evaluate_exported import ExportedModel

    folder = shipped_folder(kind)
    meta = json.loads((folder / "meta.json").read_text())
    values = [v.numpy() for v in paddle.jit.load(str(folder / "inference")).state_dict().values()]
    net = build(kind, len(CODES) + (1 if meta.get("other_class") else 0))
    names = list(net.state_dict().keys())
    bn = [n[: -len("._mean")] for n in names if n.endswith("._mean")]
    conv = [n for n in names if n.endswith(".weight") and net.state_dict()[n].ndim >= 3]
    linear = [n[: -len(".weight")] for n in names if n.endswith(".weight") and net.state_dict()[n].ndim == 2]
    state, i = {}, 0
    for layer in bn:
        for suffix in ("bias", "weight", "_mean", "_variance"):
            state[f"{layer}.{suffix}"] = values[i]
            i += 1
    for n in conv:
        state[n] = values[i]
        i += 1
    for layer in linear:
        state[f"{layer}.bias"], state[f"{layer}.weight"] = values[i], values[i + 1]
        i += 2
    if i != len(values) or set(state) != set(names):
        raise RuntimeError(f"cannot map the exported {kind} weights onto the dygraph network")
    net.set_state_dict(state)
    logits, _ = forward(net, kind, probe)
    predictor = ExportedModel(folder)
    feed = probe.astype(np.float32)[:, None] / np.float32(255.0) if kind == "image" else probe
    reference = predictor(feed)  # the folder's single input, whatever its name
    ours = logits if meta.get("output") == "logits" else C.softmax(logits)
    gap = float(np.abs(ours - reference).max())
    if gap > 1e-4:
        raise RuntimeError(f"the rebuilt {kind} network differs from Paddle Inference by {gap:.2e}")
    return net, gap


def train(kind: str, x: np.ndarray, y: np.ndarray, num_classes: int, epochs: int, seed: int = 0):
    """The shipped recipe (AdamW 3e-3 one-cycle, batch 64, label smoothing 0.05, series augmentation)."""
    from training.series_augment import augment_series
    from training.recipe import Recipe
    from training.train import make_optimizer

    paddle.seed(seed)
    net = build(kind, num_classes)
    body = net.body if kind == "image" else net
    if kind == "image":  # the parameter-free 2x2 stem once, as training.train does
        with paddle.no_grad():
            pooled = np.concatenate([net.stem(_to_tensor(kind, x[s:s + 256])).numpy() for s in range(0, len(x), 256)])
    recipe = Recipe(model="cardnet" if kind == "image" else "seriesnet", epochs=epochs)
    steps = -(-len(x) // recipe.batch_size)
    opt, sched = make_optimizer(recipe, body.parameters(), steps)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        body.train()
        order = rng.permutation(len(x))
        loss_sum = 0.0
        for s in range(0, len(order), recipe.batch_size):
            idx = order[s:s + recipe.batch_size]
            inp = paddle.to_tensor(pooled[idx]) if kind == "image" else paddle.to_tensor(augment_series(x[idx], rng))
            loss = F.cross_entropy(body(inp), paddle.to_tensor(y[idx]), label_smoothing=recipe.label_smoothing)
            loss.backward()
            opt.step()
            opt.clear_grad()
            sched.step()
            loss_sum += float(loss) * len(idx)
        log.info("%s %d classes epoch %d/%d loss %.4f", kind, num_classes, epoch + 1, epochs, loss_sum / len(x))
    net.eval()
    return net


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def scores_of(method: str, logits: np.ndarray, feats: np.ndarray, fitted: dict) -> np.ndarray:
    """Open-set score (high = in-class) of one method; ``fitted`` holds the Mahalanobis model and kNN bank."""
    z = logits[:, : len(CODES)]
    if method == "max_softmax":
        return C.max_softmax(z, fitted.get("temperature", 1.0))
    if method == "max_logit":
        return C.max_logit(z)
    if method == "energy":
        return C.energy_score(z)
    if method == "mahalanobis":
        return fitted["mahalanobis"].score(feats)
    if method == "knn":
        return C.knn_score(feats, fitted["bank"])
    if method == "outlier_exposure":  # 13-class network: 1 - p(other)
        return C.other_class_score(logits, len(CODES))
    raise ValueError(method)


def fit_scorers(feats: np.ndarray, labels: np.ndarray, logits_cal: np.ndarray, labels_cal: np.ndarray) -> dict:
    return {"mahalanobis": C.fit_mahalanobis(feats, labels), "bank": feats,
            "temperature": C.fit_temperature(logits_cal[:, : len(CODES)], labels_cal)}


def _fmt(v) -> str:
    return "  -  " if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(h)), 7) for h in header]
    widths[0] = max(widths[0], *(len(str(r[0])) for r in rows)) if rows else widths[0]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        cells = [str(r[0])] + [_fmt(v) if not isinstance(v, str) else v for v in r[1:]]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


REVIEW_TARGETS = (0.9, 0.95)


def _calibrate(fit_logits, fit_labels, eval_logits, eval_labels) -> dict:
    """Temperature and review rules fitted on one set of held-out cards, measured on another."""
    zf, ze = fit_logits[:, : len(CODES)], eval_logits[:, : len(CODES)]
    t = C.fit_temperature(zf, fit_labels)
    probs = C.softmax(ze, t)
    out = {"temperature": t, "fit_cards": int(len(fit_labels)), "eval_cards": int(len(eval_labels)),
           "ece_before": C.expected_calibration_error(C.softmax(ze), eval_labels),
           "ece_after": C.expected_calibration_error(probs, eval_labels),
           "nll_before": C.negative_log_likelihood(ze, eval_labels),
           "nll_after": C.negative_log_likelihood(ze, eval_labels, t),
           "reliability_after": C.reliability_bins(probs, eval_labels, bins=10), "review": {}}
    for target in REVIEW_TARGETS:
        rule = C.choose_review_rule(C.softmax(zf, t), fit_labels, target)
        kept = ~rule.needs_review(probs)
        out["review"][str(target)] = {"rule": rule.to_dict(), "coverage": float(kept.mean()),
                                      "precision": float((probs[kept].argmax(1) == eval_labels[kept]).mean())
                                      if kept.any() else float("nan")}
    return out


def calibration_of(test_logits, test_labels, cal_logits, cal_labels) -> dict:
    """Calibration and review measured two ways: fitted on the calibration cards and applied to the held-out
    fold; and cross-fitted between the two halves of the held-out fold (more cards to fit on)."""
    halves = np.arange(len(test_labels)) % 2
    xfit = [_calibrate(test_logits[halves == h], test_labels[halves == h], test_logits[halves != h],
                       test_labels[halves != h]) for h in (0, 1)]
    return {"calibration_cards": _calibrate(cal_logits, cal_labels, test_logits, test_labels), "cross_fit": xfit}


def _calibration_row(name: str, runs: list[dict]) -> list:
    mean = lambda key: float(np.mean([r[key] for r in runs]))  # noqa: E731
    review = [float(np.mean([r["review"][str(t)][v] for r in runs])) for t in REVIEW_TARGETS
              for v in ("coverage", "precision")]
    return [name, f"{runs[0]['fit_cards']}", mean("temperature"), mean("ece_before"), mean("ece_after"),
            mean("nll_before"), mean("nll_after"), *review]


# Pairs averaged after standardising each score on the calibration cards (median, interquartile range).
COMBOS = {"energy+knn": ("energy", "knn"), "energy+mahalanobis": ("energy", "mahalanobis"),
          "oe+knn": ("outlier_exposure", "knn"), "oe+energy": ("outlier_exposure", "energy")}
OE_METHODS = ("outlier_exposure", "energy", "knn")


def fit_for(net, kind, x_train, y_train, x_cal, y_cal) -> dict:
    """Mahalanobis model and kNN bank from the in-class training cards, temperature from the calibration cards."""
    keep = y_train < len(CODES)
    _, feats = forward(net, kind, x_train[keep])
    cal_logits, _ = forward(net, kind, x_cal)
    return fit_scorers(feats, y_train[keep], cal_logits, y_cal)


def all_scores(net, kind, fitted, x_field, x_notcards, methods, cal) -> dict:
    """``{method: (field scores, not-card scores or None)}`` for ``methods`` and the :data:`COMBOS` among them."""
    fl, ff = forward(net, kind, x_field)
    nl, nf = forward(net, kind, x_notcards) if x_notcards is not None else (None, None)
    out = {m: (scores_of(m, fl, ff, fitted), scores_of(m, nl, nf, fitted) if nl is not None else None)
           for m in methods}
    for name, pair in COMBOS.items():
        if all(m in out for m in pair):
            scalers = [C.Standardiser.fit(out[m][0][cal]) for m in pair]
            fs = C.combined_score([out[m][0] for m in pair], scalers)
            ns = None if nl is None else C.combined_score([out[m][1] for m in pair], scalers)
            out[name] = (fs, ns)
    return out


def record(tally: dict, name: str, field_scores, notcard_scores, test, cal, field: Cards, notcards, conditions) -> None:
    """Add one model's AUROC (for ``conditions``), false-unknown and not-card rates at 95 % acceptance to ``tally``."""
    r = tally.setdefault(name, {"auroc": {c: [] for c in UNKNOWN_CONDITIONS}, "caught": [], "fu": [], "nc": [],
                                "nc_all": []})
    threshold = C.threshold_for_acceptance(field_scores[cal], ACCEPT)
    r["fu"].append(C.rate_below(field_scores[test], threshold))
    for cond in conditions:
        r["auroc"][cond].append(C.auroc(field_scores[test], field_scores[field.group == cond]))
        r["caught"].append(C.rate_below(field_scores[field.group == cond], threshold))
    if notcard_scores is not None:
        flagged = notcard_scores < threshold
        r["nc"].append(float(flagged.sum() / notcards.total))
        r["nc_all"].append(float((notcards.refused + (flagged | notcards.rejected).sum()) / notcards.total))


def accuracy(net, kind, field: Cards, idx: np.ndarray) -> float:
    logits, _ = forward(net, kind, (field.image if kind == "image" else field.series)[idx])
    return float((logits[:, : len(CODES)].argmax(axis=1) == field.labels[idx]).mean())


def folds_of(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number of each in-class card, stratified by class (-1 for unknown cards)."""
    rng = np.random.default_rng(seed)
    fold = np.full(len(labels), -1)
    for c in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sim-per-class", type=int, default=150)
    p.add_argument("--sim-seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--oe-folds", type=int, default=1, help="folds on which outlier exposure is trained (0 = skip)")
    p.add_argument("--kinds", default="image,series")
    p.add_argument("--skip-shipped", action="store_true")
    p.add_argument("--cache-dir", default="/tmp/open-set-study")
    p.add_argument("--json", help="write the tables as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kinds = [k for k in args.kinds.split(",") if k]
    want_image = "image" in kinds
    cache = Path(args.cache_dir)
    start = time.time()
    try:
        field = load_field(want_image)
    except FileNotFoundError as exc:
        print(f"error: {exc} (the study needs the field cards)", file=sys.stderr)
        return 2
    sim = simulate(args.sim_per_class, args.sim_seed, cache, want_image)
    notcards = load_notcards(EVAL_NOTCARD_SEEDS) if want_image else None
    in_class = field.labels >= 0
    report: dict = {"config": vars(args), "counts": {"field_in": int(in_class.sum()),
                                                     "field_unknown": int((~in_class).sum()),
                                                     "sim": int(len(sim.labels))}}

    # Structural check alone, and the service's own refusals.
    if notcards is not None:
        report["notcards"] = {"total": notcards.total, "refused_422": notcards.refused,
                              "check_rejected": int(notcards.rejected.sum()),
                              "answered_unknown_by_check": (notcards.refused + int(notcards.rejected.sum())) / notcards.total}
        missed = sorted({k for k, r in zip(notcards.kinds, notcards.rejected) if not r})
        print(f"\nnot-a-card pictures (seeds {EVAL_NOTCARD_SEEDS}): {notcards.total}; refused by decode (422): "
              f"{notcards.refused}; rejected by the structural check: {int(notcards.rejected.sum())}; "
              f"together {report['notcards']['answered_unknown_by_check']:.1%}; kinds passing the check: {missed}")
    series_checks = [check_series(c.position_m, c.load_kN).ok for c in load_field_cards()]
    report["series_check_rejected_field"] = {
        "in_class": int(sum(not ok for ok, lab in zip(series_checks, field.labels) if lab >= 0)),
        "unknown": int(sum(not ok for ok, lab in zip(series_checks, field.labels) if lab < 0))}

    # Shipped models: thresholds from simulated held-out cards, or cross-fitted on field halves.
    if not args.skip_shipped:
        half = folds_of(field.labels, 2, seed=1)
        sim_half = np.arange(len(sim.labels)) % 2  # even: fit (Mahalanobis/kNN/temperature), odd: held-out
        for kind in kinds:
            if saw_field_cards(shipped_folder(kind)):
                print(f"\nSHIPPED {shipped_folder(kind).relative_to(REPO)} ({kind}): skipped -- trained with the field "
                      "cards, so its scores on them are in-sample (its out-of-fold open-set figures are in its "
                      "meta.json, open_set)")
                continue
            x_sim = sim.image if kind == "image" else sim.series
            net, gap = shipped_twin(kind, x_sim[:64])
            report[f"shipped_{kind}_twin_gap"] = gap
            sl, sf = forward(net, kind, x_sim)
            fitted = fit_scorers(sf[sim_half == 0], sim.labels[sim_half == 0], sl[sim_half == 1], sim.labels[sim_half == 1])
            report[f"shipped_{kind}_temperature"] = fitted["temperature"]
            x_field = field.image if kind == "image" else field.series
            fl, ff = forward(net, kind, x_field)
            report[f"shipped_{kind}_field_accuracy"] = float((fl.argmax(1)[in_class] == field.labels[in_class]).mean())
            rows = []
            for m in METHODS:
                s_sim = scores_of(m, sl, sf, fitted)
                s = scores_of(m, fl, ff, fitted)
                thr_sim = C.threshold_for_acceptance(s_sim[sim_half == 1], ACCEPT)
                # cross-fit: threshold from one half of the in-class field cards, measured on the other
                fu = []
                for h in (0, 1):
                    thr = C.threshold_for_acceptance(s[in_class & (half == h)], ACCEPT)
                    fu.append(C.rate_below(s[in_class & (half == 1 - h)], thr))
                au = [C.auroc(s[in_class], s[field.group == cond]) for cond in UNKNOWN_CONDITIONS]
                row = [m, *au, float(np.mean(au)), C.rate_below(s[in_class], thr_sim), float(np.mean(fu))]
                if notcards is not None and kind == "image":
                    nl, nf = forward(net, kind, notcards.image)
                    ns = scores_of(m, nl, nf, fitted)
                    thr_x = C.threshold_for_acceptance(s[in_class], ACCEPT)
                    row += [float((ns < thr_sim).sum() / notcards.total),
                            float((notcards.refused + ((ns < thr_x) | notcards.rejected).sum()) / notcards.total)]
                rows.append(row)
            report[f"shipped_{kind}"] = rows
            header = ["method", *[c[:10] for c in UNKNOWN_CONDITIONS], "mean", "FU@sim", "FU@field"]
            if kind == "image":
                header += ["NC@sim", "NC+chk@fld"]
            print_table(f"SHIPPED models/{'default' if kind == 'image' else 'series'} ({kind}; field accuracy "
                        f"{report[f'shipped_{kind}_field_accuracy']:.3f}; twin gap {gap:.1e}; T={fitted['temperature']:.2f}): "
                        "AUROC unknown condition vs 709 in-class; FU = in-class field cards called unknown at 95 % "
                        "acceptance of sim held-out (@sim) or of the other field half (@field); NC = not-cards flagged "
                        "by the score alone (@sim threshold) / answered unknown with 422 + check + score (@field threshold)",
                        header, rows)

    # Retrained with field cards in the mix, k folds.
    fold = folds_of(field.labels, args.folds)
    rng = np.random.default_rng(5)
    oe_notcards = load_notcards(OE_NOTCARD_SEEDS) if want_image else None
    for kind in kinds:
        x_sim = sim.image if kind == "image" else sim.series
        x_field = field.image if kind == "image" else field.series
        x_nc = notcards.image if kind == "image" else None
        tally: dict = {}
        accs, calibration = [], []
        for k in range(args.folds):
            test = in_class & (fold == k)
            rest = np.flatnonzero(in_class & (fold != k))
            rest = rest[rng.permutation(len(rest))]
            cal_idx, fit_idx = rest[: len(rest) // 4], rest[len(rest) // 4:]
            cal = np.zeros(len(field.labels), bool)
            cal[cal_idx] = True
            x_train = np.concatenate([x_sim, x_field[fit_idx]])
            y_train = np.concatenate([sim.labels, field.labels[fit_idx]])
            net = train(kind, x_train, y_train, len(CODES), args.epochs, seed=k)
            accs.append(accuracy(net, kind, field, np.flatnonzero(test)))
            fitted = fit_for(net, kind, x_train, y_train, x_field[cal_idx], field.labels[cal_idx])
            fl, _ = forward(net, kind, x_field)
            calibration.append(calibration_of(fl[test], field.labels[test], fl[cal_idx], field.labels[cal_idx]))
            scores = all_scores(net, kind, fitted, x_field, x_nc, METHODS, cal)
            for name, (fs, ns) in scores.items():
                record(tally, name, fs, ns, test, cal, field, notcards, UNKNOWN_CONDITIONS)
            if k < args.oe_folds:
                for cond in UNKNOWN_CONDITIONS:
                    # A 13th class "other": the four other unknown conditions (+ generated not-a-card pictures).
                    others = np.flatnonzero((field.labels < 0) & (field.group != cond))
                    xo, yo = [x_train, x_field[others]], [y_train, np.full(len(others), len(CODES))]
                    if kind == "image":
                        xo.append(oe_notcards.image)
                        yo.append(np.full(len(oe_notcards.image), len(CODES)))
                    oe = train(kind, np.concatenate(xo), np.concatenate(yo), len(CODES) + 1, args.epochs, seed=100 + k)
                    oe_fitted = fit_for(oe, kind, x_train, y_train, x_field[cal_idx], field.labels[cal_idx])
                    oe_scores = all_scores(oe, kind, oe_fitted, x_field, x_nc, OE_METHODS, cal)
                    for name, (fs, ns) in oe_scores.items():
                        # the OE network's own energy, kNN and their pair are other methods than the plain network's
                        uses_oe = name == "outlier_exposure" or "outlier_exposure" in COMBOS.get(name, ())
                        label = name if uses_oe else f"oe-net {name}"
                        record(tally, label, fs, ns, test, cal, field, notcards, (cond,))
                    log.info("%s OE fold %d, %s held out: AUROC %.3f", kind, k, cond,
                             tally["outlier_exposure"]["auroc"][cond][-1])
            log.info("%s fold %d done (%.0f s)", kind, k, time.time() - start)
        rows = []
        for m, r in tally.items():
            au = [float(np.mean(r["auroc"][c])) if r["auroc"][c] else float("nan") for c in UNKNOWN_CONDITIONS]
            row = [m, *au, float(np.nanmean(au)), float(np.mean(r["caught"])), float(np.mean(r["fu"]))]
            if kind == "image":
                row += [float(np.mean(r["nc"])), float(np.mean(r["nc_all"]))]
            rows.append(row)
        report[f"retrained_{kind}"] = {"rows": rows, "field_accuracy_per_fold": accs, "calibration": calibration}
        cal_rows = []
        for k, c in enumerate(calibration):
            cal_rows.append(_calibration_row(f"fold {k} calibration cards", [c["calibration_cards"]]))
            cal_rows.append(_calibration_row(f"fold {k} cross-fit halves", c["cross_fit"]))
        print_table(f"RETRAINED {kind}: calibration on held-out field cards — temperature and review rule fitted on "
                    "the calibration cards (or on one half of the held-out fold), measured on the held-out fold (the "
                    "other half); review: share answered without review (cov) and their precision (prec) for a "
                    "precision target",
                    ["fitted on", "cards", "T", "ECE", "ECE(T)", "NLL", "NLL(T)",
                     *[f"{v}@{t}" for t in REVIEW_TARGETS for v in ("cov", "prec")]], cal_rows)
        header = ["method", *[c[:10] for c in UNKNOWN_CONDITIONS], "mean", "caught", "FU"]
        if kind == "image":
            header += ["NC score", "NC+chk+422"]
        print_table(f"RETRAINED {kind} (sim {args.sim_per_class}/class + field folds; {args.folds} folds, mean; "
                    f"in-class field accuracy per fold {', '.join(f'{a:.3f}' for a in accs)}; outlier exposure on "
                    f"{min(args.oe_folds, args.folds)} fold(s), each condition scored by a model trained on the "
                    "other four): AUROC unknown condition vs held-out in-class field cards; caught = unknown-condition "
                    "cards called unknown and FU = held-out in-class cards called unknown, at 95 % acceptance of "
                    "the calibration cards; NC = not-a-card pictures "
                    "answered unknown by the score / by 422 + structural check + score", header, rows)
    report["seconds"] = time.time() - start
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    print(f"\n({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
