"""Benchmark data: simulated cards, replicated to any count as hard links (no extra disk, same bytes).

The base set is the training toolkit's simulated dataset (``training.data.resolve_source("sim")``),
generated once into the cache; a benchmark folder of N cards cycles through its PNGs under new names,
so 1k, 5k and 20k cards cost the same per card and nothing is held in memory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bench_cache() -> Path:
    """Where benchmark data lives (``$CARDSENSE_CACHE/bench`` or ``.cache/bench``)."""
    root = Path(os.environ.get("CARDSENSE_CACHE") or REPO / ".cache")
    return root / "bench"


def base_cards(per_class: int = 100) -> list[Path]:
    """Sorted PNG paths of the simulated set with ``per_class`` cards per condition (generated once)."""
    from training.data import resolve_source  # noqa: PLC0415 - only the benchmark needs the simulator

    train = resolve_source("sim", sim_per_class=per_class, progress=False)
    pngs = sorted(train.glob("A*/*.png"))
    if not pngs:
        raise RuntimeError(f"no simulated PNG cards in {train}")
    return pngs


def card_folder(count: int, base: list[Path], labelled: bool = True) -> Path:
    """A folder of ``count`` card PNGs (hard links to ``base``, cycled), in class sub-folders when labelled.

    The folder is rebuilt only when missing or incomplete.
    """
    out = bench_cache() / f"cards-{count}-from-{len(base)}"
    marker = out / ".complete"
    if marker.is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for i in range(count):
        src = base[i % len(base)]
        sub = out / src.parent.name if labelled else out
        sub.mkdir(exist_ok=True)
        dst = sub / f"{src.stem}_r{i // len(base):03d}.png"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    marker.write_text(str(count))
    return out


def card_files(folder: Path) -> list[Path]:
    """The PNGs of a benchmark folder, sorted as the scorer sorts them."""
    return sorted(folder.rglob("*.png"))
