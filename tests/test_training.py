"""Training toolkit: ingest, split/balance, networks, train → export → eval, parity, resume, VisualDL, compare.

Everything runs on a tiny simulated set (6 cards per class) for one or two epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest

from shared.labels import CODES

REPO = Path(__file__).resolve().parent.parent
PER_CLASS = 6


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, CARDSENSE_CACHE=str(cache), PYTHONPATH=str(REPO))
    env.pop("FLAGS_enable_pir_api", None)
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    from tests.conftest import simulated_train_set

    return simulated_train_set(tmp_path_factory, PER_CLASS, seed=11)


@pytest.fixture(scope="module")
def messy_zip(sim_dir, tmp_path_factory) -> Path:
    """The simulated set as a competition zip, plus the mess real archives carry."""
    path = tmp_path_factory.mktemp("zip") / "train.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(sim_dir.rglob("*")):
            if f.is_file() and f.parent.name != "A04":  # A04: an empty class folder
                zf.write(f, f"train/{f.parent.name}/{f.name}")
        zf.writestr("train/A04/", b"")
        first = sorted((sim_dir / "A01").glob("*.png"))[0]
        zf.write(first, "train/A01/井12_示功图.png")  # Chinese name kept
        zf.writestr("train/A03/broken.png", b"\x89PNG\r\n\x1a\nnot really a png")  # unreadable card
        zf.write(first, "train/B99/stray.png")  # unknown folder
        zf.writestr("__MACOSX/train/A01/._x.png", b"junk")
        zf.writestr("train/.DS_Store", b"junk")
        zf.writestr("../evil.png", b"zip slip")
    return path


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def test_zip_ingest_reports_and_skips(messy_zip, cache):
    from training.data import load_data

    cs = load_data(messy_zip, cache_dir=cache, progress=False, use_cache=False)
    r = cs.report
    assert r["cards"] == 11 * PER_CLASS + 1
    assert r["empty_classes"] == ["A04"]
    assert r["unknown_folders"] == {"B99": 1}
    assert r["skipped"] == 1 and r["skipped_listed"][0]["name"].endswith("broken.png")
    assert any("escapes" in p["reason"] for p in r["archive_problems_listed"])
    assert any("井12_示功图" in n for n in cs.names)
    assert not any("MACOSX" in n or "evil" in n for n in cs.names)
    assert cs.inputs.dtype == np.uint8 and cs.inputs.shape[1:] == (190, 400)
    # the cached uint8 gives back exactly what the shared preprocessing returns
    from shared.preprocess import PreprocessConfig, preprocess_png

    with zipfile.ZipFile(messy_zip) as zf:
        raw = zf.read(cs.names[0])
    np.testing.assert_array_equal(cs.model_input([0])[0], preprocess_png(raw, PreprocessConfig()))


def test_split_is_deterministic_and_by_well_keeps_wells_apart():
    from training.data import split_indices, well_of

    rng = np.random.default_rng(0)
    names = [f"A{c + 1:02d}/W{w:03d}_{k:04d}.png" for c in range(3) for w in range(20) for k in range(3)]
    labels = np.array([int(n[1:3]) - 1 for n in names])
    tr, te = split_indices(names, labels, 0.1)
    perm = rng.permutation(len(names))
    tr2, te2 = split_indices([names[i] for i in perm], labels[perm], 0.1)
    assert sorted(names[i] for i in tr) == sorted(names[perm[i]] for i in tr2)
    for c in range(3):  # per class, the last 10 % of the sorted names
        cls = sorted(n for n in names if labels[names.index(n)] == c)
        assert sorted(names[i] for i in te if labels[i] == c) == cls[int(len(cls) * 0.9):]
    wtr, wte = split_indices(names, labels, 0.2, by="well")
    assert len(wte) > 0 and len(wtr) > 0
    assert not {well_of(names[i]) for i in wtr} & {well_of(names[i]) for i in wte}
    assert well_of("A01/W007_0001.png") == "W007"


def test_oversample_to_target():
    from training.data import oversample

    labels = np.array([0] * 5 + [1] * 12 + [2] * 2)
    idx = np.arange(len(labels))
    out = oversample(idx, labels, 10, seed=1)
    counts = np.bincount(labels[out])
    assert counts.tolist() == [10, 12, 10]
    assert set(idx) <= set(out.tolist())
    np.testing.assert_array_equal(out, oversample(idx, labels, 10, seed=1))
    np.testing.assert_array_equal(oversample(idx, labels, 0), idx)


# ------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn01", "cnn02", "cnn03", "cardnet"])
def test_network_shapes(name):
    from training.models import build_model, split_stem

    net = build_model(name)
    net.eval()
    out = net(paddle.zeros([2, 1, 190, 400]))
    assert out.shape == [2, 12]
    if name.startswith("cnn"):
        assert net.fc.weight.shape == [64 * 7 * 13, 12]  # the notebook's head
        assert net.features(paddle.zeros([1, 1, 190, 400])).shape == [1, 64, 7, 13]
    stem, body = split_stem(net)
    x = paddle.rand([2, 1, 190, 400])
    ref = body(stem(x)) if stem is not None else body(x)
    np.testing.assert_allclose(net(x).numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_row_bias_conv_trains_like_the_stock_conv():
    """The notebook nets' training-only bias add gives the stock ``nn.Conv2D`` forward and gradients."""
    from paddle import nn

    from training.image_models import RowBiasConv2D

    paddle.seed(3)
    fast = RowBiasConv2D(3, 5, 3, stride=2, padding=1)
    stock = nn.Conv2D(3, 5, 3, stride=2, padding=1)
    stock.weight.set_value(fast.weight)
    stock.bias.set_value(paddle.rand([5]))
    fast.bias.set_value(stock.bias)
    x = paddle.rand([4, 3, 19, 40])
    outs, grads = [], []
    for layer in (fast, stock):
        layer.train()
        y = layer(x)
        (y * paddle.arange(y.size, dtype="float32").reshape(y.shape) / y.size).sum().backward()
        outs.append(y.numpy())
        grads.append((layer.weight.grad.numpy(), layer.bias.grad.numpy()))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-5)
    assert float(np.abs(grads[0][1]).sum()) > 0
    fast.eval()  # evaluation and export take the stock path
    np.testing.assert_array_equal(fast(x).numpy(), stock(x).numpy())


def test_unknown_model_lists_choices():
    from training.models import build_model

    with pytest.raises(ValueError, match="cnn01"):
        build_model("resnet")


# ------------------------------------------------------------------------------------------
# Train -> export -> eval (as a script), parity, VisualDL
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(messy_zip, cache, tmp_path_factory):
    """One real run of ``python training/run.py`` on the messy zip: 2 epochs, VisualDL on, exported."""
    root = tmp_path_factory.mktemp("run")
    cmd = [sys.executable, str(REPO / "training" / "run.py"), "--data", str(messy_zip), "--epochs", "2",
           "--name", "t1", "--logdir", str(root / "log"), "--runs-dir", str(root / "runs"),
           "--out", str(root / "models" / "t1"), "--no-progress", "--per-class-target", "8"]
    proc = subprocess.run(cmd, env=_env(cache), cwd=str(root), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc.stdout


def test_run_writes_run_folder_and_summary(trained):
    root, stdout = trained
    run = root / "runs" / "t1"
    assert "holdout accuracy" in stdout and "skipped 1 unreadable" in stdout and "B99" in stdout
    for name in ("config.json", "train.txt", "test.txt", "history.json", "summary.json", "data_report.json",
                 "best.pdparams", "checkpoint/state.json"):
        assert (run / name).exists(), name
    lines = (run / "train.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 11 * 8 and all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
    test_lines = (run / "test.txt").read_text(encoding="utf-8").splitlines()
    assert not set(lines) & set(test_lines)
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["epochs"] == 2 and config["recipe"]["per_class_target"] == 8


def test_export_meta_and_parity(trained, messy_zip, cache):
    from shared.meta import load_meta
    from shared.preprocess import PreprocessConfig
    from training.data import load_data
    from training.evaluate_exported import ExportedModel
    from training.export import ImageLogits, load_exported
    from training.models import build_model

    root, _ = trained
    folder = root / "models" / "t1"
    meta = load_meta(folder)
    assert [lab["code"] for lab in meta["labels"]] == list(CODES)
    assert meta["input"]["shape"] == [None, 1, 190, 400]
    assert meta["output"] == "logits" and meta["other_class"] is False  # the first output: 12 logits
    assert PreprocessConfig.from_dict(meta["preprocess"]).method == "default"
    for key in ("metrics", "recipe", "data", "framework", "created", "architecture"):
        assert key in meta, key
    assert meta["data"]["fingerprint"] and "holdout_acc" in meta["metrics"]
    assert (folder / "inference.json").is_file()  # PIR format, what serving loads

    x = load_data(messy_zip, cache_dir=cache, progress=False).model_input(np.arange(5))
    net = build_model(meta["architecture"])
    net.set_state_dict(paddle.load(str(root / "runs" / "t1" / "best.pdparams")))
    dyn = ImageLogits(net)
    dyn.eval()
    expected = dyn(paddle.to_tensor(x)).numpy()
    assert expected.shape == (5, 12) and not np.allclose(expected.sum(axis=1), 1.0)  # logits, not probabilities
    np.testing.assert_allclose(ExportedModel(folder)(x), expected, rtol=1e-4, atol=1e-5)
    loaded = load_exported(folder)
    np.testing.assert_allclose(loaded(paddle.to_tensor(x)).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_eval_cli_report(trained, messy_zip, cache):
    root, _ = trained
    out = root / "eval"
    cmd = [sys.executable, str(REPO / "training" / "run.py"), "eval", "--model", str(root / "models" / "t1"),
           "--data", str(messy_zip), "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["cards"] == 11 * PER_CLASS + 1
    assert 0 <= report["accuracy"] <= 1
    assert set(report["per_class"]) == set(CODES)
    assert {"precision", "recall", "f1", "support"} <= set(report["per_class"]["A01"])
    cm = np.array(report["confusion"]["matrix"])
    assert cm.shape == (12, 12) and cm.sum() == report["cards"] and cm[3].sum() == 0
    assert (out / "confusion.png").stat().st_size > 1000
    assert "confusion" in (out / "confusion.txt").read_text(encoding="utf-8")


def _read_vdl(run_dir: Path) -> tuple[dict[str, list[str]], list[str]]:
    from visualdl import LogReader
    from visualdl.reader.graph_reader import GraphReader

    tags: dict[str, list[str]] = {}
    for f in sorted(run_dir.glob("vdlrecords.*.log")):
        reader = LogReader(file_path=str(f))
        for comp, names in reader.get_tags().items():
            tags.setdefault(comp, []).extend(names)
    graphs = GraphReader(logdir=str(run_dir)).runs()
    return tags, graphs


def test_visualdl_components_read_back(trained):
    from visualdl.reader.graph_reader import GraphReader

    root, _ = trained
    run_dir = root / "log" / "t1"
    tags, graph_runs = _read_vdl(run_dir)
    assert {"train/loss", "train/acc", "holdout/loss", "holdout/acc", "train/lr"} <= set(tags["scalar"])
    assert {"cards_raw/A01", "cards_input/A01", "holdout/confusion_matrix"} <= set(tags["image"])
    assert any(t.startswith("params/") and t.endswith("weight") for t in tags["histogram"])
    assert {f"holdout_pr/{c}" for c in CODES} <= set(tags["pr_curve"])
    assert {f"holdout_roc/{c}" for c in CODES} <= set(tags["roc_curve"])
    assert tags["hyper_parameters"]
    assert graph_runs, "no model graph written"
    graph = GraphReader(logdir=str(run_dir))
    graph.runs()
    assert graph.get_graph(graph_runs[0])


# ------------------------------------------------------------------------------------------
# Resume, compare, field cards
# ------------------------------------------------------------------------------------------


def _train(argv: list[str]) -> dict:
    from training import pipeline, run

    return pipeline.train_run(run.parse_args(argv))


def test_resume_after_stop_matches_uninterrupted(sim_dir, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CARDSENSE_CACHE", str(cache))
    common = ["--data", str(sim_dir), "--epochs", "3", "--no-vdl", "--no-export", "--no-progress",
              "--runs-dir", str(tmp_path / "runs"), "--patience", "0", "--batch-size", "16"]
    full = _train([*common, "--name", "full"])
    part = _train([*common, "--name", "part", "--stop-after", "1"])
    assert part["interrupted"]
    state = json.loads((tmp_path / "runs" / "part" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    resumed = _train([*common, "--name", "part", "--resume"])
    assert resumed["metrics"]["epochs_run"] == 3
    a = paddle.load(str(tmp_path / "runs" / "full" / "checkpoint" / "model.pdparams"))
    b = paddle.load(str(tmp_path / "runs" / "part" / "checkpoint" / "model.pdparams"))
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5, atol=1e-6, err_msg=key)
    assert full["metrics"]["holdout_acc"] == resumed["metrics"]["holdout_acc"]
    with pytest.raises(ValueError, match="recipe differs"):
        _train([*common, "--name", "part", "--resume", "--lr", "0.5"])


def test_compare_lr_overlays_runs(sim_dir, cache, tmp_path, monkeypatch, capsys):
    from training import run

    monkeypatch.setenv("CARDSENSE_CACHE", str(cache))
    run.main(["compare-lr", "0.01", "0.001", "--data", str(sim_dir), "--epochs", "1", "--no-progress", "--no-graph",
              "--logdir", str(tmp_path / "log"), "--runs-dir", str(tmp_path / "runs"), "--name", "cmp"])
    out = capsys.readouterr().out
    assert "lr0.01" in out and "lr0.001" in out and "holdout acc" in out
    runs = sorted(p.name for p in (tmp_path / "log" / "cmp").iterdir())
    assert runs == ["lr0.001", "lr0.01"]
    tag_sets = [set(_read_vdl(tmp_path / "log" / "cmp" / r)[0]["scalar"]) for r in runs]
    assert "holdout/acc" in tag_sets[0] and tag_sets[0] == tag_sets[1]
    table = json.loads((tmp_path / "runs" / "cmp" / "comparison.json").read_text())
    assert [r["name"] for r in table] == ["lr0.01", "lr0.001"]


def test_compare_models_notebook_net(sim_dir, cache, tmp_path, monkeypatch, capsys):
    from training import run

    monkeypatch.setenv("CARDSENSE_CACHE", str(cache))
    run.main(["compare-models", "cnn01", "default", "--data", str(sim_dir), "--epochs", "1", "--no-progress",
              "--no-vdl", "--runs-dir", str(tmp_path / "runs"), "--name", "cmpm", "--holdout", "0.2"])
    out = capsys.readouterr().out
    assert "cnn01" in out and "default" in out
    table = json.loads((tmp_path / "runs" / "cmpm" / "comparison.json").read_text())
    assert len(table) == 2


def test_seed_preset_is_the_notebook_recipe():
    from training.recipe import resolve_recipe
    from training.run import parse_args

    r = resolve_recipe(parse_args(["--preset", "seed"]))
    assert (r.model, r.optimizer, r.lr, r.batch_size, r.epochs, r.per_class_target, r.holdout, r.preprocess) == (
        "cnn01", "sgd", 1e-4, 128, 2, 7500, 0.1, "legacy")
    assert resolve_recipe(parse_args(["--preset", "seed", "--epochs", "1"])).epochs == 1


def test_field_csv_becomes_competition_folder(tmp_path):
    from training.data import field_csv_to_folder
    from tests.shapes import SHAPES

    rows = ["id,source_label,code,points,position_m,load_kN"]
    for k, (name, fn) in enumerate(SHAPES.items()):
        x, f = fn()
        code = ["A01", "A02", ""][k]
        rows.append(f"f{k},{name},{code},{len(x)},{' '.join(map(str, x))},{' '.join(map(str, f))}")
    src = tmp_path / "field.csv"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = field_csv_to_folder(src, tmp_path / "field")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["A01/f0.png", "A02/f1.png"]


def test_killed_run_resumes_where_it_stopped(sim_dir, cache, tmp_path):
    import signal
    import time

    runs = tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "training" / "run.py"), "--data", str(sim_dir), "--epochs", "4",
           "--batch-size", "4", "--name", "k", "--no-vdl", "--no-export", "--no-progress", "--patience", "0",
           "--runs-dir", str(runs)]
    proc = subprocess.Popen(cmd, env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = runs / "k" / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while not state_file.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    for _ in range(100):  # the checkpoint folder is swapped atomically; wait out a swap in progress
        try:
            saved = json.loads(state_file.read_text())["epoch"]
            break
        except FileNotFoundError:
            time.sleep(0.05)
    assert saved >= 1
    proc = subprocess.run([*cmd, "--resume"], env=_env(cache), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((runs / "k" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_augmentation_runs_before_the_shared_tail(sim_dir, cache, tmp_path, monkeypatch):
    from shared.cards import decode_card_png
    from shared.preprocess import preprocess_ink
    from training.image_augment import augment_ink

    ink = decode_card_png(sorted((sim_dir / "A02").glob("*.png"))[0])
    rng = np.random.default_rng(0)
    jittered = augment_ink(ink, rng)
    assert jittered.shape == ink.shape and jittered.dtype == np.uint8 and not np.array_equal(jittered, ink)
    assert preprocess_ink(jittered).shape == (1, 190, 400)
    monkeypatch.setenv("CARDSENSE_CACHE", str(cache))
    result = _train(["--data", str(sim_dir), "--epochs", "1", "--augment", "--no-vdl", "--no-export",
                     "--no-progress", "--runs-dir", str(tmp_path / "runs"), "--name", "aug"])
    assert result["metrics"]["epochs_run"] == 1
    assert json.loads((tmp_path / "runs" / "aug" / "config.json").read_text())["recipe"]["augment"] is True


def test_small_training_sets_get_enough_steps():
    """The default recipe on a field's few hundred cards: 30 epochs, patience 10; the simulated set unchanged."""
    from training.recipe import MAX_AUTO_EPOCHS, Recipe, length_for

    r = Recipe()
    assert length_for(r, 8640) == (8, 4)  # the default simulated set: 135 steps per epoch
    assert length_for(r, 496) == (30, 10)  # field 70/30: 8 steps per epoch
    assert length_for(r, 638) == (24, 8)  # field 90/10: 10 steps per epoch
    assert length_for(Recipe(batch_size=32), 496, world_size=2) == (30, 10)  # --procs 2 splits the batch
    assert length_for(r, 36) == (MAX_AUTO_EPOCHS, 10)
    assert length_for(Recipe(patience=0), 496) == (30, 0)  # early stopping stays off


def test_only_unset_lengths_follow_the_data():
    from training.recipe import fit_length_to_data, resolve_recipe
    from training.run import parse_args

    def resolved(*flags, cards=496):
        args = parse_args(list(flags))
        r = fit_length_to_data(args, resolve_recipe(args), cards, announce=False)
        return r.epochs, r.patience

    assert resolved() == (30, 10)
    assert resolved(cards=8640) == (8, 4)
    assert resolved("--epochs", "12") == (12, 10)
    assert resolved("--patience", "3") == (30, 3)
    assert resolved("--epochs", "5", "--patience", "2") == (5, 2)
    assert resolved("--preset", "seed") == (2, 0)  # the notebook's recipe exactly


def test_resumed_run_keeps_one_records_file_with_every_epoch(sim_dir, cache, tmp_path, monkeypatch):
    """VisualDL 2.5.3 shows only a run folder's newest records file: a resumed run must continue it."""
    from visualdl import LogReader

    monkeypatch.setenv("CARDSENSE_CACHE", str(cache))
    common = ["--data", str(sim_dir), "--epochs", "2", "--no-export", "--no-progress", "--no-graph",
              "--runs-dir", str(tmp_path / "runs"), "--logdir", str(tmp_path / "log"), "--patience", "0",
              "--batch-size", "16", "--name", "r"]
    assert _train([*common, "--stop-after", "1"])["interrupted"]
    _train([*common, "--resume"])
    files = sorted((tmp_path / "log" / "r").glob("vdlrecords.*"))
    assert len(files) == 1, files
    reader = LogReader(file_path=str(files[0]))
    steps = sorted({record.id for record in reader.get_data("scalar", "holdout/acc")})
    assert steps == [1, 2], steps
