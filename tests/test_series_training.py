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


def _train(kind: str, data: Path, cache: Path, root: Path) -> dict:
    from training.run import main

    out = root / "models" / kind
    argv = ["--data", str(data), "--input", kind, "--epochs", "1", "--batch-size", "8", "--name", f"t-{kind}",
            "--logdir", str(root / "log"), "--runs-dir", str(root / "runs"), "--out", str(out),
            "--cache-dir", str(cache), "--no-progress", "--no-graph", "--holdout", "0.34"]
    assert main(argv) == 0
    return json.loads((root / "runs" / f"t-{kind}" / "summary.json").read_text())


@pytest.fixture(scope="module")
def trained(sim_dir, cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return {kind: (_train(kind, sim_dir, cache, root), root / "models" / kind) for kind in ("series", "dual")}


@pytest.mark.parametrize("kind", ["series", "dual"])
def test_train_export_meta(trained, kind):
    from shared.meta import load_meta
    from shared.series import SeriesConfig

    summary, folder = trained[kind]
    assert summary["model"] == {"series": "seriesnet", "dual": "dualnet"}[kind]
    assert 0.0 <= summary["metrics"]["holdout_acc"] <= 1.0
    meta = load_meta(folder)
    assert meta["kind"] == kind
    assert SeriesConfig.from_dict(meta["series_preprocess"]) == SeriesConfig()
    names = [i["name"] for i in meta["inputs"]]
    assert names == (["series"] if kind == "series" else ["image", "series"])
    assert meta["recipe"]["input"] == kind
    assert (Path(summary["run_dir"]) / "history.json").is_file()


@pytest.mark.parametrize("kind", ["series", "dual"])
def test_export_parity(trained, kind, sim_dir, cache):
    """The exported model (Paddle Inference, fed by name) matches the dynamic-graph network."""
    import paddle

    from serving.routing import SeriesPredictor
    from training.evaluate import Predictor as EvalPredictor
    from training.models import split_stem
    from training.series_models import build_series_model

    summary, folder = trained[kind]
    net = build_series_model(summary["model"])
    net.set_state_dict(paddle.load(str(Path(summary["run_dir"]) / "best.pdparams")))
    net.eval()
    rng = np.random.default_rng(0)
    series = rng.random((3, 5, 256)).astype(np.float32)
    image = (rng.random((3, 1, 190, 400)) > 0.5).astype(np.float32)
    with paddle.no_grad():
        if kind == "series":
            want = paddle.nn.functional.softmax(net(paddle.to_tensor(series)), -1).numpy()
        else:
            want = paddle.nn.functional.softmax(net(paddle.to_tensor(image), paddle.to_tensor(series)), -1).numpy()
    feeds = {"series": series} if kind == "series" else {"image": image, "series": series}
    got = EvalPredictor(folder).run(feeds)
    np.testing.assert_allclose(got, want, atol=1e-5)
    served = SeriesPredictor(folder, device="cpu", batch_sizes=(1, 4)).predict(feeds)
    np.testing.assert_allclose(served, want, atol=1e-5)
    assert split_stem(net)[0] is (None if kind == "series" else net.stem)


@pytest.mark.parametrize("kind", ["series", "dual"])
def test_eval_report(trained, kind, sim_dir, cache, tmp_path):
    from training.evaluate import evaluate_folder

    _, folder = trained[kind]
    report = evaluate_folder(folder, sim_dir, tmp_path / "eval", progress=False, cache_dir=cache)
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
    from training.run import parse_args, resolve_recipe

    with pytest.raises(SystemExit, match="takes series input"):
        resolve_recipe(parse_args(["--input", "dual", "--model", "seriesnet"]))
    assert resolve_recipe(parse_args(["--input", "series"])).model == "seriesnet"
    assert resolve_recipe(parse_args(["--input", "dual"])).model == "dualnet"
    assert resolve_recipe(parse_args([])).model == "cardnet"


FIELD = REPO.parent / "shared" / "data" / "field-cards.csv"


@pytest.mark.skipif(not FIELD.is_file(), reason="field-cards.csv not present")
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
