"""python -m serving.batch: zips and folders, bad cards as error rows, accuracy, atomic output."""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile

import pytest

from serving import batch
from serving.answers import answer
from shared.preprocess import preprocess_csv, preprocess_png
from tests.conftest import CARD_KINDS, REPO, card_csv, card_png

CODES = [f"A{i:02d}" for i in range(1, 13)]
MEASURES = ["fillage", "fullness", "peak_load_kN", "min_load_kN", "load_range_kN", "stroke_m", "work_kJ",
            "peak_load_rel", "min_load_rel", "load_range_rel", "stroke_rel", "area_rel"]
HEADER = ["id", "label", "name", "confidence", "unknown", "unknown_score", "review", "second_label",
          "second_probability", "model", "model_version", "input", *MEASURES, *CODES, "unknown_reasons", "error"]


def run(args) -> int:
    return batch.main([*map(str, args), "--no-progress"])


def read_rows(path):
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def test_scores_a_flat_test_zip(test_zip, tiny_model, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    assert run([test_zip, "--out", out, "--model", tiny_model, "--batch-size", "3"]) == 0
    header, rows = read_rows(out)
    assert header == HEADER
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["0000", "0001", "0002", "0003", "0004", "0099"]
    for card_id in ("0000", "0001", "0002", "0003", "0004"):
        row = by_id[card_id]
        assert row["label"] in CODES and row["error"] == ""
        probs = [float(row[c]) for c in CODES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert float(row["confidence"]) == pytest.approx(max(probs))
        assert row["name"]
    bad = by_id["0099"]
    assert bad["label"] == "" and bad["error"] and all(bad[c] == "" for c in CODES)
    printed = capsys.readouterr().out
    assert "6 card(s) scored" in printed and "errors       1" in printed
    assert not list(tmp_path.glob(".*tmp"))  # the atomic writer left no temporary file


def test_png_preferred_and_csv_used_when_no_png(test_zip, tiny_model, tmp_path, predictor):
    out = tmp_path / "p.csv"
    assert run([test_zip, "--out", out, "--model", tiny_model]) == 0
    _, rows = read_rows(out)
    by_id = {r["id"]: r for r in rows}
    with zipfile.ZipFile(test_zip) as zf:
        png_probs = predictor.predict(preprocess_png(zf.read("test/0000.png"), predictor.preprocess))[0]
        csv_probs = predictor.predict(preprocess_csv(zf.read("test/0002.csv"), predictor.preprocess))[0]
    assert [float(by_id["0000"][c]) for c in CODES] == pytest.approx(png_probs.tolist(), abs=1e-5)
    assert [float(by_id["0002"][c]) for c in CODES] == pytest.approx(csv_probs.tolist(), abs=1e-5)


def test_batch_size_does_not_change_results(test_zip, tiny_model, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run([test_zip, "--out", a, "--model", tiny_model, "--batch-size", "1"]) == 0
    assert run([test_zip, "--out", b, "--model", tiny_model, "--batch-size", "16"]) == 0
    _, rows_a = read_rows(a)
    _, rows_b = read_rows(b)
    for ra, rb in zip(rows_a, rows_b):
        assert ra["label"] == rb["label"]
        for c in CODES:
            if ra[c]:
                assert float(ra[c]) == pytest.approx(float(rb[c]), abs=1e-5)


def test_labelled_folder_prints_accuracy(tmp_path, tiny_model, predictor, capsys):
    root = tmp_path / "train"
    expected = {}
    for i, kind in enumerate(CARD_KINDS):
        png = card_png(kind, i)
        label = answer(predictor, predictor.predict(preprocess_png(png, predictor.preprocess))[0], None)["label"]
        true = label if i % 2 == 0 else ("A01" if label != "A01" else "A02")  # 3 right, 2 wrong
        expected[kind] = true
        (root / true).mkdir(parents=True, exist_ok=True)
        (root / true / f"{kind}.png").write_bytes(png)
    (root / "A03").mkdir(exist_ok=True)
    (root / "A03" / "only-csv.csv").write_bytes(card_csv("dome"))
    out = tmp_path / "p.csv"
    assert run([root, "--out", out, "--model", tiny_model]) == 0
    printed = capsys.readouterr().out
    _, rows = read_rows(out)
    assert len(rows) == 6
    correct = sum(1 for r in rows if r["id"] in expected and r["label"] == expected[r["id"]])
    assert correct == 3
    assert "accuracy" in printed and "labelled cards" in printed


def test_flat_folder_has_no_accuracy(tmp_path, tiny_model, capsys):
    for kind in CARD_KINDS:
        (tmp_path / "cards").mkdir(exist_ok=True)
        (tmp_path / "cards" / f"{kind}.csv").write_bytes(card_csv(kind))
    (tmp_path / "cards" / "notes.txt").write_text("not a card")
    assert run([tmp_path / "cards", "--out", tmp_path / "p.csv", "--model", tiny_model]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" not in printed and "not a card file" in printed


def test_unsafe_and_damaged_zip_members_are_reported_not_fatal(tmp_path, tiny_model):
    path = tmp_path / "test.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("test/good.png", card_png("normal"))
        zf.writestr("../escape.png", card_png("pound"))
        zf.writestr("test/blank.csv", "位移(m),载荷(kN)\n".encode("gbk"))
        zf.writestr("test/bomb.png", b"\x00" * (30 * 1024 * 1024))
    out = tmp_path / "p.csv"
    assert run([path, "--out", out, "--model", tiny_model]) == 0
    _, rows = read_rows(out)
    by_id = {r["id"]: r for r in rows}
    assert by_id["good"]["label"] in CODES
    for card_id in ("escape", "blank", "bomb"):
        assert by_id[card_id]["error"], card_id
        assert by_id[card_id]["label"] == ""


def test_existing_output_is_kept_when_the_input_is_unreadable(tmp_path, tiny_model, capsys):
    out = tmp_path / "p.csv"
    out.write_text("previous results\n")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    assert run([tmp_path / "broken.zip", "--out", out, "--model", tiny_model]) == 2
    assert out.read_text() == "previous results\n"
    assert "error" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(test_zip, tmp_path, capsys):
    assert run([test_zip, "--out", tmp_path / "p.csv", "--model", tmp_path / "nope"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_command_line_entry_point(test_zip, tiny_model, tmp_path):
    """``python -m serving.batch`` as a user runs it, with the progress bar."""
    out = tmp_path / "predictions.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "serving.batch", str(test_zip), "--out", str(out), "--model", str(tiny_model)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "card/s" in proc.stderr  # tqdm progress
    assert "scored" in proc.stdout
    assert len(read_rows(out)[1]) == 6


def test_shards_concatenate_to_the_unsharded_file(test_zip, tiny_model, tmp_path):
    """As the indexed Job in deploy/k8s/batch-job.yaml runs it: shard outputs in K order == one run."""
    whole = tmp_path / "whole.csv"
    assert run([test_zip, "--out", whole, "--model", tiny_model]) == 0
    parts = []
    for k in range(3):
        out = tmp_path / f"part-{k}.csv"
        assert run([test_zip, "--out", out, "--model", tiny_model, "--shard", f"{k}/3"]) == 0
        parts.append(out.read_text(encoding="utf-8").splitlines())
    header = parts[0][0]
    assert all(p[0] == header for p in parts)
    assert [header] + [line for p in parts for line in p[1:]] == whole.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("bad", ["3/3", "x", "1/0", "-1/2"])
def test_bad_shard_argument(test_zip, tiny_model, tmp_path, bad):
    with pytest.raises(SystemExit):
        batch.main([str(test_zip), "--out", str(tmp_path / "p.csv"), "--model", str(tiny_model), "--shard", bad])
