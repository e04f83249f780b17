"""Dual-net fusions and the multi-head training loss: what each head sees, what the net answers with."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.dual_models import DualBody  # noqa: E402
from training.models import build_model  # noqa: E402
from training.train import training_loss  # noqa: E402


def _batch(n: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = paddle.to_tensor((rng.random((n, 1, 95, 200)) > 0.6).astype(np.float32))
    series = paddle.to_tensor(rng.standard_normal((n, 5, 256)).astype(np.float32))
    labels = paddle.to_tensor(rng.integers(0, 12, n).astype(np.int64))
    return [image, series], labels


def _grad_norm(layer) -> float:
    return sum(float(paddle.abs(p.grad).sum()) for p in layer.parameters() if p.grad is not None)


def test_training_loss_of_plain_logits_is_cross_entropy():
    logits = paddle.to_tensor(np.random.default_rng(1).standard_normal((4, 12)).astype(np.float32))
    y = paddle.to_tensor(np.array([0, 3, 11, 5]))
    pred, loss = training_loss(logits, y, 0.05)
    assert pred is logits
    np.testing.assert_allclose(float(loss), float(F.cross_entropy(logits, y, label_smoothing=0.05)), rtol=1e-6)


def test_training_loss_of_heads_sums_their_cross_entropies():
    rng = np.random.default_rng(2)
    a, b, p = (paddle.to_tensor(rng.standard_normal((4, 12)).astype(np.float32)) for _ in range(3))
    y = paddle.to_tensor(np.array([1, 2, 3, 4]))
    pred, loss = training_loss((p, [a, b]), y, 0.0)
    assert pred is p
    np.testing.assert_allclose(float(loss), float(F.cross_entropy(a, y)) + float(F.cross_entropy(b, y)), rtol=1e-6)


def test_ensemble_heads_learn_independently_and_answer_with_the_product():
    paddle.seed(0)
    body = DualBody(fusion="ensemble")
    x, y = _batch()
    body.train()
    prediction, (li, ls) = body(x)
    # The series head's loss reaches only the series trunk: neither trunk can lean on the other.
    F.cross_entropy(ls, y).backward()
    assert _grad_norm(body.series) > 0 and _grad_norm(body.fc_series) > 0
    assert _grad_norm(body.image) == 0 and _grad_norm(body.fc_image) == 0
    body.clear_gradients()
    body.eval()
    with paddle.no_grad():
        answer = body(x)
        want = F.log_softmax(body.fc_image(body.image(x[0])), -1) + F.log_softmax(body.fc_series(body.series(x[1])), -1)
    np.testing.assert_allclose(answer.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    # softmax of the summed log-probabilities = the normalised product of the two heads' probabilities
    p_i, p_s = F.softmax(body.fc_image(body.image(x[0])), -1).numpy(), F.softmax(body.fc_series(body.series(x[1])), -1).numpy()
    product = p_i * p_s / (p_i * p_s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(F.softmax(answer, -1).numpy(), product, rtol=1e-4, atol=1e-6)


def test_aux_heads_train_each_trunk_and_vanish_in_eval():
    paddle.seed(0)
    body = DualBody(fusion="aux", modality_dropout=0.0)
    x, y = _batch()
    body.train()
    prediction, heads = body(x)
    assert len(heads) == 3 and heads[0] is prediction
    F.cross_entropy(heads[1], y).backward()  # the image auxiliary head trains the image trunk only
    assert _grad_norm(body.image) > 0 and _grad_norm(body.series) == 0 and _grad_norm(body.fc) == 0
    body.clear_gradients()
    body.eval()
    with paddle.no_grad():
        answer = body(x)
        want = body.fc(paddle.concat([body.image(x[0]), body.series(x[1])], axis=1))
    assert isinstance(answer, paddle.Tensor)
    np.testing.assert_allclose(answer.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["dualnet", "dualnet_sum", "dualnet_aux", "dualnet_ens"])
def test_every_dual_net_gives_logits_in_eval(name):
    net = build_model(name)
    net.eval()
    rng = np.random.default_rng(3)
    with paddle.no_grad():
        out = net(paddle.to_tensor((rng.random((2, 1, 190, 400)) > 0.5).astype(np.float32)),
                  paddle.to_tensor(rng.standard_normal((2, 5, 256)).astype(np.float32)))
    assert out.shape == [2, 12] and np.isfinite(out.numpy()).all()


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match="choose one of concat, sum, aux, ensemble"):
        DualBody(fusion="average")


# ------------------------------------------------------------------------------------------
# Late fusion (dualnet_late): weight choice, cross-fitting, the fused network
# ------------------------------------------------------------------------------------------


def _onehot_probs(pred: np.ndarray, confidence: float) -> np.ndarray:
    p = np.full((len(pred), 12), (1 - confidence) / 11, np.float64)
    p[np.arange(len(pred)), pred] = confidence
    return p


def test_weight_follows_the_network_that_is_right():
    from training.late_fusion import choose_image_weight

    labels = np.arange(40) % 12
    wrong = (labels + 1) % 12
    # series right on 30 of 40 cards, image right on the 10 others, but less sure: a small image weight
    # cannot overturn a confident series answer, so only w > 0.5 helps those 10 and costs the 30.
    series = _onehot_probs(np.where(np.arange(40) < 30, labels, wrong), 0.9)
    image = _onehot_probs(np.where(np.arange(40) >= 30, labels, wrong), 0.6)
    w, table = choose_image_weight(image, series, labels)
    assert table[0.0] == 0.75 and table[1.0] == 0.25
    assert w < 0.5 and table[w] == max(table.values())
    # an image network that is always right wins outright
    w, table = choose_image_weight(_onehot_probs(labels, 0.6), series, labels)
    assert table[w] == 1.0 and w > 0


def test_ties_go_to_the_series_network():
    from training.late_fusion import choose_image_weight

    labels = np.arange(24) % 12
    same = _onehot_probs(labels, 0.8)
    w, table = choose_image_weight(same, same, labels)
    assert set(table.values()) == {1.0} and w == 0.0


def test_crossfit_does_not_exceed_the_best_weight_on_useless_images():
    from training.late_fusion import choose_image_weight, crossfit_accuracy

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 12, 200)
    series = _onehot_probs(np.where(rng.random(200) < 0.8, labels, (labels + 3) % 12), 0.7)
    noise = rng.dirichlet(np.ones(12), 200)  # an image network that knows nothing
    _, table = choose_image_weight(noise, series, labels)
    crossfit = crossfit_accuracy(noise, series, labels, seed=0)
    assert crossfit <= max(table.values())
    assert abs(crossfit - table[0.0]) < 0.05  # noise cannot help on the half it was not chosen on
    assert crossfit == crossfit_accuracy(noise, series, labels, seed=0)


def test_late_fusion_net_is_the_mixture_and_keeps_its_weight(tmp_path):
    from training.dual_models import LateFusionDual

    paddle.seed(1)
    net = LateFusionDual()
    net.eval()
    rng = np.random.default_rng(5)
    image = paddle.to_tensor((rng.random((3, 1, 190, 400)) > 0.5).astype(np.float32))
    series = paddle.to_tensor(rng.standard_normal((3, 5, 256)).astype(np.float32))
    with paddle.no_grad():
        p_image = F.softmax(net.image_net(image), -1).numpy()
        p_series = F.softmax(net.series_net(series), -1).numpy()
        np.testing.assert_allclose(np.exp(net(image, series).numpy()), p_series, rtol=1e-5)  # w = 0: series alone
        net.set_image_weight(0.25)
        np.testing.assert_allclose(np.exp(net(image, series).numpy()), 0.25 * p_image + 0.75 * p_series, rtol=1e-5)
    paddle.save(net.state_dict(), str(tmp_path / "w.pdparams"))
    again = LateFusionDual()
    again.set_state_dict(paddle.load(str(tmp_path / "w.pdparams")))
    assert again.image_weight.numpy().tolist() == [0.25]
    with pytest.raises(ValueError, match="outside 0"):
        net.set_image_weight(1.5)
