"""Export a trained network as a self-describing model folder (what ``serving/`` loads).

``models/<name>/inference.json + inference.pdiparams + meta.json``; input ``float32 [N, 1, 190, 400]``,
output softmax probabilities ``[N, 12]`` in label order. The folder is built beside its target and moved
into place in one ``os.replace`` (:func:`shared.atomic.atomic_directory`), so serving never sees half a model.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle.static import InputSpec

from shared.meta import MODEL_PREFIX, write_meta
from shared.preprocess import PreprocessConfig
from training.models import INPUT_SHAPE, WithSoftmax


def framework_versions() -> dict[str, str]:
    """Versions recorded in ``meta.json``."""
    import visualdl

    return {"paddle": paddle.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "visualdl": getattr(visualdl, "__version__", "unknown")}


def export_model(layer: paddle.nn.Layer, out_dir: str | os.PathLike, meta_extra: dict[str, Any] | None = None,
                 softmax: bool = True) -> Path:
    """Save ``layer`` with ``paddle.jit.save`` and write ``meta.json``, atomically.

    Args:
        layer: the network, returning logits (wrapped in a softmax unless ``softmax=False``, i.e. it already
            returns probabilities).
        out_dir: the model folder to (re)create.
        meta_extra: merged into the metadata (``name``, ``architecture``, ``metrics``, ``recipe``, ``data``,
            ``preprocess`` …). ``preprocess`` defaults to the default method's config.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    from shared.atomic import atomic_directory

    out_dir = Path(out_dir)
    meta_extra = dict(meta_extra or {})
    net = WithSoftmax(layer) if softmax else layer
    was_training = net.training
    net.eval()
    meta = {
        "name": meta_extra.pop("name", out_dir.name),
        "kind": "image",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input": {"shape": [None, *INPUT_SHAPE], "dtype": "float32"},
        "output": "probabilities",
        "preprocess": PreprocessConfig().to_dict(),
        "framework": framework_versions(),
    }
    meta.update(meta_extra)
    try:
        with atomic_directory(out_dir) as tmp:
            paddle.jit.save(net, str(tmp / MODEL_PREFIX), input_spec=[InputSpec([None, *INPUT_SHAPE], "float32")])
            write_meta(tmp, meta)
    finally:
        if was_training:
            net.train()
    return out_dir


def load_exported(folder: str | os.PathLike):
    """Load an exported folder with ``paddle.jit.load`` (for tests and evaluation in the dynamic graph)."""
    return paddle.jit.load(str(Path(folder) / MODEL_PREFIX))


def export_series_model(layer: paddle.nn.Layer, out_dir: str | os.PathLike, kind: str,
                        meta_extra: dict[str, Any] | None = None, series_config=None) -> Path:
    """Export a ``series`` or ``dual`` network (logits) with a softmax head, plus ``meta.json``, atomically.

    The inputs are named so that Paddle Inference feeds them by name: ``series`` ``float32 [N, 5, L]``;
    for ``dual`` first ``image`` ``float32 [N, 1, 190, 400]`` then ``series``. ``meta.json`` records them
    under ``inputs`` with ``series_preprocess`` (and ``preprocess`` for the image input; a series model
    keeps ``input``/``preprocess`` describing its one input for tools that read only those).

    Returns:
        ``out_dir`` as a ``Path``.
    """
    from shared.atomic import atomic_directory
    from shared.series import SeriesConfig
    from training.series_models import DualWithSoftmax, SeriesWithSoftmax

    if kind not in ("series", "dual"):
        raise ValueError(f"kind {kind!r}: export_series_model exports 'series' or 'dual' networks")
    series_config = series_config or SeriesConfig()
    out_dir = Path(out_dir)
    meta_extra = dict(meta_extra or {})
    series_spec = {"name": "series", "shape": [None, *series_config.input_shape], "dtype": "float32"}
    image_spec = {"name": "image", "shape": [None, *INPUT_SHAPE], "dtype": "float32"}
    if kind == "series":
        net, inputs = SeriesWithSoftmax(layer), [series_spec]
    else:
        net, inputs = DualWithSoftmax(layer), [image_spec, series_spec]
    was_training = layer.training
    net.eval()
    meta = {
        "name": meta_extra.pop("name", out_dir.name),
        "kind": kind,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": inputs,
        "input": {"shape": series_spec["shape"], "dtype": "float32"} if kind == "series" else
                 {"shape": image_spec["shape"], "dtype": "float32"},
        "output": "probabilities",
        "series_preprocess": series_config.to_dict(),
        "preprocess": PreprocessConfig().to_dict() if kind == "dual" else {"method": "series", **series_config.to_dict()},
        "framework": framework_versions(),
    }
    meta.update(meta_extra)
    specs = [InputSpec(s["shape"], "float32", s["name"]) for s in inputs]
    try:
        with atomic_directory(out_dir) as tmp:
            paddle.jit.save(net, str(tmp / MODEL_PREFIX), input_spec=specs)
            write_meta(tmp, meta)
    finally:
        if was_training:
            layer.train()
    return out_dir
