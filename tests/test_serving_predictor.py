"""The Paddle Inference predictor: loading, fail-fast start-up, batching, thread safety."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from tests.conftest import CARD_KINDS, card_png, export_tiny_model
from serving.predictor import Predictor, StartupError
from shared.preprocess import preprocess_png


@pytest.fixture(scope="module")
def inputs(predictor):
    xs = [preprocess_png(card_png(k, seed), predictor.preprocess) for seed in range(4) for k in CARD_KINDS]
    return np.stack(xs)


def test_labels_and_preprocessing_come_from_meta(predictor, tiny_model):
    meta = json.loads((tiny_model / "meta.json").read_text(encoding="utf-8"))
    assert predictor.codes == [x["code"] for x in meta["labels"]]
    assert predictor.preprocess.to_dict() == meta["preprocess"]
    assert predictor.model_id == {"name": "tiny-test", "version": "0.0.1", "kind": "image"}
    info = predictor.describe()
    assert info["device"]["selected"] == "cpu" and info["device"]["onednn"] is True
    assert info["runtime"]["batch_sizes"] == [1, 4, 8]


def test_probabilities_are_a_distribution_and_vary_by_card(predictor, inputs):
    probs = predictor.predict(inputs)
    assert probs.shape == (len(inputs), 12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert len({int(i) for i in probs.argmax(axis=1)}) >= 2, "the tiny model should not answer one label for all"


@pytest.mark.parametrize("n", [1, 3, 8, 11, 20])
def test_batching_and_padding_do_not_change_results(predictor, inputs, n):
    one_by_one = np.stack([predictor.predict(x[None])[0] for x in inputs[:n]])
    np.testing.assert_allclose(predictor.predict(inputs[:n]), one_by_one, atol=1e-6)


def test_single_input_without_batch_axis(predictor, inputs):
    np.testing.assert_allclose(predictor.predict(inputs[0]), predictor.predict(inputs[:1]), atol=1e-7)


def test_wrong_input_shape_is_refused(predictor):
    with pytest.raises(ValueError, match="does not match"):
        predictor.predict(np.zeros((2, 1, 100, 100), np.float32))


def test_threads_never_get_each_others_outputs(predictor, inputs):
    expected = predictor.predict(inputs)
    wrong: list[int] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        for step in range(40):
            i = (offset * 7 + step) % len(inputs)
            got = predictor.predict(inputs[i][None])[0]
            if not np.allclose(got, expected[i], atol=1e-5):
                with lock:
                    wrong.append(i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


# ------------------------------------------------------------------------------ fail fast


def _copy_model(tiny_model, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model, dst)
    return dst


def _edit_meta(folder, **changes):
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def _reexport_meta(folder):
    """Write meta.json again after the network was replaced, as an export of that network would
    (the weights digest then matches, so the check under test is the one that fires)."""
    from shared.meta import write_meta

    write_meta(folder, json.loads((folder / "meta.json").read_text(encoding="utf-8")))


def test_damaged_weights_are_refused_at_start_up(tiny_model, tmp_path):
    folder = _copy_model(tiny_model, tmp_path)
    params = folder / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[:-64])
    with pytest.raises(StartupError, match="does not match meta.json"):
        Predictor(folder, device="cpu")


def test_missing_folder_fails_with_clear_message(tmp_path):
    with pytest.raises(StartupError, match="does not exist"):
        Predictor(tmp_path / "nope", device="cpu")


def test_missing_params_file(tiny_model, tmp_path):
    folder = _copy_model(tiny_model, tmp_path)
    (folder / "inference.pdiparams").unlink()
    with pytest.raises(StartupError, match="inference.pdiparams"):
        Predictor(folder, device="cpu")


def test_unknown_preprocessing_version(tiny_model, tmp_path):
    folder = _copy_model(tiny_model, tmp_path)
    _edit_meta(folder, preprocess={"method": "default", "version": "fill-v99", "height": 190, "width": 400})
    with pytest.raises(StartupError, match="fill-v99"):
        Predictor(folder, device="cpu")


def test_unknown_preprocessing_method(tiny_model, tmp_path):
    folder = _copy_model(tiny_model, tmp_path)
    _edit_meta(folder, preprocess={"method": "magic"})
    with pytest.raises(StartupError, match="magic"):
        Predictor(folder, device="cpu")


def test_input_shape_mismatch_in_meta(tiny_model, tmp_path):
    folder = _copy_model(tiny_model, tmp_path)
    _edit_meta(folder, input={"shape": [None, 3, 190, 400], "dtype": "float32"})
    with pytest.raises(StartupError, match="input shape"):
        Predictor(folder, device="cpu")


def test_network_input_shape_mismatch(tiny_model, tmp_path):
    """meta.json and preprocessing say 1x190x400 but the network was exported for 1x100x200."""
    import paddle

    folder = _copy_model(tiny_model, tmp_path)

    class Small(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(100 * 200, 12)

        def forward(self, x):
            return paddle.nn.functional.softmax(self.fc(paddle.flatten(x, 1)), axis=-1)

    paddle.jit.save(Small(), str(folder / "inference"),
                    input_spec=[paddle.static.InputSpec([None, 1, 100, 200], "float32")])
    _reexport_meta(folder)
    with pytest.raises(StartupError, match="network takes"):
        Predictor(folder, device="cpu")


def test_label_count_mismatch(tiny_model, tmp_path):
    folder = _copy_model(tiny_model, tmp_path)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    _edit_meta(folder, labels=meta["labels"][:10])
    with pytest.raises(StartupError, match=r"shape \[1, 12\], expected \[N, 10\]"):
        Predictor(folder, device="cpu")


def test_series_models_are_refused(tiny_model, tmp_path):
    folder = _copy_model(tiny_model, tmp_path)
    _edit_meta(folder, kind="series")
    with pytest.raises(StartupError, match="series"):
        Predictor(folder, device="cpu")


def test_gpu_requested_without_cuda_fails_fast(tiny_model):
    import paddle

    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        pytest.skip("a GPU is available here")
    with pytest.raises(StartupError, match="gpu"):
        Predictor(tiny_model, device="gpu")


def test_auto_device_says_what_it_chose(tiny_model):
    p = Predictor(tiny_model, device="auto", batch_sizes=(1,))
    assert p.device in ("cpu", "gpu")
    assert p.describe()["device"]["reason"].startswith("auto:")


def test_logits_instead_of_probabilities_are_refused(tmp_path):
    """A network exported without its softmax head would give meaningless 'probabilities'."""
    import paddle

    folder = export_tiny_model(tmp_path / "logits")

    class Logits(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.pool = paddle.nn.AdaptiveAvgPool2D((3, 4))
            self.head = paddle.nn.Linear(12, 12)

        def forward(self, x):
            return self.head(paddle.flatten(self.pool(x), 1)) * 10.0 + 3.0

    paddle.jit.save(Logits(), str(folder / "inference"),
                    input_spec=[paddle.static.InputSpec([None, 1, 190, 400], "float32")])
    _reexport_meta(folder)
    with pytest.raises(StartupError, match="softmax"):
        Predictor(folder, device="cpu", batch_sizes=(1,))


# ------------------------------------------------------------------------------ real exports


def test_serves_a_model_exported_by_the_training_toolkit(tmp_path):
    """training.export.export_model's folder loads and matches paddle.jit.load of the same folder."""
    export = pytest.importorskip("training.export")
    models = pytest.importorskip("training.models")
    import paddle

    paddle.seed(1)
    folder = export.export_model(models.build_model("default"), tmp_path / "cardnet", {"name": "cardnet-test"})
    predictor = Predictor(folder, device="cpu", batch_sizes=(1, 4))
    x = np.stack([preprocess_png(card_png(k, 3), predictor.preprocess) for k in CARD_KINDS])
    served = predictor.predict(x)
    reference = export.load_exported(folder)(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(served, reference, atol=1e-5)
    assert predictor.name == "cardnet-test"


def test_the_shipped_default_model_if_present():
    from serving.config import DEFAULT_MODEL_DIR
    from tests.conftest import REPO

    assert (DEFAULT_MODEL_DIR / "meta.json").exists(), "models/default is shipped with the repository"
    predictor = Predictor(DEFAULT_MODEL_DIR, device="cpu", batch_sizes=(1, 8))
    golden = sorted(p for p in (REPO / "tests" / "fixtures" / "golden").glob("*.png") if ".expected." not in p.name)
    cards = [p.read_bytes() for p in golden] or [card_png(k) for k in CARD_KINDS]
    raw = predictor.predict(np.stack([preprocess_png(c, predictor.preprocess) for c in cards]))
    probs = predictor.output.interpret(raw).probabilities  # read as its meta.json says (logits or probabilities)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
