"""--input series / dual: training 1 epoch on a tiny simulated set, export, parity, meta, eval, field set."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PER_CLASS = 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    from tests.conftest import simulated_train_set

    return simulated_train_set(tmp_path_factory, PER_CLASS, seed=5)


# what is trained: key -> (--input, --model or None for the default of that input)
RUNS = {"series": ("series", None), "dual": ("dual", None), "dualnet": ("dual", "dualnet")}


def _train(key: str, data: Path, cache: Path, root: Path) -> dict:
    from training.run import main

    kind, model = RUNS[key]
    out = root / "models" / key
    argv = ["--data", str(data), "--input", kind, "--epochs", "1", "--batch-size", "8", "--name", f"t-{key}",
            "--logdir", str(root / "log"), "--runs-dir", str(root / "runs"), "--out", str(out),
            "--cache-dir", str(cache), "--no-progress", "--no-graph", "--holdout", "0.34",
            *(["--model", model] if model else [])]
    assert main(argv) == 0
    return json.loads((root / "runs" / f"t-{key}" / "summary.json").read_text())


@pytest.fixture(scope="module")
def trained(sim_dir, cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return {key: (_train(key, sim_dir, cache, root), root / "models" / key) for key in RUNS}


@pytest.mark.parametrize("key", list(RUNS))
def test_train_export_meta(trained, key):
    from shared.meta import load_meta
    from shared.series import SeriesConfig

    summary, folder = trained[key]
    kind = RUNS[key][0]
    assert summary["model"] == {"series": "seriesnet", "dual": "dualnet_late", "dualnet": "dualnet"}[key]
    assert 0.0 <= summary["metrics"]["holdout_acc"] <= 1.0
    meta = load_meta(folder)
    assert meta["kind"] == kind
    assert SeriesConfig.from_dict(meta["series_preprocess"]) == SeriesConfig()
    names = [i["name"] for i in meta["inputs"]]
    assert names == (["series"] if kind == "series" else ["image", "series"])
    assert meta["recipe"]["input"] == kind
    parts = ("image", "series") if key == "dual" else ("",)  # a late-fusion run keeps one history per network
    assert all((Path(summary["run_dir"]) / part / "history.json").is_file() for part in parts)


@pytest.mark.parametrize("key", list(RUNS))
def test_export_parity(trained, key, sim_dir, cache):
    """The exported model (Paddle Inference, fed by name) returns the dynamic-graph network's logits
    (a late-fusion dual: its log-probabilities), as meta.json says (output: logits)."""
    import paddle

    from serving.predictor import MultiInputPredictor
    from training.evaluate_exported import ExportedModel
    from training.models import build_model, split_stem

    summary, folder = trained[key]
    kind = RUNS[key][0]
    net = build_model(summary["model"])
    net.set_state_dict(paddle.load(str(Path(summary["run_dir"]) / "best.pdparams")))
    net.eval()
    rng = np.random.default_rng(0)
    series = rng.random((3, 5, 256)).astype(np.float32)
    image = (rng.random((3, 1, 190, 400)) > 0.5).astype(np.float32)
    with paddle.no_grad():
        if kind == "series":
            want = net(paddle.to_tensor(series)).numpy()
        else:
            want = net(paddle.to_tensor(image), paddle.to_tensor(series)).numpy()
    from shared.meta import load_meta

    assert load_meta(folder)["output"] == "logits"
    feeds = {"series": series} if kind == "series" else {"image": image, "series": series}
    got = ExportedModel(folder).run(feeds)
    np.testing.assert_allclose(got, want, atol=1e-4)
    served = MultiInputPredictor(folder, device="cpu", batch_sizes=(1, 4)).predict(feeds)  # the raw first output
    np.testing.assert_allclose(served, want, atol=1e-4)
    assert split_stem(net)[0] is (net.stem if key == "dualnet" else None)


def test_late_fusion_run(trained):
    """The default dual run trains the image and the series network in their own run folders, then fuses them."""
    summary, folder = trained["dual"]
    run_dir = Path(summary["run_dir"])
    lf = summary["metrics"]["late_fusion"]
    assert {lf["image"]["model"], lf["series"]["model"]} == {"cardnet", "seriesnet"}
    for part in ("image", "series"):
        history = json.loads((run_dir / part / "history.json").read_text())
        assert len(history) == lf[part]["epochs_run"] == 1
        assert (run_dir / part / "best.pdparams").is_file()
    by_weight = lf["holdout_acc_by_weight"]
    assert by_weight["0"] == lf["series"]["holdout_acc"] and by_weight["1"] == lf["image"]["holdout_acc"]
    assert summary["metrics"]["holdout_acc"] == max(by_weight.values()) == by_weight[f"{lf['image_weight']:g}"]
    assert 0.0 <= lf["holdout_acc_crossfit"] <= 1.0
    assert (run_dir / "best.pdparams").is_file()
    from shared.meta import load_meta

    assert load_meta(folder)["metrics"]["late_fusion"]["image_weight"] == lf["image_weight"]


@pytest.mark.parametrize("kind", ["series", "dual"])
def test_eval_report(trained, kind, sim_dir, cache, tmp_path):
    from training.evaluate_exported import evaluate_exported

    _, folder = trained[kind]
    report = evaluate_exported(folder, sim_dir, tmp_path / "eval", progress=False, cache_dir=cache)
    assert report["kind"] == kind and report["cards"] == 12 * PER_CLASS
    assert (tmp_path / "eval" / "confusion.png").is_file()


def test_series_skips_cards_without_csv(sim_dir, cache, tmp_path):
    """A card with only a PNG is kept for image training and skipped (and counted) for series training."""
    from shared.preprocess import PreprocessConfig
    from training.data import load_data
    from training.series_data import load_series, restrict

    data = tmp_path / "train"
    shutil.copytree(sim_dir, data)
    victim = sorted((data / "A03").glob("*.csv"))[0]
    victim.unlink()
    cs = load_data(data, PreprocessConfig(), cache_dir=cache, progress=False)
    series, ok, report = load_series(cs, cache_dir=cache, progress=False)
    assert len(cs) == 12 * PER_CLASS and report["without_series"] == 1 and report["by_reason"] == {"no csv": 1}
    kept = restrict(cs, ok)
    assert len(kept) == len(cs) - 1 and victim.stem not in kept.ids
    assert series.shape == (len(cs), 5, 256) and not series[~ok].any()
    # the cached answer is the same
    again = load_series(cs, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again[1], ok)


def test_model_input_mismatch_is_refused():
    from training.recipe import resolve_recipe
    from training.run import parse_args

    with pytest.raises(SystemExit, match="takes series input"):
        resolve_recipe(parse_args(["--input", "dual", "--model", "seriesnet"]))
    assert resolve_recipe(parse_args(["--input", "series"])).model == "seriesnet"
    assert resolve_recipe(parse_args(["--input", "dual"])).model == "dualnet_late"
    assert resolve_recipe(parse_args([])).model == "cardnet"


FIELD = REPO / "data" / "field" / "field-cards.csv"


def test_field_set_command(tmp_path, capsys):
    from training.run import main

    out = tmp_path / "field"
    assert main(["field-set", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    codes = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert codes and all(c.startswith("A") for c in codes)
    pngs, csvs = list(out.rglob("*.png")), list(out.rglob("*.csv"))
    assert len(pngs) == len(csvs) > 700
    assert os.path.commonpath([out, REPO]) != str(REPO)


def test_late_fusion_run_resumes_like_an_uninterrupted_one(sim_dir, cache, tmp_path):
    """Stopped inside the image part, resumed: same fused network as a run that was never stopped."""
    import paddle

    from training import pipeline, run

    runs = tmp_path / "runs"
    common = ["--data", str(sim_dir), "--input", "dual", "--epochs", "2", "--batch-size", "8", "--patience", "0",
              "--holdout", "0.34", "--no-vdl", "--no-export", "--no-progress", "--runs-dir", str(runs),
              "--cache-dir", str(cache)]
    full = pipeline.train_run(run.parse_args([*common, "--name", "full"]))
    part = pipeline.train_run(run.parse_args([*common, "--name", "part", "--stop-after", "1"]))
    assert part["interrupted"]
    assert json.loads((runs / "part" / "image" / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert not (runs / "part" / "series").exists()
    resumed = pipeline.train_run(run.parse_args([*common, "--resume"]))  # the latest run: found inside its part
    assert resumed["name"] == "part" and not resumed["interrupted"]
    assert resumed["metrics"]["late_fusion"] == full["metrics"]["late_fusion"]
    a, b = (paddle.load(str(runs / n / "best.pdparams")) for n in ("full", "part"))
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5, atol=1e-6, err_msg=key)
