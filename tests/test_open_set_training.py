"""The "other" class in training (``--other-class``), the rules fitted on held-out real cards, the export
contract (``output: logits``, ``other_class``, ``confidence``, ``open_set``) and the eval report's answers.

Real pieces, tiny data: a few simulated cards, vendored field cards of our conditions and of other
conditions, the generated not-a-card pictures; one epoch per fit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from shared.labels import CODES
from tests.conftest import small_field_csv

K = 2
OTHERS = 24  # field cards of other conditions in the tiny CSV


def _names(path: Path) -> list[str]:
    return [line.rsplit(" ", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def field_csv(tmp_path_factory) -> Path:
    """6 vendored field cards of each of our seven codes (42) and 24 of other conditions."""
    return small_field_csv(tmp_path_factory.mktemp("field") / "mixed.csv", 6, others=OTHERS)


@pytest.fixture(scope="module")
def cv_run(field_csv, training_cache, tmp_path_factory):
    """``--data sim <field> --other-class --folds 2 --export``, one epoch per fit (3 simulated cards per class)."""
    from training import run

    root = tmp_path_factory.mktemp("oe")
    code = run.main(["--data", "sim", str(field_csv), "--sim-per-class", "3", "--other-class", "--folds", str(K),
                     "--export", "--epochs", "1", "--review-precision", "0.5",
                     "--cache-dir", str(training_cache), "--runs-dir", str(root / "runs"), "--logdir", str(root / "log"),
                     "--name", "oe", "--out", str(root / "models" / "oe"), "--no-progress", "--no-graph", "--no-vdl"])
    assert code == 0
    return root


# --------------------------------------------------------------------------------------------
# Sources of class "other"
# --------------------------------------------------------------------------------------------


def test_other_sources_bring_the_rows_without_a_code_and_not_cards_for_images(field_csv, training_cache):
    from shared.preprocess import PreprocessConfig
    from training.classes import OTHER
    from training.other_class import condition_of, other_rows
    from training.sources import DataSpecError, load_sources, other_sources, parse_sources

    specs = parse_sources(["sim", str(field_csv)])
    extra = other_sources(specs, "image")
    assert [(s.name, s.role) for s in extra] == [("mixed-other", "other"), ("notcards", "notcards")]
    assert [s.name for s in other_sources(specs, "series")] == ["mixed-other"]  # a picture has no samples
    with pytest.raises(DataSpecError, match="other"):
        other_sources(parse_sources(["sim"]), "series")
    sources = load_sources([parse_sources([str(field_csv)])[0], *extra], PreprocessConfig(), cache_dir=training_cache,
                           progress=False)
    labels, names = sources.cards.labels, sources.cards.names
    assert (labels[sources.indices(0)] < len(CODES)).all()
    others = sources.indices(1)
    assert len(others) == other_rows(field_csv) == OTHERS and (labels[others] == OTHER).all()
    assert {condition_of(names[i]) for i in others} <= {"DOUBLE_VALVE_LEAKAGE", "OIL_ROD_LEAKAGE", "OIL_TO_DENSE",
                                                         "ROD_BROKEN", "WORK_WITH_FLOAT"}
    notcards = sources.indices(2)
    assert len(notcards) >= 120 and (labels[notcards] == OTHER).all()  # 144 drawn; the decoder refuses a few


def test_not_card_pictures_train_and_are_never_held_out(field_csv, training_cache):
    from shared.preprocess import PreprocessConfig
    from training.sources import load_sources, other_sources, parse_sources, split_by_source

    specs = parse_sources([str(field_csv)])
    sources = load_sources(specs + other_sources(specs, "image"), PreprocessConfig(), cache_dir=training_cache,
                           progress=False)
    train, holdout = split_by_source(sources, 0.3, "card", r"^(.+?)[_\-]", 0)
    assert len(train[2]) == len(sources.indices(2))  # notcards: all train
    assert not np.isin(holdout, sources.indices(2)).any()
    assert np.isin(holdout, sources.indices(1)).any()  # other-condition field cards: held out like any card


def test_training_seeds_of_the_not_cards_are_not_the_tests():
    from tests.notcards import TRAINING_SEEDS, notcard_images

    assert min(TRAINING_SEEDS) >= 100
    tested = {p.png for seed in range(10) for p in notcard_images(seed)}
    same = [p for seed in TRAINING_SEEDS for p in notcard_images(seed) if p.png in tested]
    # other seeds draw other pictures; only a kind with few variants (a checkerboard's square size) can repeat
    assert len(same) <= 3 and {p.kind for p in same} <= {"checkerboard"}


# --------------------------------------------------------------------------------------------
# Cross-validation: 13 outputs, out-of-fold rules, the export contract
# --------------------------------------------------------------------------------------------


def test_other_condition_cards_are_folded_and_every_real_card_scored_once_out_of_fold(cv_run, field_csv):
    runs = cv_run / "runs" / "oe"
    held = []
    for k in range(1, K + 1):
        held_out = _names(runs / f"fold{k}" / "fold.txt")
        trained = _names(runs / f"fold{k}" / "train.txt")
        assert not set(held_out) & set(trained)  # no held-out card trains its fold's network
        assert any(n.startswith("mixed-other/") for n in held_out)  # cards of other conditions held out too
        assert any(n.startswith("mixed-other/") for n in trained)  # ... and the others train
        assert any(n.startswith("notcards/") for n in trained)
        assert not any(n.startswith("notcards/") for n in held_out)
        held += held_out
    assert len(held) == len(set(held)) == 42 + OTHERS
    oof = np.load(runs / "oof.npz")
    assert sorted(oof["names"].tolist()) == sorted(held)  # the rules' cards are exactly the held-out ones
    assert oof["outputs"].shape == (42 + OTHERS, 13)
    for name, fold in zip(oof["names"], oof["fold"]):
        assert name in _names(runs / f"fold{fold}" / "fold.txt")
    report = json.loads((runs / "cv.json").read_text(encoding="utf-8"))
    assert report["measured_on"]["cards"] == 42  # the twelve labels' figures: over the twelve
    assert sum(report["confusion"]["matrix"][i][j] for i in range(12) for j in range(12)) == 42
    assert report["other_class"]["other_cards"] == OTHERS and report["other_class"]["in_class_cards"] == 42
    assert {p["label"] for p in report["predictions"]} >= {"other", "A01"}


def test_rules_are_fitted_on_the_out_of_fold_outputs_only(cv_run):
    from shared.meta import load_meta
    from training.answer_rules import fit_answer_rules

    runs = cv_run / "runs" / "oe"
    oof = np.load(runs / "oof.npz")
    meta = load_meta(cv_run / "models" / "oe")
    again = fit_answer_rules(oof["outputs"], oof["labels"], meta["confidence"]["fitted_on"],
                             names=oof["names"].tolist(), review_precision=0.5, seed=0, cv=True)
    assert again.confidence["temperature"] == meta["confidence"]["temperature"]
    assert again.confidence["review"]["min_top"] == meta["confidence"]["review"]["min_top"]
    assert again.open_set["threshold"] == meta["open_set"]["threshold"]
    assert "out-of-fold" in meta["confidence"]["fitted_on"] and "42 cards" in meta["confidence"]["fitted_on"]
    assert (runs / "reliability.png").stat().st_size > 2000


def test_exported_meta_follows_the_contract(cv_run):
    from shared.meta import load_meta
    from training.evaluate_exported import ExportedModel

    folder = cv_run / "models" / "oe"
    meta = load_meta(folder)
    assert meta["output"] == "logits" and meta["other_class"] is True
    assert [lab["code"] for lab in meta["labels"]] == list(CODES)  # the labels stay the twelve
    c = meta["confidence"]
    assert c["temperature"] > 0 and 0 <= c["ece_before"] <= 1 and 0 <= c["ece_after"] <= 1 and c["fitted_on"]
    assert {"min_top", "min_margin", "target_precision", "fitted_on"} <= set(c["review"])
    assert c["review"]["target_precision"] == 0.5 and 0 <= c["review"]["min_top"] <= 1
    assert len(c["reliability"]["after"]) == c["reliability"]["bins"]
    o = meta["open_set"]
    assert o["method"] == "outlier_exposure" and o["accept_rate"] == 0.95 and o["fitted_on"] == c["fitted_on"]
    assert 0 < o["threshold"] <= 1 and 0 <= o["auroc"] <= 1 and "cross-validated" in o["auroc_note"]
    assert meta["metrics"]["cross_validation"]["other_class"]["other_cards"] == OTHERS
    x = np.zeros((2, 1, 190, 400), np.float32)
    assert ExportedModel(folder)(x).shape == (2, 13)  # the first output: 13 logits


def test_threshold_accepts_the_stated_share_of_held_out_in_class_cards(cv_run):
    from shared.meta import load_meta
    from training.metrics import in_class, other_probability

    oof = np.load(cv_run / "runs" / "oe" / "oof.npz")
    meta = load_meta(cv_run / "models" / "oe")
    p_other = other_probability(oof["outputs"])[in_class(oof["labels"])]
    accepted = float((p_other < meta["open_set"]["threshold"]).mean())
    assert 0.95 <= accepted <= 0.95 + 1 / len(p_other) + 1e-9


def test_the_13_output_network_exports_its_logits(cv_run, field_csv, training_cache):
    """The exported final network returns what the dynamic graph does (13 logits), and the twelve's argmax is the label."""
    from training.data import field_csv_to_folder, load_data
    from training.evaluate_exported import ExportedModel
    from training.export import ImageLogits
    from training.models import build_model

    net = build_model("cardnet", num_classes=13)
    net.set_state_dict(paddle.load(str(cv_run / "runs" / "oe" / "final" / "best.pdparams")))
    head = ImageLogits(net)
    head.eval()
    x = load_data(field_csv_to_folder(field_csv, cache_dir=training_cache), cache_dir=training_cache,
                  progress=False).model_input(np.arange(4))
    np.testing.assert_allclose(ExportedModel(cv_run / "models" / "oe")(x), head(paddle.to_tensor(x)).numpy(),
                               rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# The eval report
# --------------------------------------------------------------------------------------------


def test_eval_report_answers_unknown_review_calibration_and_other_conditions(cv_run, field_csv, training_cache, tmp_path):
    from training import run

    out = tmp_path / "eval"
    assert run.main(["eval", "--model", str(cv_run / "models" / "oe"), "--data", str(field_csv), "--out", str(out),
                     "--cache-dir", str(training_cache), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["cards"] == 42 + OTHERS and report["cards_of_the_twelve"] == 42
    assert report["model_output"] == "logits"
    a = report["answers"]
    assert a["review_rule"] == "meta"
    rows = list(csv.DictReader(open(out / "cards.csv", encoding="utf-8")))
    assert len(rows) == report["cards"]
    assert a["unknown"] == sum(int(r["unknown"]) for r in rows)
    assert a["review"] == sum(int(r["review"]) for r in rows)
    from shared.meta import load_meta

    threshold = load_meta(cv_run / "models" / "oe")["open_set"]["threshold"]
    for r in rows:  # unknown: the structural check failed, or the model's p(other) reached the threshold
        assert int(r["unknown"]) == int(r["card_check_ok"] == "0" or float(r["p_other"]) >= threshold)
    in_class = [r for r in rows if r["true"] != "other"]
    kept = [r for r in in_class if r["review"] == "0"]
    if kept:
        assert a["accuracy_without_review"] == pytest.approx(np.mean([int(r["correct"]) for r in kept]), abs=1e-4)
    assert a["false_unknown_rate"] == pytest.approx(np.mean([int(r["unknown"]) for r in in_class]), abs=1e-4)
    o = a["other_conditions"]
    others = [r for r in rows if r["true"] == "other"]
    assert o["cards"] == OTHERS == len(others)
    assert o["called_unknown_rate"] == pytest.approx(np.mean([int(r["unknown"]) for r in others]), abs=1e-4)
    assert 0 <= o["auroc_p_other"] <= 1 and set(o["by_condition"]) <= {
        "DOUBLE_VALVE_LEAKAGE", "OIL_ROD_LEAKAGE", "OIL_TO_DENSE", "ROD_BROKEN", "WORK_WITH_FLOAT"}
    cal = report["calibration"]
    assert 0 <= cal["ece"] <= 1 and 0 <= cal["ece_uncalibrated"] <= 1
    assert (out / "reliability.png").stat().st_size > 2000
    assert "trained on" in report["warning"]  # the exported model saw these cards: said so
    text = (out / "confusion.txt").read_text(encoding="utf-8")
    assert "unknown" in text and "review" in text and "cards of other conditions" in text


def test_an_old_probabilities_folder_still_evaluates(tmp_path, few_field_csv, training_cache):
    """A folder exported before (softmax head, output: probabilities) is read as it is: the low-confidence
    review fallback, no open-set answer; its accuracy is that of its probabilities."""
    from shared.meta import load_meta
    from training.evaluate_exported import ExportedModel, evaluate_exported
    from training.export import export_model
    from training.image_models import CardNet

    paddle.seed(4)
    folder = export_model(CardNet(), tmp_path / "old", {"name": "old"}, output="probabilities")
    meta = load_meta(folder)
    assert meta["output"] == "probabilities" and "other_class" not in meta
    report = evaluate_exported(folder, few_field_csv, tmp_path / "eval", progress=False, cache_dir=training_cache)
    assert report["model_output"] == "probabilities" and report["answers"]["review_rule"] == "low_confidence"
    assert report["answers"]["unknown_by_model"] == 0
    from training.data import field_csv_to_folder, load_data

    cs = load_data(field_csv_to_folder(few_field_csv, cache_dir=training_cache), cache_dir=training_cache, progress=False)
    probs = ExportedModel(folder)(cs.model_input(np.arange(len(cs))))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert report["accuracy"] == pytest.approx(float((probs.argmax(axis=1) == cs.labels).mean()), abs=1e-4)
    assert report["calibration"]["ece"] == report["calibration"]["ece_uncalibrated"]


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def test_read_outputs_applies_temperature_review_and_threshold():
    from shared import confidence as C
    from training.evaluate_exported import read_outputs

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (50, 13))
    meta = {"output": "logits", "other_class": True,
            "confidence": {"temperature": 2.0, "review": {"min_top": 0.4, "min_margin": 0.1}},
            "open_set": {"method": "outlier_exposure", "threshold": 0.3}}
    a = read_outputs(logits, meta)
    np.testing.assert_allclose(a.probabilities, C.softmax(logits[:, :12], 2.0))
    np.testing.assert_allclose(a.other, C.softmax(logits)[:, 12])
    top, margin = C.top_two(a.probabilities)
    assert np.array_equal(a.review, (top < 0.4) | (margin < 0.1)) and a.review_rule == "meta"
    assert np.array_equal(a.open_set_unknown, a.other >= 0.3)
    with pytest.raises(ValueError, match="output"):
        read_outputs(logits, {"output": "scores"})


def test_open_set_threshold_and_halves():
    from training.answer_rules import halves, open_set_threshold

    p = np.linspace(0.0, 0.99, 100)
    t = open_set_threshold(p, 0.95)
    assert float((p < t).mean()) == 0.95 and float((p >= t).mean()) == 0.05
    assert open_set_threshold(np.full(10, 0.2), 0.95) > 0.2  # all accepted when every card scores the same
    labels = np.repeat(np.arange(4), [10, 11, 7, 30])
    h = halves(labels, 3)
    assert np.array_equal(h, halves(labels, 3))
    for c in range(4):
        assert abs(int((h[labels == c] == 0).sum()) - int((h[labels == c] == 1).sum())) <= 1


def test_cross_fitted_ece_scales_each_half_with_the_other_halfs_temperature():
    from shared import confidence as C
    from training.answer_rules import fit_answer_rules, halves

    rng = np.random.default_rng(1)
    y = rng.integers(0, 12, 400)
    logits = rng.normal(0, 1, (400, 12))
    logits[np.arange(400), y] += 1.5
    logits *= 4.0  # over-confident: temperature scaling must help
    rules = fit_answer_rules(logits, y, "synthetic", seed=7)
    half = halves(y, 7)
    t = [C.fit_temperature(logits[half == k], y[half == k]) for k in (0, 1)]
    crossed = np.empty((400, 12))
    for k in (0, 1):
        crossed[half != k] = C.softmax(logits[half != k], t[k])
    assert rules.confidence["ece_after"] == round(C.expected_calibration_error(crossed, y, 15), 4)
    assert rules.confidence["ece_after"] < rules.confidence["ece_before"] and rules.confidence["temperature"] > 1
    assert rules.open_set is None  # twelve outputs: no open-set rule
    with pytest.raises(ValueError, match="too few"):
        fit_answer_rules(logits[:10], y[:10], "too few")


def test_late_fusion_with_other_exports_the_log_of_the_mixed_13_way_probabilities(tmp_path):
    import paddle.nn.functional as F

    from training.dual_models import LateFusionDual
    from training.evaluate_exported import ExportedModel
    from training.export import export_model

    paddle.seed(2)
    net = LateFusionDual(num_classes=13)
    net.set_image_weight(0.375)
    folder = export_model(net, tmp_path / "dual", {"name": "dual13", "other_class": True}, kind="dual")
    rng = np.random.default_rng(3)
    image = (rng.random((2, 1, 190, 400)) > 0.5).astype(np.float32)
    series = rng.standard_normal((2, 5, 256)).astype(np.float32)
    net.eval()
    with paddle.no_grad():
        p = 0.375 * F.softmax(net.image_net(paddle.to_tensor(image)), -1).numpy() + \
            0.625 * F.softmax(net.series_net(paddle.to_tensor(series)), -1).numpy()
    got = ExportedModel(folder).run({"image": image, "series": series})
    assert got.shape == (2, 13)
    np.testing.assert_allclose(np.exp(got), p, rtol=1e-4, atol=1e-6)


def test_export_refuses_outputs_that_disagree_with_other_class(tmp_path):
    from training.export import export_model
    from training.image_models import CardNet

    with pytest.raises(ValueError, match="13"):
        export_model(CardNet(), tmp_path / "a", {"other_class": True})
    with pytest.raises(ValueError, match="logits"):
        export_model(CardNet(num_classes=13), tmp_path / "b", {"other_class": True}, output="probabilities")


def test_init_refuses_a_model_with_another_number_of_outputs(cv_run, field_csv, training_cache, tmp_path, capsys):
    from training import run

    code = run.main(["--data", str(field_csv), "--init", str(cv_run / "models" / "oe"), "--no-other-class",
                     "--epochs", "1", "--cache-dir", str(training_cache), "--runs-dir", str(tmp_path), "--no-vdl",
                     "--no-export", "--no-progress"])
    assert code == 2 and "13 outputs" in capsys.readouterr().err
