"""The self-describing model folder: ``inference.json`` + ``inference.pdiparams`` + ``meta.json``.

Training writes ``meta.json`` with :func:`write_meta`; serving and evaluation read it with
:func:`load_meta`, which validates it so that a broken or mismatched folder is refused at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from shared.atomic import atomic_write_text
from shared.labels import labels_as_dicts

META_FILE = "meta.json"
MODEL_PREFIX = "inference"
META_SCHEMA = 1
MODEL_KINDS = ("image", "series", "dual")


class ModelFolderError(RuntimeError):
    """A model folder is missing files or its metadata is invalid or incompatible."""


def model_files(folder: str | os.PathLike) -> tuple[Path, Path]:
    """Return the (graph, params) paths of the exported network in ``folder``."""
    folder = Path(folder)
    return folder / f"{MODEL_PREFIX}.json", folder / f"{MODEL_PREFIX}.pdiparams"


def weights_digest(params: Path) -> dict[str, Any]:
    """Size and SHA-256 of a weights file, recorded at export and checked at load.

    Paddle loads a ``.pdiparams`` cut short without complaint and then computes garbage, so a damaged
    copy of a model folder is caught by this digest rather than by Paddle.
    """
    digest = hashlib.sha256()
    with open(params, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"file": params.name, "bytes": params.stat().st_size, "sha256": digest.hexdigest()}


def write_meta(folder: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` atomically into ``folder``, filling in the label table, schema and weights digest."""
    meta = dict(meta)
    meta.setdefault("schema", META_SCHEMA)
    meta.setdefault("labels", labels_as_dicts())
    meta.setdefault("kind", "image")
    params = model_files(folder)[1]
    if params.is_file():
        meta["weights"] = weights_digest(params)
    path = Path(folder) / META_FILE
    atomic_write_text(path, json.dumps(meta, ensure_ascii=False, indent=2, sort_keys=False) + "\n")
    return path


def load_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the metadata of a model folder.

    Raises:
        ModelFolderError: if the folder, the network files or ``meta.json`` are missing, or the
            metadata lacks labels, input shape or preprocessing, or names an unknown model kind.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    graph, params = model_files(folder)
    for required in (graph, params, folder / META_FILE):
        if not required.is_file():
            raise ModelFolderError(f"model folder {folder} is missing {required.name}")
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{folder / META_FILE} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelFolderError(f"{folder / META_FILE} must hold a JSON object")
    for key in ("labels", "input", "preprocess"):
        if key not in meta:
            raise ModelFolderError(f"{folder / META_FILE} has no {key!r} entry")
    labels = meta["labels"]
    if not isinstance(labels, list) or not labels or not all(
        isinstance(x, dict) and {"code", "name", "name_en"} <= x.keys() for x in labels
    ):
        raise ModelFolderError(f"{folder / META_FILE}: 'labels' must be a list of {{code, name, name_en}}")
    recorded = meta.get("weights")
    if isinstance(recorded, dict) and "sha256" in recorded:
        actual = weights_digest(params)
        if (actual["bytes"], actual["sha256"]) != (recorded.get("bytes"), recorded["sha256"]):
            raise ModelFolderError(
                f"{params} does not match meta.json (recorded {recorded.get('bytes')} bytes, sha256 "
                f"{str(recorded['sha256'])[:12]}…; found {actual['bytes']} bytes, {actual['sha256'][:12]}…): "
                "the weights are damaged or from another export"
            )
    if meta.get("kind", "image") not in MODEL_KINDS:
        raise ModelFolderError(
            f"{folder / META_FILE}: unknown model kind {meta.get('kind')!r}; expected one of {', '.join(MODEL_KINDS)}"
        )
    return meta
