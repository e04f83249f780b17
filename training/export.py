"""Export a trained network as a self-describing model folder (what ``serving/`` loads), whatever it reads.

``models/<name>/inference.json + inference.pdiparams + meta.json``; output softmax probabilities
``[N, 12]`` in label order. The inputs follow the network's input kind (:data:`shared.meta.MODEL_KINDS`):

* ``image``: ``float32 [N, 1, 190, 400]``;
* ``series``: ``series`` ``float32 [N, 5, L]``;
* ``dual``: ``image`` then ``series``, fed by name by Paddle Inference.

``meta.json`` records them (``input``, and for series/dual ``inputs`` and ``series_preprocess``) with the
preprocessing that makes them. The folder is built beside its target and moved into place in one
``os.replace`` (:func:`shared.atomic.atomic_directory`), so serving never sees half a model.

Beside the inference program the folder holds ``model.pdparams``: the logits network's ``state_dict``
with its structured parameter names (as ``runs/<run>/best.pdparams``), digested in ``meta.json`` →
``training_weights``. ``paddle.jit.save`` renames every parameter, so the inference files cannot be
loaded back into a network; this file is what ``run.py --init`` fine-tunes from
(:mod:`training.warm_start`). Serving ignores it.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle import nn
from paddle.static import InputSpec

from shared.atomic import atomic_directory
from shared.meta import MODEL_KINDS, MODEL_PREFIX, weights_digest, write_meta
from shared.preprocess import PreprocessConfig
from shared.series import SeriesConfig
from training.image_models import INPUT_SHAPE

TRAINING_WEIGHTS = "model.pdparams"  # the logits network's state_dict, structured names (for --init)


class SoftmaxHead(nn.Layer):
    """Export wrapper: probabilities from a logits network (what the exported model returns).

    One subclass per input kind, because the exported program takes its input names from ``forward``'s
    arguments: ``x`` for an image model (as always), ``series``, or ``image`` and ``series``.
    """

    def __init__(self, net: nn.Layer):
        super().__init__()
        self.net = net


class WithSoftmax(SoftmaxHead):
    """An image network's softmax head."""

    def forward(self, x):
        return nn.functional.softmax(self.net(x), axis=-1)


class SeriesWithSoftmax(SoftmaxHead):
    """A series network's softmax head (input ``series``)."""

    def forward(self, series):
        return nn.functional.softmax(self.net(series), axis=-1)


class DualWithSoftmax(SoftmaxHead):
    """A dual network's softmax head (inputs ``image`` and ``series``)."""

    def forward(self, image, series):
        return nn.functional.softmax(self.net(image, series), axis=-1)


SOFTMAX_HEADS = {"image": WithSoftmax, "series": SeriesWithSoftmax, "dual": DualWithSoftmax}


def framework_versions() -> dict[str, str]:
    """Versions recorded in ``meta.json``."""
    import visualdl

    return {"paddle": paddle.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "visualdl": getattr(visualdl, "__version__", "unknown")}


def input_meta(kind: str, series_config: SeriesConfig) -> dict[str, Any]:
    """The ``meta.json`` entries that describe a ``kind`` network's inputs, output and preprocessing.

    An image model has one unnamed input (``input``, ``preprocess``). Series and dual models list their
    named inputs under ``inputs`` with ``series_preprocess``; a series model keeps ``input``/``preprocess``
    describing its one input for tools that read only those.
    """
    image = {"name": "image", "shape": [None, *INPUT_SHAPE], "dtype": "float32"}
    if kind == "image":
        return {"input": {"shape": image["shape"], "dtype": "float32"}, "output": "probabilities",
                "preprocess": PreprocessConfig().to_dict()}
    series = {"name": "series", "shape": [None, *series_config.input_shape], "dtype": "float32"}
    inputs = [series] if kind == "series" else [image, series]
    return {"inputs": inputs, "input": {"shape": inputs[0]["shape"], "dtype": "float32"}, "output": "probabilities",
            "series_preprocess": series_config.to_dict(),
            "preprocess": PreprocessConfig().to_dict() if kind == "dual" else {"method": "series",
                                                                               **series_config.to_dict()}}


def export_model(layer: nn.Layer, out_dir: str | os.PathLike, meta_extra: dict[str, Any] | None = None,
                 softmax: bool = True, kind: str = "image", series_config: SeriesConfig | None = None) -> Path:
    """Save ``layer`` with ``paddle.jit.save``, its ``state_dict`` (``model.pdparams``) and ``meta.json``, atomically.

    Args:
        layer: the network, returning logits (wrapped in the softmax head of its kind unless
            ``softmax=False``, i.e. it already returns probabilities).
        out_dir: the model folder to (re)create.
        meta_extra: merged into the metadata (``name``, ``architecture``, ``metrics``, ``recipe``, ``data``,
            ``preprocess`` …). ``preprocess`` defaults to the default method's config.
        kind: what the network reads: ``image``, ``series`` or ``dual`` (:func:`training.models.network_kind`).
        series_config: the series preprocessing of a series or dual network (default ``SeriesConfig()``).

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown input kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    out_dir = Path(out_dir)
    meta_extra = dict(meta_extra or {})
    io = input_meta(kind, series_config or SeriesConfig())
    # InputSpec turns None into -1 in the list it is given: series/dual meta.json have recorded their
    # batch axis as -1 since they were first exported (serving reads -1 and null alike), image ones as null.
    if kind == "image":  # one unnamed input, as the image models have always been exported
        specs = [InputSpec(list(io["input"]["shape"]), "float32")]
    else:
        specs = [InputSpec(s["shape"], "float32", s["name"]) for s in io["inputs"]]
    net = SOFTMAX_HEADS[kind](layer) if softmax else layer
    was_training = layer.training
    net.eval()
    meta = {
        "name": meta_extra.pop("name", out_dir.name),
        "kind": kind,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **io,
        "framework": framework_versions(),
    }
    meta.update(meta_extra)
    try:
        with atomic_directory(out_dir) as tmp:
            paddle.jit.save(net, str(tmp / MODEL_PREFIX), input_spec=specs)
            paddle.save(layer.state_dict(), str(tmp / TRAINING_WEIGHTS))
            meta["training_weights"] = weights_digest(tmp / TRAINING_WEIGHTS)
            write_meta(tmp, meta)
    finally:
        if was_training:
            layer.train()
    return out_dir


def load_exported(folder: str | os.PathLike):
    """Load an exported folder with ``paddle.jit.load`` (for tests and evaluation in the dynamic graph)."""
    return paddle.jit.load(str(Path(folder) / MODEL_PREFIX))
