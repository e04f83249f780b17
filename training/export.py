"""Export a trained network as a self-describing model folder (what ``serving/`` loads), whatever it reads.

``models/<name>/inference.json + inference.pdiparams + meta.json``. The exported network's first output is
its **logits** ``[N, C]`` in label order (``meta.json`` ``output: "logits"``): ``C = 13`` when the run trained
the "other" class (``other_class: true``, index 12 = none of the twelve), else 12; a late-fusion dual model
gives the log of its mixed probabilities, which read the same way. How to read them -- the temperature, the
review rule and the open-set threshold fitted on held-out real cards -- is in ``meta.json`` ``confidence`` and
``open_set`` (:mod:`training.answer_rules`); ``shared.model_outputs.interpret`` applies them. Folders exported
before (``output: "probabilities"``, a softmax head, ``[N, 12]``) are still written with
``output="probabilities"`` and read everywhere. The inputs follow the network's input kind
(:data:`shared.meta.MODEL_KINDS`):

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
from training.classes import num_outputs
from training.image_models import INPUT_SHAPE

TRAINING_WEIGHTS = "model.pdparams"  # the logits network's state_dict, structured names (for --init)


class ExportHead(nn.Layer):
    """Export wrapper: the network's output under the input names of its kind, as logits or (old format) probabilities.

    One subclass per input kind, because the exported program takes its input names from ``forward``'s
    arguments: ``x`` for an image model (as always), ``series``, or ``image`` and ``series``.
    """

    def __init__(self, net: nn.Layer, softmax: bool = False):
        super().__init__()
        self.net = net
        self.softmax = softmax

    def _out(self, z):
        return nn.functional.softmax(z, axis=-1) if self.softmax else z


class ImageLogits(ExportHead):
    """An image network's export head (input ``x``)."""

    def forward(self, x):
        return self._out(self.net(x))


class SeriesLogits(ExportHead):
    """A series network's export head (input ``series``)."""

    def forward(self, series):
        return self._out(self.net(series))


class DualLogits(ExportHead):
    """A dual network's export head (inputs ``image`` and ``series``)."""

    def forward(self, image, series):
        return self._out(self.net(image, series))


class WithSoftmax(ImageLogits):
    """An image network with a softmax head: the old export format (``output: "probabilities"``)."""

    def __init__(self, net: nn.Layer):
        super().__init__(net, softmax=True)


EXPORT_HEADS = {"image": ImageLogits, "series": SeriesLogits, "dual": DualLogits}
OUTPUTS = ("logits", "probabilities")


def framework_versions() -> dict[str, str]:
    """Versions recorded in ``meta.json``."""
    import visualdl

    return {"paddle": paddle.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "visualdl": getattr(visualdl, "__version__", "unknown")}


def input_meta(kind: str, series_config: SeriesConfig, output: str = "logits") -> dict[str, Any]:
    """The ``meta.json`` entries that describe a ``kind`` network's inputs, output and preprocessing.

    An image model has one unnamed input (``input``, ``preprocess``). Series and dual models list their
    named inputs under ``inputs`` with ``series_preprocess``; a series model keeps ``input``/``preprocess``
    describing its one input for tools that read only those.
    """
    image = {"name": "image", "shape": [None, *INPUT_SHAPE], "dtype": "float32"}
    if kind == "image":
        return {"input": {"shape": image["shape"], "dtype": "float32"}, "output": output,
                "preprocess": PreprocessConfig().to_dict()}
    series = {"name": "series", "shape": [None, *series_config.input_shape], "dtype": "float32"}
    inputs = [series] if kind == "series" else [image, series]
    return {"inputs": inputs, "input": {"shape": inputs[0]["shape"], "dtype": "float32"}, "output": output,
            "series_preprocess": series_config.to_dict(),
            "preprocess": PreprocessConfig().to_dict() if kind == "dual" else {"method": "series",
                                                                               **series_config.to_dict()}}


def export_model(layer: nn.Layer, out_dir: str | os.PathLike, meta_extra: dict[str, Any] | None = None,
                 softmax: bool = True, kind: str = "image", series_config: SeriesConfig | None = None,
                 output: str = "logits") -> Path:
    """Save ``layer`` with ``paddle.jit.save``, its ``state_dict`` (``model.pdparams``) and ``meta.json``, atomically.

    Args:
        layer: the network, returning logits ``[N, 12]`` or, with the "other" class, ``[N, 13]``.
        out_dir: the model folder to (re)create.
        meta_extra: merged into the metadata (``name``, ``architecture``, ``metrics``, ``recipe``, ``data``,
            ``preprocess``, ``confidence``, ``open_set`` …; ``other_class: true`` for a 13-output network).
            ``preprocess`` defaults to the default method's config.
        softmax: False when ``layer`` already returns probabilities (exported as they are, ``output:
            "probabilities"``).
        kind: what the network reads: ``image``, ``series`` or ``dual`` (:func:`training.models.network_kind`).
        series_config: the series preprocessing of a series or dual network (default ``SeriesConfig()``).
        output: ``logits`` (the network's outputs as they are; the format of every new folder) or
            ``probabilities`` (a softmax head on twelve outputs: the format of the folders exported before).

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: an unknown ``kind`` or ``output``; an "other" class in the old probabilities format; a
            network whose number of outputs is not what ``other_class`` says.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown input kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
    out_dir = Path(out_dir)
    meta_extra = dict(meta_extra or {})
    other_class = bool(meta_extra.pop("other_class", False))
    if not softmax:  # the network already returns probabilities
        output = "probabilities"
    if other_class and output != "logits":
        raise ValueError("a network with the 'other' output is exported as logits (meta.json output: logits)")
    io = input_meta(kind, series_config or SeriesConfig(), output)
    # InputSpec turns None into -1 in the list it is given: series/dual meta.json have recorded their
    # batch axis as -1 since they were first exported (serving reads -1 and null alike), image ones as null.
    if kind == "image":  # one unnamed input, as the image models have always been exported
        specs = [InputSpec(list(io["input"]["shape"]), "float32")]
    else:
        specs = [InputSpec(s["shape"], "float32", s["name"]) for s in io["inputs"]]
    net = EXPORT_HEADS[kind](layer, softmax=softmax and output == "probabilities")
    was_training = layer.training
    net.eval()
    width = _output_width(net, specs)
    if width != num_outputs(other_class):
        raise ValueError(f"the network has {width} outputs; meta.json would say {num_outputs(other_class)} "
                         f"(other_class {str(other_class).lower()})")
    meta = {
        "name": meta_extra.pop("name", out_dir.name),
        "kind": kind,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **io,
        **({"other_class": other_class} if output == "logits" else {}),
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


def _output_width(net: nn.Layer, specs: list[InputSpec]) -> int:
    """Columns of the network's output, from one all-zero card (the check before anything is written)."""
    zeros = [paddle.zeros([1, *[d for d in spec.shape[1:]]], "float32") for spec in specs]
    with paddle.no_grad():
        return int(net(*zeros).shape[-1])


def load_exported(folder: str | os.PathLike):
    """Load an exported folder with ``paddle.jit.load`` (for tests and evaluation in the dynamic graph)."""
    return paddle.jit.load(str(Path(folder) / MODEL_PREFIX))
