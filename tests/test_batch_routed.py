"""The batch scorer's one pipeline with several model kinds: routing in the worker processes, the same rows
with and without workers, per-row model kind, shards, bounded read-ahead, errors as rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from serving import batch, routing
from shared.cards import CardError
from shared.dataset_io import CardFile
from tests.conftest import card_csv, card_png, export_tiny_series_model

CODES = [f"A{i:02d}" for i in range(1, 13)]


@pytest.fixture(scope="module")
def model_folders(tiny_model, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("routed-models")
    return {"image": tiny_model, "series": export_tiny_series_model("series", base / "series"),
            "dual": export_tiny_series_model("dual", base / "dual")}


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Pairs, lone CSVs, lone PNGs and unreadable cards, in two class folders."""
    root = tmp_path_factory.mktemp("mixed") / "cards"
    kinds = ("normal", "pound", "dome", "inertia", "sliver")
    for label in ("A01", "A02"):
        (root / label).mkdir(parents=True)
    for i in range(23):
        folder = root / ("A01" if i % 2 else "A02")
        kind = kinds[i % len(kinds)]
        if i % 3 != 2:
            (folder / f"c{i:02d}.png").write_bytes(card_png(kind, seed=i))
        if i % 3 != 1:
            (folder / f"c{i:02d}.csv").write_bytes(card_csv(kind, seed=i))
    (root / "A01" / "bad-png.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "A01" / "bad-csv.csv").write_bytes(b"a,b\n1,2\n")
    (root / "A02" / "bad-pair.png").write_bytes(card_png("normal", seed=99))
    (root / "A02" / "bad-pair.csv").write_bytes(b"x,y\n")
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_route_kind_is_the_services_rule():
    every = ("image", "series", "dual")
    assert routing.route_kind(every, True, True) == ("dual", "pair")
    assert routing.route_kind(every, False, True) == ("series", "csv")
    assert routing.route_kind(every, True, False) == ("image", "png")
    assert routing.route_kind(("image",), True, True) == ("image", "png")
    assert routing.route_kind(("image",), False, True) == ("image", "csv")
    assert routing.route_kind(("image", "dual"), False, True) == ("image", "csv")
    assert routing.route_kind(("series",), True, True) == ("series", "csv")
    with pytest.raises(CardError, match="loaded: series, dual"):
        routing.route_kind(("series", "dual"), True, False)


@pytest.mark.parametrize("set_kinds", [("image", "series", "dual"), ("image", "dual"), ("image",)])
def test_workers_give_the_same_rows_and_each_row_its_model(model_folders, mixed_folder, tmp_path, set_kinds):
    from serving.model_set import ModelSet
    from serving.routing import stack_inputs

    models = ",".join(str(model_folders[k]) for k in set_kinds)
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp_path / f"w{workers}.csv"
        assert batch.main([str(mixed_folder), "--out", str(outs[workers]), "--model", models, "--batch-size", "4",
                           "--workers", str(workers), "--no-progress"]) == 0
    assert outs[1].read_bytes() == outs[2].read_bytes()
    rows = {r["id"]: r for r in _rows(outs[2])}
    ms = ModelSet.load([model_folders[k] for k in set_kinds], device="cpu", batch_sizes=(1,))
    checked = set()
    for folder in sorted(mixed_folder.iterdir()):
        for stem in sorted({p.stem for p in folder.iterdir()}):
            png, csv_b = folder / f"{stem}.png", folder / f"{stem}.csv"
            png_b = png.read_bytes() if png.exists() else None
            csv_bytes = csv_b.read_bytes() if csv_b.exists() else None
            try:
                p, used, x, _ = ms.prepare(png_b, csv_bytes)
            except CardError as exc:
                assert rows[stem]["error"] == str(exc) and rows[stem]["label"] == "", stem
                continue
            want = p.output.interpret(p.predict(stack_inputs([x]))).probabilities[0]
            got = np.array([float(rows[stem][c]) for c in CODES])
            np.testing.assert_allclose(got, want, atol=1e-6, err_msg=stem)
            # the row names the model that answered and what it read
            assert (rows[stem]["model"], rows[stem]["input"]) == (p.kind, used), stem
            assert rows[stem]["model_version"] == f"{p.name} {p.version}"
            checked.add(used)
    assert checked == ({"pair", "csv", "png"} if "dual" in set_kinds else {"csv", "png"})


def test_score_cards_says_which_model_answered(model_folders, mixed_folder):
    from serving.model_set import ModelSet
    from shared.dataset_io import iter_cards

    ms = ModelSet.load([model_folders[k] for k in ("image", "series", "dual")], device="cpu", batch_sizes=(1, 4))
    with iter_cards(mixed_folder) as source:
        rows = list(batch.score_cards(ms, source, 4, workers=2))
    by_id = {r.id: r for r in rows}
    assert (by_id["c00"].model_kind, by_id["c00"].input_kind) == ("dual", "pair")
    assert (by_id["c01"].model_kind, by_id["c01"].input_kind) == ("image", "png")
    assert (by_id["c02"].model_kind, by_id["c02"].input_kind) == ("series", "csv")
    assert by_id["bad-pair"].outputs is None and by_id["bad-pair"].model_kind == "" and by_id["bad-pair"].error


def test_routed_shards_concatenate_to_the_unsharded_file(model_folders, mixed_folder, tmp_path):
    models = ",".join(str(model_folders[k]) for k in ("image", "series", "dual"))
    whole = tmp_path / "all.csv"
    assert batch.main([str(mixed_folder), "--out", str(whole), "--model", models, "--batch-size", "3",
                       "--no-progress"]) == 0
    parts = []
    for k in range(3):
        out = tmp_path / f"s{k}.csv"
        assert batch.main([str(mixed_folder), "--out", str(out), "--model", models, "--batch-size", "3",
                           "--shard", f"{k}/3", "--no-progress"]) == 0
        parts.append(_rows(out))
    assert [r for part in parts for r in part] == _rows(whole)


class _CountingSource:
    """A card source that counts the cards read from it (no refused members)."""

    problems: list = []

    def __init__(self, n: int) -> None:
        self.n, self.read = n, 0

    def __iter__(self):
        for i in range(self.n):
            self.read += 1
            yield CardFile(id=f"c{i:04d}", label=None, folder="", png=card_png("normal", seed=i % 3), name=f"c{i}.png")


def test_read_ahead_is_bounded(predictor):
    source = _CountingSource(400)
    rows = batch.score_cards(predictor, source, 8, workers=1)
    first = next(rows)
    assert first.outputs is not None
    assert source.read <= (2 * 1 + 2) * 8  # at most 2 * workers + 2 chunks in flight
    assert sum(1 for _ in rows) == 399


def test_an_unexpected_decoder_failure_is_that_cards_error_row(predictor, monkeypatch):
    real = routing.decode_card_png

    def flaky(data):
        if data == b"boom":
            raise RuntimeError("decoder bug")
        return real(data)

    monkeypatch.setattr(routing, "decode_card_png", flaky)
    cards = [CardFile(id="a", label=None, folder="", png=card_png("normal"), name="a.png"),
             CardFile(id="b", label=None, folder="", png=b"boom", name="b.png")]
    source = type("S", (), {"problems": [], "__iter__": lambda self: iter(cards)})()
    rows = list(batch.score_cards(predictor, source, 4, workers=1))
    assert rows[0].outputs is not None and rows[0].model_kind == "image"
    assert rows[1].outputs is None and "RuntimeError: decoder bug" in rows[1].error
