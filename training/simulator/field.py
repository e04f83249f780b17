"""Field cards (the vendored ``data/field/field-cards.csv``) and shape statistics to compare the simulator with.

    python -m training.simulator.field [--field PATH] [--per-class 150] [--seed 0]

prints, per condition, field vs simulated: peak/min load, load range relative to the peak, ripple
content (share of load variance above the 8th harmonic of the stroke), card fullness (enclosed area
over its bounding box) and a nearest-centroid shape-feature classifier trained on simulated cards and
tested on the field cards. ``--cnn EPOCHS`` adds a small 1-D CNN (Paddle) on the same shape vectors,
trained on the simulated cards only, with per-class accuracy and confusions on the field cards: a
quick sim-to-real check, not the product model. The field file is optional everywhere:
``load_field_cards`` raises ``FileNotFoundError`` with the path when it is absent.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.cards import checked_card_arrays

log = logging.getLogger(__name__)

DEFAULT_FIELD = Path(__file__).resolve().parents[2] / "data" / "field" / "field-cards.csv"  # vendored
RIPPLE_HARMONIC = 8
N_RESAMPLE = 128
SHAPE_KEYS = ("pickup", "load_width", "drop", "drop_width", "peak_x", "tilt", "bottom_rise")


@dataclass(frozen=True)
class FieldCard:
    id: str
    source_label: str
    code: str  # our A-code, "" when the field condition is not one of ours
    position_m: np.ndarray
    load_kN: np.ndarray


def load_field_cards(path: Path | None = None) -> list[FieldCard]:
    """Read the field cards file (one card per row, space-separated series)."""
    path = Path(path) if path else DEFAULT_FIELD
    if not path.is_file():
        raise FileNotFoundError(f"field cards not found at {path}")
    out = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(FieldCard(row["id"], row["source_label"], row["code"],
                                 np.array(row["position_m"].split(), dtype=float),
                                 np.array(row["load_kN"].split(), dtype=float)))
    return out


def ripple_share(load: np.ndarray, harmonic: int = RIPPLE_HARMONIC) -> float:
    """Share of the load's variance (over one stroke, treated as periodic) above ``harmonic``."""
    x = np.asarray(load, float)
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x)) ** 2
    total = spec[1:].sum()
    return float(spec[harmonic + 1:].sum() / total) if total > 0 else 0.0


def fullness(position: np.ndarray, load: np.ndarray) -> float:
    """Enclosed area of the card over the area of its bounding box (1 = rectangle)."""
    x, y = np.asarray(position, float), np.asarray(load, float)
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    box = (x.max() - x.min()) * (y.max() - y.min())
    return float(area / box) if box > 0 else 0.0


def shape_features(position: np.ndarray, load: np.ndarray, n: int = N_RESAMPLE) -> np.ndarray:
    """Scale-free shape vector: the card resampled to ``n`` points by arc length, both axes in [0, 1]."""
    x, y = np.asarray(position, float), np.asarray(load, float)
    x = (x - x.min()) / max(np.ptp(x), 1e-9)
    y = (y - y.min()) / max(np.ptp(y), 1e-9)
    t = np.linspace(0.0, 1.0, len(x))  # time-uniform: position and load series resampled in phase
    tt = np.linspace(0.0, 1.0, n)
    return np.concatenate([np.interp(tt, t, x), np.interp(tt, t, y)])


def card_stats(position: np.ndarray, load: np.ndarray) -> dict[str, float]:
    """Per-card statistics used in the comparison table (load levels, ripple, fullness and the shape features).

    Trailing recorder padding is dropped first (``shared.cards.checked_card_arrays``).
    """
    position, load = checked_card_arrays(position, load)
    return {
        "peak": float(load.max()),
        "min": float(load.min()),
        "range_rel": float(np.ptp(load) / max(load.max(), 1e-9)),
        "ripple": ripple_share(load),
        "fullness": fullness(position, load),
        "stroke": float(np.ptp(position)),
        **shape_stats(position, load),
    }


def _smoothed(y: np.ndarray, share: float = 0.03) -> np.ndarray:
    """Periodic moving average over ``share`` of the stroke (takes the rod-vibration ripple out)."""
    n = max(1, int(round(share * len(y))) | 1)
    if n == 1:
        return y
    k = np.ones(n) / n
    return np.convolve(np.concatenate([y[-(n // 2):], y, y[: n // 2]]), k, mode="valid")


def _first(xs: np.ndarray, mask: np.ndarray, default: float) -> float:
    idx = np.flatnonzero(mask)
    return float(xs[idx[0]]) if idx.size else default


def shape_stats(position: np.ndarray, load: np.ndarray) -> dict[str, float]:
    """Where and how fast the card loads and unloads, where it peaks, how it is tilted.

    Position and load are scaled to [0, 1] (x: share of the stroke, y: share of the load range) and the
    load is smoothed over 3 % of the stroke so that rod-vibration ripple does not decide a crossing.
    The upstroke runs from the first sample to the highest position (cards start at the bottom).

    Returns:
        ``pickup``: x where the upstroke first reaches half the load range; ``load_width``: x travelled
        between 15 % and 85 % of the range on the upstroke; ``drop``: x where the downstroke first falls
        below half the range; ``drop_width``: x travelled between 85 % and 15 % on the downstroke;
        ``peak_x``: x of the highest (smoothed) upstroke load; ``tilt``: mean load (range share) of the
        left third minus the right third, upstroke and downstroke averaged (> 0: rotated clockwise);
        ``bottom_rise``: how far (range share) the last 3 % of the downstroke's samples climb above the
        downstroke's median level (a hook at the lower left).
    """
    x, y = checked_card_arrays(position, load)
    x = (x - x.min()) / max(np.ptp(x), 1e-12)
    y = (y - y.min()) / max(np.ptp(y), 1e-12)
    ys = _smoothed(y)
    top = int(np.argmax(x))
    ux, uy = x[: top + 1], ys[: top + 1]
    dx, dy = x[top:], ys[top:]
    lo, hi = _first(ux, uy > 0.15, 1.0), _first(ux, uy > 0.85, 1.0)
    d_hi, d_lo = _first(dx, dy < 0.85, 0.0), _first(dx, dy < 0.15, 0.0)

    def band(xs, ys_, a, b):
        sel = (xs >= a) & (xs <= b)
        return float(ys_[sel].mean()) if sel.any() else float("nan")

    tilt = 0.5 * ((band(ux, uy, 0.05, 0.33) - band(ux, uy, 0.67, 0.95))
                  + (band(dx, dy, 0.05, 0.33) - band(dx, dy, 0.67, 0.95)))
    tail = max(2, int(round(0.03 * len(x))))
    return {
        "pickup": _first(ux, uy > 0.5, 1.0),
        "load_width": max(hi - lo, 0.0),
        "drop": _first(dx, dy < 0.5, 0.0),
        "drop_width": max(d_hi - d_lo, 0.0),
        "peak_x": float(ux[int(np.argmax(uy))]),
        "tilt": tilt,
        "bottom_rise": float(y[-tail:].max() - np.median(y[top:])),
    }


def _summary(stats: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.median([s[k] for s in stats])) for k in stats[0]}


def _field_arrays(card: FieldCard) -> tuple[np.ndarray, np.ndarray]:
    """A field card's stroke as the shared readers see it: trailing recorder padding dropped."""
    return checked_card_arrays(card.position_m, card.load_kN)


def cnn_check(sim_x: np.ndarray, sim_y: np.ndarray, field_x: np.ndarray, field_y: np.ndarray,
              epochs: int = 25, seed: int = 0) -> np.ndarray:
    """Train a small 1-D CNN on simulated shape vectors, return its predictions for the field vectors."""
    import paddle
    from paddle import nn

    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    n = N_RESAMPLE
    net = nn.Sequential(
        nn.Conv1D(2, 32, 7, padding=3, padding_mode="circular"), nn.ReLU(), nn.MaxPool1D(2),
        nn.Conv1D(32, 64, 5, padding=2, padding_mode="circular"), nn.ReLU(), nn.MaxPool1D(2),
        nn.Conv1D(64, 96, 3, padding=1, padding_mode="circular"), nn.ReLU(), nn.AdaptiveAvgPool1D(1),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(96, 12))
    opt = paddle.optimizer.Adam(1e-3, parameters=net.parameters())
    loss_fn = nn.CrossEntropyLoss()
    x = sim_x.reshape(-1, 2, n).astype(np.float32)
    for epoch in range(epochs):
        perm = rng.permutation(len(x))
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            xb = x[b] + rng.normal(0, 0.01, x[b].shape).astype(np.float32)
            loss = loss_fn(net(paddle.to_tensor(xb)), paddle.to_tensor(sim_y[b]))
            loss.backward()
            opt.step()
            opt.clear_grad()
        log.info("cnn epoch %d loss %.3f", epoch, float(loss))
    net.eval()
    with paddle.no_grad():
        return net(paddle.to_tensor(field_x.reshape(-1, 2, n).astype(np.float32))).numpy().argmax(1)


def simulate_for_comparison(per_class: int, seed: int):
    """``per_class`` simulated cards per condition, batched by step count."""
    from shared.labels import CODES

    from .api import card_rng, make_spec, run_specs
    from .rod import discretisation

    specs = [make_spec(c, card_rng(seed, c, i)) for c in CODES for i in range(per_class)]
    order = sorted(range(len(specs)), key=lambda i: (discretisation(specs[i].params)[1], i))
    sim = [None] * len(specs)
    for start in range(0, len(order), 384):
        idx = order[start:start + 384]
        for i, card in zip(idx, run_specs([specs[i] for i in idx])):
            sim[i] = card
    return sim


def compare(per_class: int = 150, seed: int = 0, field_path: Path | None = None, cnn_epochs: int = 0) -> str:
    """Simulate ``per_class`` cards per condition and return a Markdown comparison with the field cards."""
    from shared.labels import CODES

    field = load_field_cards(field_path)
    sim = simulate_for_comparison(per_class, seed)
    lines = ["| class | source | n | peak kN | min kN | range/peak | ripple >8th harm. | fullness | pickup | load width"
             " | drop | drop width | peak x | tilt | bottom rise |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for code in CODES:
        f = [card_stats(c.position_m, c.load_kN) for c in field if c.code == code]
        s = [card_stats(c.position_m, c.load_kN) for c in sim if c.condition == code]
        for name, st in (("field", f), ("sim", s)):
            if st:
                m = _summary(st)
                lines.append(f"| {code} | {name} | {len(st)} | {m['peak']:.0f} | {m['min']:.0f} | {m['range_rel']:.2f} |"
                             f" {m['ripple']:.3f} | {m['fullness']:.2f} | "
                             + " | ".join(f"{m[k]:.2f}" for k in SHAPE_KEYS) + " |")
    # Nearest-centroid classifier on shape vectors: simulated → field (7 mapped classes).
    feats = np.array([shape_features(c.position_m, c.load_kN) for c in sim])
    labels = np.array([c.condition for c in sim])
    mapped = [c for c in field if c.code]
    present = sorted({c.code for c in mapped})
    cent = {k: feats[labels == k].mean(axis=0) for k in present}
    correct = {k: [0, 0] for k in present}
    for c in mapped:
        v = shape_features(*_field_arrays(c))
        pred = min(cent, key=lambda k: float(np.sum((cent[k] - v) ** 2)))
        correct[c.code][0] += pred == c.code
        correct[c.code][1] += 1
    total = sum(v[0] for v in correct.values()) / sum(v[1] for v in correct.values())
    lines += ["", f"Nearest-centroid (sim-trained, {len(present)} mapped classes) on field cards: "
              f"accuracy {total:.3f}; per class " + ", ".join(f"{k} {v[0] / v[1]:.2f}" for k, v in correct.items())]
    if cnn_epochs:
        fy = np.array([CODES.index(c.code) for c in mapped])
        fx = np.array([shape_features(*_field_arrays(c)) for c in mapped])
        pred = cnn_check(feats, np.array([CODES.index(k) for k in labels]), fx, fy, cnn_epochs, seed)
        lines += ["", f"1-D CNN trained on {len(sim)} simulated cards (12 classes), tested on the {len(mapped)} mapped "
                  f"field cards (recorder padding dropped): accuracy {np.mean(pred == fy):.3f}", "",
                  "| field class | n | accuracy | most often predicted as |", "|---|---|---|---|"]
        for k in sorted(set(fy)):
            vals, cnt = np.unique(pred[fy == k], return_counts=True)
            top = sorted(zip(cnt, vals), reverse=True)[:3]
            lines.append(f"| {CODES[k]} | {int(np.sum(fy == k))} | {np.mean(pred[fy == k] == k):.2f} | "
                         + ", ".join(f"{CODES[v]} {c}" for c, v in top) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print the comparison table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--field", type=Path, default=None)
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cnn", type=int, default=0, metavar="EPOCHS", help="also run the 1-D CNN sim→field check")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(compare(args.per_class, args.seed, args.field, args.cnn))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
