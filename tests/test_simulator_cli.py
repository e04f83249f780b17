"""Dataset CLI: competition layout, readable cards, byte-identical output whatever the worker count."""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from shared.cards import decode_card_png, read_card_csv
from shared.labels import CODES
from training.simulate import generate_dataset, main
from training.simulator.field import DEFAULT_FIELD, card_stats, load_field_cards

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "ds"
    generate_dataset(out, per_class=1, test_count=12, seed=5, make_zip=True, workers=1, progress=False)
    return out


def test_layout_labels_and_zips(dataset):
    assert sorted(p.name for p in (dataset / "train").iterdir()) == list(CODES)
    for code in CODES:
        names = sorted(p.name for p in (dataset / "train" / code).iterdir())
        assert len(names) == 2 and {n.rsplit(".", 1)[1] for n in names} == {"csv", "png"}
    test_ids = sorted(p.stem for p in (dataset / "test").glob("*.csv"))
    assert len(test_ids) == 12 and test_ids == sorted(p.stem for p in (dataset / "test").glob("*.png"))
    with open(dataset / "test_labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == test_ids and sorted(r["label"] for r in rows) == sorted(CODES)
    with zipfile.ZipFile(dataset / "train.zip") as zf:
        files = [n for n in zf.namelist() if not n.endswith("/")]
        assert len(files) == 12 * 2 and all(n.startswith("train/A") for n in files)
        assert zf.read(files[0]) == (dataset / files[0]).read_bytes()
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with zipfile.ZipFile(dataset / "test.zip") as zf:
        assert sorted(n for n in zf.namelist() if not n.endswith("/")) == sorted(
            f"test/{i}.{ext}" for i in test_ids for ext in ("csv", "png"))


def test_cards_read_back_through_the_shared_readers(dataset):
    csv_path = next((dataset / "train" / "A02").glob("*.csv"))
    assert csv_path.read_bytes().startswith("\ufeff位移(m),载荷(kN)".encode("utf-8"))
    card = read_card_csv(csv_path)
    assert 200 <= len(card.position) <= 250 and card.position[0] == 0.0
    ink = decode_card_png(csv_path.with_suffix(".png"))
    assert ink.shape == (190, 400) and ink.max() == 255


def test_same_arguments_give_byte_identical_output_with_any_worker_count(dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, per_class=1, test_count=12, seed=5, make_zip=True, workers=2, progress=False)
    assert _tree(again) == _tree(dataset)
    other = tmp_path / "other"
    generate_dataset(other, per_class=1, test_count=0, seed=6, workers=1, progress=False)
    assert _tree(other)["train/A01/a01_00000.csv"] != _tree(dataset)["train/A01/a01_00000.csv"]


def test_cli_runs_as_a_module_and_rejects_bad_arguments(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "training.simulate", "--out", str(out), "--per-class", "1",
                          "--workers", "1", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(list((out / "train").rglob("*.png"))) == 12 and not (out / "test").exists()
    assert main(["--out", str(tmp_path / "x"), "--per-class", "0"]) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["--out", str(foreign), "--per-class", "1", "--no-progress"]) == 2
    assert (foreign / "keep.txt").read_text() == "mine"


def test_simulated_loads_overlap_the_field_cards(dataset):
    field = [card_stats(c.position_m, c.load_kN) for c in load_field_cards() if c.code]
    sim = [card_stats(c.position, c.load) for c in map(read_card_csv, (dataset / "train").rglob("*.csv"))]
    for key in ("peak", "min", "stroke"):
        f = np.array([s[key] for s in field])
        s = np.median([s[key] for s in sim])
        assert np.percentile(f, 5) <= s <= np.percentile(f, 95), key
