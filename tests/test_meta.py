"""The model folder's meta.json: required entries, kinds, and the weights digest that catches damaged copies."""

from __future__ import annotations

import json

import pytest

from shared.meta import ModelFolderError, load_meta, model_files, write_meta


def _folder(tmp_path, weights: bytes = b"\x00weights" * 1000):
    graph, params = model_files(tmp_path)
    graph.write_text("{}")
    params.write_bytes(weights)
    write_meta(tmp_path, {"input": {"shape": [None, 1, 190, 400]}, "preprocess": {"method": "default"}})
    return tmp_path


def test_write_then_load_round_trip(tmp_path):
    meta = load_meta(_folder(tmp_path))
    assert meta["kind"] == "image" and len(meta["labels"]) == 12 and meta["labels"][1]["name"] == "供液不足"
    assert meta["weights"]["bytes"] == 8000 and len(meta["weights"]["sha256"]) == 64


@pytest.mark.parametrize("damage", ["truncate", "flip", "swap"])
def test_damaged_weights_are_refused(tmp_path, damage):
    folder = _folder(tmp_path)
    params = model_files(folder)[1]
    data = params.read_bytes()
    if damage == "truncate":
        params.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        params.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        params.write_bytes(b"other" * 1800)
    with pytest.raises(ModelFolderError, match="does not match meta.json"):
        load_meta(folder)


def test_missing_files_and_bad_entries(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_meta(tmp_path / "nope")
    folder = _folder(tmp_path)
    model_files(folder)[0].unlink()
    with pytest.raises(ModelFolderError, match="missing inference.json"):
        load_meta(folder)
    model_files(folder)[0].write_text("{}")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "kind": "audio"}))
    with pytest.raises(ModelFolderError, match="unknown model kind"):
        load_meta(folder)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not readable JSON"):
        load_meta(folder)
    del meta["preprocess"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match="'preprocess'"):
        load_meta(folder)
