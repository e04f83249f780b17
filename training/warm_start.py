"""``--init MODEL_DIR``: start a run from an exported model's weights (fine-tuning).

An exported folder holds, beside the inference program, ``model.pdparams``: the logits network's
``state_dict`` with structured names, digested in ``meta.json`` → ``training_weights``
(:mod:`training.export`). :func:`read_init` reads and checks both; :func:`check_compatible` refuses a
model that does not fit the run (other labels, preprocessing, input kind or network) with a one-line
reason; :func:`apply_state` puts the weights into a freshly built network and checks that every
parameter and buffer was matched. A late-fusion dual model (``dualnet_late``) is fine-tuned part by
part: :func:`part_state` takes the ``image_net.`` / ``series_net.`` halves of its state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from shared.labels import CODES
from shared.meta import ModelFolderError, load_meta, weights_digest
from shared.preprocess import PreprocessConfig
from shared.series import SeriesConfig
from training.export import TRAINING_WEIGHTS

LATE_FUSION_PARTS = {"image": "image_net.", "series": "series_net."}


class InitError(ValueError):
    """The ``--init`` model cannot start this run (missing weights, or another labels/preprocessing/network)."""


@dataclass(frozen=True)
class InitModel:
    """An exported model to start from: its folder, ``meta.json`` and the digest of its ``model.pdparams``."""

    folder: Path
    meta: dict[str, Any]
    sha256: str

    @property
    def kind(self) -> str:
        """``image``, ``series`` or ``dual``."""
        return self.meta.get("kind", "image")

    @property
    def architecture(self) -> str:
        """The registered network name the model was trained as."""
        return str(self.meta.get("architecture", ""))

    def provenance(self) -> dict[str, Any]:
        """What ``config.json`` and ``meta.json`` record about the starting point."""
        return {"model": self.meta.get("name", self.folder.name), "folder": str(self.folder),
                "architecture": self.architecture, "kind": self.kind, "training_weights_sha256": self.sha256,
                "data_fingerprint": (self.meta.get("data") or {}).get("fingerprint")}

    def state(self) -> dict[str, Any]:
        """The network's ``state_dict`` (structured names)."""
        return paddle.load(str(self.folder / TRAINING_WEIGHTS))


def read_init(folder: str | os.PathLike) -> InitModel:
    """Read an exported model folder to fine-tune from.

    Raises:
        InitError: the folder is not a valid model folder, has no ``model.pdparams`` (exported before
            fine-tuning was possible: re-export or retrain it), or the file does not match its digest.
    """
    folder = Path(folder)
    try:
        meta = load_meta(folder)
    except ModelFolderError as exc:
        raise InitError(f"--init {folder}: {exc}") from None
    weights = folder / TRAINING_WEIGHTS
    if not weights.is_file():
        raise InitError(f"--init {folder}: no {TRAINING_WEIGHTS} (exported before --init existed): "
                        f"re-export or retrain that model")
    recorded = (meta.get("training_weights") or {}).get("sha256")
    actual = weights_digest(weights)["sha256"]
    if recorded != actual:
        raise InitError(f"--init {folder}: {TRAINING_WEIGHTS} does not match meta.json's training_weights "
                        f"(damaged, or from another export): re-export or retrain that model")
    return InitModel(folder, meta, actual)


def check_compatible(init: InitModel, model: str, kind: str, preprocess: str, other_class: bool = False) -> None:
    """Refuse a starting model that does not fit the run.

    Args:
        model: the run's network name; kind: its input kind; preprocess: its image preprocessing method;
        other_class: the run trains a 13th output "other" (``--other-class``).

    Raises:
        InitError: other labels, input kind, network, image preprocessing (method, version, size),
            series preprocessing or number of outputs (the "other" class) than the run's.
    """
    where = f"--init {init.folder}"
    codes = [x.get("code") for x in init.meta.get("labels", [])]
    if codes != list(CODES):
        raise InitError(f"{where}: its labels {','.join(map(str, codes))} are not this toolkit's {','.join(CODES)}")
    if init.kind != kind:
        raise InitError(f"{where}: it reads {init.kind} input, the run --input {kind}")
    if init.architecture != model:
        raise InitError(f"{where}: it is a {init.architecture or 'unnamed'} network, the run trains {model}")
    has_other = bool(init.meta.get("other_class", False))
    if has_other != bool(other_class):
        raise InitError(f"{where}: it has {'13 outputs (the twelve + other)' if has_other else '12 outputs'}, the "
                        f"run {'trains' if other_class else 'does not train'} the \"other\" class: "
                        f"{'drop --no-other-class' if has_other else 'drop --other-class'} or start from another model")
    if kind != "series":
        want = PreprocessConfig(method=preprocess).to_dict()
        if init.meta.get("preprocess") != want:
            raise InitError(f"{where}: its preprocessing {init.meta.get('preprocess')} is not the run's {want}")
    if kind != "image" and init.meta.get("series_preprocess") != SeriesConfig().to_dict():
        raise InitError(f"{where}: its series preprocessing {init.meta.get('series_preprocess')} is not "
                        f"{SeriesConfig().to_dict()}")


def part_state(state: dict[str, Any], part: str) -> dict[str, Any]:
    """The ``image`` or ``series`` network's state inside a late-fusion dual model's state."""
    prefix = LATE_FUSION_PARTS[part]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def apply_state(net: paddle.nn.Layer, state: dict[str, Any]) -> None:
    """Load ``state`` into ``net`` (a freshly built network of the same kind), every entry matched.

    Raises:
        InitError: names or shapes that do not match the network's.
    """
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(np.shape(state[k]))]
    if missing or extra or wrong:
        raise InitError(f"--init weights do not fit the network: missing {missing[:5]}, unexpected {extra[:5]}, "
                        f"other shape {wrong[:5]}")
    net.set_state_dict(state)
