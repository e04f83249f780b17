"""The predictions CSV as an engineer opens it: in Excel (encoding), with the model that answered, and the
summary's count of answers to check by hand."""

from __future__ import annotations

import csv
import io
import re

import pytest

from serving import batch
from shared.labels import CONDITIONS
from tests.conftest import CARD_KINDS, card_csv, card_png
from tests.notcards import notcard_images

BOM = b"\xef\xbb\xbf"


def excel_text(data: bytes, ansi_code_page: str) -> str:
    """Decode a CSV the way Excel does when it opens it: a UTF-8 byte-order mark means UTF-8; without one
    Excel reads the file in the machine's ANSI code page (cp936 on Chinese Windows, cp1252 on Western)."""
    if data.startswith(BOM):
        return data[len(BOM):].decode("utf-8")
    return data.decode(ansi_code_page, errors="replace")


@pytest.fixture()
def chinese_folder(tmp_path):
    """Cards whose names and answers hold Chinese: 井12_示功图.png and friends."""
    folder = tmp_path / "井场"
    folder.mkdir()
    for i, kind in enumerate(CARD_KINDS):
        (folder / f"井{i + 10}_示功图.png").write_bytes(card_png(kind, i))
    (folder / "井99_载荷.csv").write_bytes(card_csv("dome", 9))
    return folder


@pytest.mark.parametrize("code_page", ["cp936", "cp1252"])
def test_excel_shows_the_chinese_names(chinese_folder, tiny_model, tmp_path, code_page):
    out = tmp_path / "predictions.csv"
    assert batch.main([str(chinese_folder), "--out", str(out), "--model", str(tiny_model), "--no-progress"]) == 0
    data = out.read_bytes()
    assert data.startswith(BOM)
    rows = list(csv.DictReader(io.StringIO(excel_text(data, code_page))))
    assert {r["id"] for r in rows} == {*(f"井{i + 10}_示功图" for i in range(5)), "井99_载荷"}
    assert all(re.search(r"[\u4e00-\u9fff]", r["name"]) for r in rows)  # 供液不足, not 渚涙恫涓嶈冻 or ä¾›æ¶²
    assert {r["name"] for r in rows} <= {c.name for c in CONDITIONS}


def test_without_the_bom_excel_garbles_them(chinese_folder, tiny_model, tmp_path):
    """The reason for the BOM: --no-bom writes plain UTF-8, which Excel misreads in either code page."""
    out = tmp_path / "plain.csv"
    assert batch.main([str(chinese_folder), "--out", str(out), "--model", str(tiny_model), "--no-progress",
                       "--no-bom"]) == 0
    data = out.read_bytes()
    assert not data.startswith(BOM)
    names = {c.name for c in CONDITIONS}
    for code_page in ("cp936", "cp1252"):
        rows = list(csv.DictReader(io.StringIO(excel_text(data, code_page))))
        assert not any(r.get("name") in names for r in rows), code_page
    assert {r["name"] for r in csv.DictReader(io.StringIO(data.decode("utf-8")))} <= names


def test_each_row_names_its_model_and_the_summary_counts_review(chinese_folder, tiny_model, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert batch.main([str(chinese_folder), "--out", str(out), "--model", str(tiny_model), "--no-progress",
                       "--low-confidence", "0.9"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert {(r["model"], r["input"]) for r in rows} == {("image", "png"), ("image", "csv")}
    assert all(r["model_version"] == "tiny-test 0.0.1" for r in rows)
    # the tiny model's meta.json has no fitted review rule: the flag's threshold is the rule, per row
    assert all(r["review"] == str(int(float(r["confidence"]) < 0.9)) for r in rows)
    unsure = sum(r["review"] == "1" for r in rows)
    assert f"review: {unsure} card(s) to check by hand (column review; image: confidence below 0.9, the " \
           "fallback rule)" in printed
    # the threshold is the flag's: nothing is below 0, every answer is below 1.0
    for threshold, expected in (("0", 0), ("1", len(rows))):
        assert batch.main([str(chinese_folder), "--out", str(out), "--model", str(tiny_model), "--no-progress",
                           "--low-confidence", threshold]) == 0
        assert f"review: {expected} card(s)" in capsys.readouterr().out


def test_rows_say_unknown_second_label_and_measures_with_units(tiny_model, tmp_path, capsys):
    folder = tmp_path / "cards"
    folder.mkdir()
    (folder / "png-card.png").write_bytes(card_png("pound", 1))
    (folder / "csv-card.csv").write_bytes(card_csv("pound", 1))
    smiley = next(n for n in notcard_images() if n.kind == "smiley")
    (folder / "smiley.png").write_bytes(smiley.png)
    out = tmp_path / "p.csv"
    assert batch.main([str(folder), "--out", str(out), "--model", str(tiny_model), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    header = out.read_text(encoding="utf-8-sig").splitlines()[0].split(",")
    assert header[:12] == ["id", "label", "name", "confidence", "unknown", "unknown_score", "review", "second_label",
                           "second_probability", "model", "model_version", "input"]
    assert {"peak_load_kN", "stroke_m", "work_kJ", "peak_load_rel", "stroke_rel", "fillage"} <= set(header)
    rows = {r["id"]: r for r in csv.DictReader(out.open(encoding="utf-8-sig"))}
    assert rows["smiley"]["unknown"] == "1" and rows["smiley"]["unknown_reasons"]
    assert float(rows["smiley"]["unknown_score"]) >= 0.5
    assert rows["png-card"]["unknown"] == rows["csv-card"]["unknown"] == "0"
    assert "unknown: 1 card(s) not a card or none of the twelve" in printed
    for r in rows.values():  # the runner-up, always there and below the answer
        assert r["second_label"] != r["label"] and float(r["second_probability"]) <= float(r["confidence"])
    # a CSV card's measures in kN and m, a PNG card's as fractions of the image: one unit per column
    by_csv, by_png = rows["csv-card"], rows["png-card"]
    assert 60 < float(by_csv["peak_load_kN"]) < 75 and float(by_csv["stroke_m"]) == pytest.approx(3.0, abs=0.01)
    assert by_csv["peak_load_rel"] == "" and by_png["peak_load_kN"] == ""
    assert 0 < float(by_png["stroke_rel"]) <= 1 and 0 < float(by_png["peak_load_rel"]) <= 1
    # the same card's fillage from its samples and from its picture: the load drops at 45 % of the stroke
    assert float(by_csv["fillage"]) == pytest.approx(0.45, abs=0.05)
    assert float(by_png["fillage"]) == pytest.approx(float(by_csv["fillage"]), abs=0.05)
    assert "cause" not in header  # advice only when asked


def test_advice_columns_when_asked(tiny_model, tmp_path):
    folder = tmp_path / "cards"
    folder.mkdir()
    (folder / "a.png").write_bytes(card_png("normal"))
    out = tmp_path / "p.csv"
    assert batch.main([str(folder), "--out", str(out), "--model", str(tiny_model), "--no-progress", "--advice"]) == 0
    row = next(csv.DictReader(out.open(encoding="utf-8-sig")))
    condition = next(c for c in CONDITIONS if c.code == row["label"])
    assert row["cause"] == condition.cause and row["remedy_en"] == condition.remedy_en
    assert row["advice_sources"].count("http") == len(condition.sources)


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "x"])
def test_bad_low_confidence_argument(tiny_model, tmp_path, bad):
    with pytest.raises(SystemExit):
        batch.main([str(tmp_path), "--out", str(tmp_path / "p.csv"), "--model", str(tiny_model),
                    "--low-confidence", bad])
