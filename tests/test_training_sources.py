"""Several sources in ``--data``: parsing and one-line errors, per-source split, shares, provenance, the
vendored field set as ``field``, the small-holdout warning. Real cards: a tiny simulated set and a few
vendored field cards; one-epoch runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FEW_FIELD_PER_CLASS, REPO, simulated_train_set

PER_CLASS = 3


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    return simulated_train_set(tmp_path_factory, PER_CLASS, seed=21)


# ------------------------------------------------------------------------------------------ parsing


def test_parse_sources_aliases_paths_and_shares(sim_dir, few_field_csv):
    from training.sources import parse_sources

    specs = parse_sources(["sim", f"{few_field_csv}:0.3"])
    assert [(s.name, s.spec, s.share) for s in specs] == [("sim", "sim", None), ("few", str(few_field_csv), 0.3)]
    assert specs[0].is_sim and not specs[1].is_sim
    assert [s.name for s in parse_sources("field")] == ["field"]
    assert parse_sources([str(sim_dir)])[0].name == "train"
    both = parse_sources(["sim:0.25", "field:0.75"])
    assert [s.share for s in both] == [0.25, 0.75]


@pytest.mark.parametrize("words, message", [
    (["nosuch.zip"], "unknown source"),
    (["field:1.5"], "share must be a fraction"),
    (["field:0"], "share must be a fraction"),
    (["sim:0.6", "field:0.6"], "add up to 1.2"),
    (["sim:0.5", "field"], None),  # fine: field takes the rest
    (["sim:1", "field"], "leave some"),
    (["sim", "sim"], "more than once"),
    ([], "at least one source"),
])
def test_bad_sources_are_refused_with_one_line(words, message):
    from training.sources import DataSpecError, parse_sources

    if message is None:
        assert len(parse_sources(words)) == 2
        return
    with pytest.raises(DataSpecError, match=message) as err:
        parse_sources(words)
    assert "\n" not in str(err.value)


def test_cli_unknown_source_exits_2_with_one_line(tmp_path, capsys):
    from training import run

    assert run.main(["--data", "sim", str(tmp_path / "nope.zip"), "--no-vdl", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --data") and "nope.zip" in err[0]


# ------------------------------------------------------------------------------------------ shares


def test_share_sampler_meets_the_shares_by_repeating_and_subsampling():
    from training.sources import ShareSampler

    small, large = np.arange(0, 10), np.arange(100, 190)  # 10 and 90 cards: 100 draws an epoch
    sampler = ShareSampler([small, large], [0.3, None], seed=4)
    assert len(sampler) == 100 and sampler.need == [30, 70]
    e0, e1 = sampler(0), sampler(1)
    assert len(e0) == len(e1) == 100
    assert np.isin(e0, small).sum() == 30 and np.isin(e0, large).sum() == 70
    counts = np.bincount(e0[np.isin(e0, small)], minlength=10)
    assert counts.min() == counts.max() == 3  # 30 of 10 cards: every card exactly three times
    assert len(set(e0[np.isin(e0, large)])) == 70  # 70 of 90: a subset without repeats
    assert np.array_equal(sampler(0), e0)  # the same epoch draws the same cards (resume)
    assert not np.array_equal(np.sort(e0), np.sort(e1))  # the next epoch draws others of the large source
    every = ShareSampler([small, large], [0.5, 0.5], seed=0)
    assert every.need == [50, 50]


def test_no_shares_is_plain_concatenation():
    from training.sources import SourceSpec, training_draws

    pools = [np.array([0, 1, 2]), np.array([5, 6])]
    draws, sampler = training_draws(pools, [SourceSpec("a", "a"), SourceSpec("b", "b")], seed=0)
    assert sampler is None and draws.tolist() == [0, 1, 2, 5, 6]


# ------------------------------------------------------------------------------------------ runs


def _train(argv):
    from training import pipeline, run

    return pipeline.train_run(run.parse_args(argv))


def _read_scalars(log_dir: Path) -> set[str]:
    from visualdl import LogReader

    tags = set()
    for f in log_dir.glob("vdlrecords.*.log"):
        tags |= set(LogReader(file_path=str(f)).get_tags().get("scalar", []))
    return tags


def test_two_sources_split_apart_mixed_by_share_with_provenance(sim_dir, few_field_csv, training_cache, tmp_path, capsys):
    from shared.meta import load_meta

    result = _train(["--data", str(sim_dir), f"{few_field_csv}:0.5", "--epochs", "1", "--cache-dir", str(training_cache),
                     "--runs-dir", str(tmp_path / "runs"), "--logdir", str(tmp_path / "log"), "--name", "mix",
                     "--out", str(tmp_path / "models" / "mix"), "--no-progress", "--no-graph"])
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "mix"
    config = json.loads((run / "config.json").read_text())
    sim, field = config["sources"]
    assert (sim["name"], sim["share"], sim["cards"]) == ("train", None, 12 * PER_CLASS)
    assert (field["name"], field["share"], field["cards"]) == ("few", 0.5, 7 * FEW_FIELD_PER_CLASS)
    assert sim["fingerprint"] and field["fingerprint"] and sim["fingerprint"] != field["fingerprint"]
    # each source split on its own, per class: 6 field cards of a class -> 5 train, 1 holdout
    assert field["train_cards"] == 7 * 5 and field["holdout_cards"] == 7
    assert sim["train_cards"] == 12 * 2 and sim["holdout_cards"] == 12
    # half of every epoch's draws from the 35 field cards, the rest from the 24 simulated ones
    total = sim["train_cards"] + field["train_cards"]
    assert field["draws_per_epoch"] == round(0.5 * total) and sim["draws_per_epoch"] == total - field["draws_per_epoch"]
    train = (run / "train.txt").read_text(encoding="utf-8").splitlines()
    holdout = (run / "test.txt").read_text(encoding="utf-8").splitlines()
    assert len(train) == total
    assert sum(line.startswith("few/") for line in train) == field["draws_per_epoch"]
    assert not {x.rsplit(" ", 1)[0] for x in train} & {x.rsplit(" ", 1)[0] for x in holdout}
    # holdout accuracy per source and overall: summary, meta.json, VisualDL
    by_source = result["metrics"]["holdout_by_source"]
    assert set(by_source) == {"train", "few"} and by_source["few"]["holdout_cards"] == 7
    assert "few: holdout accuracy" in out
    meta = load_meta(tmp_path / "models" / "mix")
    assert [s["name"] for s in meta["data"]["sources"]] == ["train", "few"]
    assert meta["data"]["sources"][1]["share"] == 0.5
    assert meta["metrics"]["holdout_by_source"] == by_source
    tags = _read_scalars(tmp_path / "log" / "mix")
    assert {"holdout_by_source/train", "holdout_by_source/few", "holdout/acc"} <= tags
    # 1 holdout card per class per source: the figure is noise, and the run says so
    assert "warning: holdout too small to trust" in out and "--folds K" in out


def test_one_source_is_what_it_always_was(sim_dir, training_cache, tmp_path):
    from training.data import load_data, split_indices

    _train(["--data", str(sim_dir), "--epochs", "1", "--cache-dir", str(training_cache), "--runs-dir", str(tmp_path),
            "--name", "one", "--no-vdl", "--no-export", "--no-progress"])
    cs = load_data(sim_dir, cache_dir=training_cache, progress=False)
    train_idx, holdout_idx = split_indices(cs.names, cs.labels, 0.1)
    listed = [line.rsplit(" ", 1)[0] for line in (tmp_path / "one" / "test.txt").read_text().splitlines()]
    assert listed == [cs.names[i] for i in holdout_idx]  # names unprefixed, the same split as before
    assert json.loads((tmp_path / "one" / "config.json").read_text())["sources"][0]["share"] is None


def test_field_alias_is_the_vendored_file(training_cache):
    from training.data import FIELD_CARDS
    from training.sources import parse_sources, resolve_path

    assert FIELD_CARDS == REPO / "data" / "field" / "field-cards.csv" and FIELD_CARDS.is_file()
    folder = resolve_path(parse_sources("field")[0], cache_dir=training_cache)
    assert len(list(folder.rglob("*.png"))) == 709  # the cards with one of our seven codes
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["A01", "A02", "A03", "A05", "A06", "A09", "A10"]


def test_field_set_and_docs_stay_inside_the_repository():
    from training.run import parse_args

    assert Path(parse_args(["field-set"]).csv) == REPO / "data" / "field" / "field-cards.csv"
    assert "../shared" not in (REPO / "docs" / "TRAINING.md").read_text(encoding="utf-8")


def test_eval_reads_the_vendored_field_cards(tiny_cardnet, training_cache, tmp_path):
    from training import run

    assert run.main(["eval", "--model", str(tiny_cardnet), "--data", "field", "--out", str(tmp_path),
                     "--cache-dir", str(training_cache), "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["cards"] == 709 and report["data"].endswith("data/field/field-cards.csv")
