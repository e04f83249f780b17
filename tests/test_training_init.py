"""``--init MODEL_DIR``: the exported folder carries ``model.pdparams``; a run started from it begins with
exactly its weights; mismatches are refused with one line; the trunk can be frozen; late-fusion models are
split by part. Real Paddle, a tiny exported ``cardnet`` and a few vendored field cards."""

from __future__ import annotations

import json
import shutil

import numpy as np
import paddle
import pytest


def _main(argv) -> int:
    from training import run

    return run.main(argv)


def test_export_writes_the_training_weights_with_their_digest(tiny_cardnet):
    from shared.meta import load_meta, weights_digest
    from training.models import build_model

    meta = load_meta(tiny_cardnet)
    assert meta["training_weights"] == weights_digest(tiny_cardnet / "model.pdparams")
    state = paddle.load(str(tiny_cardnet / "model.pdparams"))
    net = build_model(meta["architecture"])
    assert set(state) == set(net.state_dict())  # structured names, every parameter and buffer


def test_init_weights_give_the_exported_models_output(tiny_cardnet, few_field_csv, training_cache):
    from training.data import field_csv_to_folder, load_data
    from training.evaluate_exported import ExportedModel
    from training.export import ImageLogits
    from training.models import build_model
    from training.warm_start import apply_state, read_init

    init = read_init(tiny_cardnet)
    net = build_model(init.architecture)
    apply_state(net, init.state())
    x = load_data(field_csv_to_folder(few_field_csv, cache_dir=training_cache), cache_dir=training_cache, progress=False).model_input(
        np.arange(6))
    head = ImageLogits(net)  # the exported folder's first output: the network's logits
    head.eval()
    np.testing.assert_allclose(head(paddle.to_tensor(x)).numpy(), ExportedModel(tiny_cardnet)(x), rtol=1e-4, atol=1e-5)


def test_fine_tuned_run_starts_from_the_base_weights(tiny_cardnet, few_field_csv, training_cache, tmp_path, capsys):
    """The run's first forward (epoch 0, before any step) equals the exported base on the same holdout cards."""
    from shared.meta import load_meta
    from training.data import field_csv_to_folder, load_data
    from training.evaluate_exported import ExportedModel
    from training.metrics import accuracy_and_loss, class_probabilities

    assert _main(["--data", str(few_field_csv), "--init", str(tiny_cardnet), "--epochs", "1", "--holdout", "0.5",
                  "--cache-dir", str(training_cache), "--runs-dir", str(tmp_path / "runs"), "--name", "ft",
                  "--out", str(tmp_path / "ft"), "--no-vdl", "--no-progress", "--no-graph"]) == 0
    run = tmp_path / "runs" / "ft"
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    cs = load_data(field_csv_to_folder(few_field_csv, cache_dir=training_cache), cache_dir=training_cache, progress=False)
    holdout = {line.rsplit(" ", 1)[0] for line in (run / "test.txt").read_text().splitlines()}
    idx = np.array([i for i, n in enumerate(cs.names) if n in holdout])
    probs = class_probabilities(ExportedModel(tiny_cardnet)(cs.model_input(idx)))
    acc, loss = accuracy_and_loss(probs, cs.labels[idx])
    assert state["init_holdout"]["holdout_loss"] == pytest.approx(loss, rel=1e-5)
    assert state["init_holdout"]["holdout_acc"] == pytest.approx(acc)
    config = json.loads((run / "config.json").read_text())
    assert config["init"]["training_weights_sha256"] == load_meta(tiny_cardnet)["training_weights"]["sha256"]
    assert config["recipe"]["render_augment"] and config["recipe"]["lr"] == 1e-3  # the finetune preset
    meta = load_meta(tmp_path / "ft")
    assert meta["init"]["model"] == "tiny-cardnet" and meta["architecture"] == "cardnet"
    assert "the --init model on the same holdout" in capsys.readouterr().out


def test_frozen_trunk_keeps_its_weights_and_statistics(tiny_cardnet, few_field_csv, training_cache, tmp_path):
    """``--freeze-epochs``: during the frozen epochs only the fully connected head moves (BN statistics too stay)."""
    from training.models import build_model
    from training.train import trunk_parameters

    assert _main(["--data", str(few_field_csv), "--init", str(tiny_cardnet), "--epochs", "1", "--freeze-epochs", "1",
                  "--cache-dir", str(training_cache), "--runs-dir", str(tmp_path), "--name", "frozen", "--no-vdl",
                  "--no-export", "--no-progress"]) == 0
    before = paddle.load(str(tiny_cardnet / "model.pdparams"))
    after = paddle.load(str(tmp_path / "frozen" / "checkpoint" / "model.pdparams"))
    net = build_model("cardnet")
    trunk = {n for n, p in net.named_parameters() if any(p is q for q in trunk_parameters(net))}
    assert trunk and not any("_mean" in n or "_variance" in n for n in trunk)  # statistics are not parameters to train
    statistics = {n for n in before if n.endswith(("_mean", "_variance"))}
    assert statistics
    head = set(before) - trunk - statistics
    assert head == {"body.7.weight", "body.7.bias", "body.9.weight", "body.9.bias"}  # the two Linear layers
    for name in before:
        same = np.array_equal(np.asarray(before[name]), np.asarray(after[name]))
        assert same == (name not in head), f"{name} {'did not train' if same else 'moved while frozen'}"


@pytest.mark.parametrize("flags, message", [
    (["--input", "series"], "reads image input, the run --input series"),
    (["--model", "cnn01"], "it is a cardnet network, the run trains cnn01"),
    (["--preset", "seed", "--model", "cardnet"], "preprocessing"),
])
def test_mismatch_is_refused_with_one_line(tiny_cardnet, few_field_csv, tmp_path, capsys, flags, message):
    assert _main(["--data", str(few_field_csv), "--init", str(tiny_cardnet), *flags, "--runs-dir", str(tmp_path),
                  "--no-vdl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("error: --init")


def test_other_labels_and_missing_weights_are_refused(tiny_cardnet, few_field_csv, tmp_path, capsys):
    other = tmp_path / "other-labels"
    shutil.copytree(tiny_cardnet, other)
    meta = json.loads((other / "meta.json").read_text(encoding="utf-8"))
    meta["labels"] = meta["labels"][:7]
    (other / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert _main(["--data", str(few_field_csv), "--init", str(other), "--runs-dir", str(tmp_path), "--no-vdl"]) == 2
    assert "labels" in capsys.readouterr().err
    old = tmp_path / "old-export"
    shutil.copytree(tiny_cardnet, old)
    (old / "model.pdparams").unlink()
    assert _main(["--data", str(few_field_csv), "--init", str(old), "--runs-dir", str(tmp_path), "--no-vdl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model.pdparams" in err[0] and "re-export or retrain" in err[0]


def test_late_fusion_state_splits_by_part():
    from training.dual_models import LateFusionDual
    from training.models import build_model
    from training.warm_start import apply_state, part_state

    paddle.seed(5)
    dual = LateFusionDual(image_weight=0.25)
    state = dual.state_dict()
    for part, arch in (("image", "cardnet"), ("series", "seriesnet")):
        net = build_model(arch)
        apply_state(net, part_state(state, part))
        own = dual.image_net if part == "image" else dual.series_net
        for k, v in own.state_dict().items():
            np.testing.assert_array_equal(net.state_dict()[k].numpy(), v.numpy())
    with pytest.raises(ValueError, match="do not fit"):
        apply_state(build_model("cardnet"), part_state(state, "series"))
