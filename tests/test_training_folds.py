"""``--folds K``: stratified deterministic folds; the held-out fold never trains or selects; every card is
scored exactly once; cv.json, VisualDL per fold, and ``--export`` recording the figure in meta.json.
Real pieces, tiny data (a few simulated and vendored field cards), one epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FEW_FIELD_PER_CLASS

K = 3


def _names(path: Path) -> list[str]:
    return [line.rsplit(" ", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]


def test_folds_are_stratified_balanced_and_seeded():
    from training.crossval import fold_assignment

    labels = np.repeat(np.arange(7), [6, 6, 7, 5, 6, 9, 4])
    folds = fold_assignment(labels, 3, seed=0)
    assert np.array_equal(folds, fold_assignment(labels, 3, seed=0))
    assert not np.array_equal(folds, fold_assignment(labels, 3, seed=1))
    sizes = np.bincount(folds, minlength=3)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(labels)
    for c in range(7):  # each class spread over the folds as evenly as its count allows
        per_fold = np.bincount(folds[labels == c], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1


@pytest.fixture(scope="module")
def cv_run(few_field_csv, training_cache, tmp_path_factory):
    """``--data sim <field> --folds 3 --export``, one epoch per fold (3 simulated cards per class)."""
    from training import run

    root = tmp_path_factory.mktemp("cv")
    code = run.main(["--data", "sim", str(few_field_csv), "--sim-per-class", "3", "--folds", str(K), "--export",
                     "--epochs", "1",
                     "--cache-dir", str(training_cache), "--runs-dir", str(root / "runs"), "--logdir", str(root / "log"),
                     "--name", "cv", "--out", str(root / "models" / "cv"), "--no-progress", "--no-graph"])
    assert code == 0
    return root


def test_held_out_folds_never_train_or_select_and_every_card_is_scored_once(cv_run):
    runs = cv_run / "runs" / "cv"
    report = json.loads((runs / "cv.json").read_text(encoding="utf-8"))
    field_names = set()
    for k in range(1, K + 1):
        held_out = _names(runs / f"fold{k}" / "fold.txt")
        trained = _names(runs / f"fold{k}" / "train.txt")
        selection = _names(runs / f"fold{k}" / "test.txt")
        assert held_out and not set(held_out) & set(trained)  # the fold is not trained on
        assert not set(held_out) & set(selection)  # nor used to choose the epoch
        assert selection and all(n.startswith("sim/") for n in selection)  # selection: the simulated holdout
        assert not field_names & set(held_out)  # folds are disjoint
        field_names |= set(held_out)
        # the other folds are in training
        assert set(trained) >= {p["name"] for p in report["predictions"] if p["fold"] != k}
    predicted = [p["name"] for p in report["predictions"]]
    assert len(predicted) == len(set(predicted)) == 7 * FEW_FIELD_PER_CLASS  # every field card scored exactly once
    assert set(predicted) == field_names
    for fold in report["per_fold"]:  # per-fold accuracy is the predictions' accuracy on that fold
        rows = [p for p in report["predictions"] if p["fold"] == fold["fold"]]
        assert fold["cards"] == len(rows)
        assert fold["acc"] == pytest.approx(np.mean([p["label"] == p["pred"] for p in rows]), abs=1e-4)
    accs = [f["acc"] for f in report["per_fold"]]
    assert report["mean"] == pytest.approx(np.mean(accs), abs=1e-4)
    assert report["std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-4)
    assert np.array(report["confusion"]["matrix"]).sum() == 7 * FEW_FIELD_PER_CLASS
    assert report["measured_on"]["source"] == "few" and report["folds"] == K
    assert report["model_selection"].startswith("early stop and best epoch on the sim holdout")


def test_export_records_the_cross_validated_figure(cv_run):
    from shared.meta import load_meta

    meta = load_meta(cv_run / "models" / "cv")
    cv = meta["metrics"]["cross_validation"]
    report = json.loads((cv_run / "runs" / "cv" / "cv.json").read_text(encoding="utf-8"))
    assert cv["folds"] == K and cv["mean"] == report["mean"] and cv["std"] == report["std"]
    assert cv["measured_on"]["source"] == "few" and cv["measured_on"]["cards"] == 7 * FEW_FIELD_PER_CLASS
    assert set(cv["per_class"]) == {"A01", "A02", "A03", "A05", "A06", "A09", "A10"}
    # the final model trained on every field card: none is in its holdout
    final = cv_run / "runs" / "cv" / "final"
    assert sum(n.startswith("few/") for n in set(_names(final / "train.txt"))) == 7 * FEW_FIELD_PER_CLASS
    assert not any(n.startswith("few/") for n in _names(final / "test.txt"))
    assert sorted(p.name for p in (cv_run / "log" / "cv").iterdir()) == ["final", "fold1", "fold2", "fold3"]


def test_one_real_source_alone_trains_a_fixed_length(few_field_csv, training_cache, tmp_path, capsys):
    from training import run

    assert run.main(["--data", str(few_field_csv), "--folds", "2", "--epochs", "1", "--cache-dir", str(training_cache),
                     "--runs-dir", str(tmp_path), "--name", "alone", "--no-vdl", "--no-progress"]) == 0
    report = json.loads((tmp_path / "alone" / "cv.json").read_text(encoding="utf-8"))
    assert report["model_selection"].startswith("fixed length")
    assert _names(tmp_path / "alone" / "fold1" / "test.txt") == []
    assert len(report["predictions"]) == 7 * FEW_FIELD_PER_CLASS
    assert not (tmp_path / "alone" / "final").exists()  # no --export: no model
    assert "cross-validation on few" in capsys.readouterr().out


def test_two_real_sources_cannot_be_folded(few_field_csv, tmp_path, capsys):
    from training import run

    assert run.main(["--data", str(few_field_csv), "field", "--folds", "3", "--runs-dir", str(tmp_path), "--no-vdl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one real (non-sim) source" in err[0]
