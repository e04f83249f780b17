"""Check a candidate model folder before the service switches to it (zero-downtime reload).

    python -m serving.reload MODEL_DIR [EXTRA_DIR ...]   # exit 0: servable; exit 1: the reason on stderr

gunicorn's master runs this in a child process on every ``SIGHUP`` (``serving/gunicorn.conf.py``,
``on_reload``), on private snapshots of all the configured model folders (``CARDSENSE_MODEL_DIR`` and
the series/dual folders of ``CARDSENSE_EXTRA_MODEL_DIRS`` or the shipped ones), before any new worker
sees them. It builds each real predictor with the service's settings (``CARDSENSE_*``), warms up
every batch shape and classifies a generated card (PNG for an image model, CSV for a series model,
both for a dual model), and checks the set can be served together, so a folder that is half-written,
from another framework version, with an unknown preprocessing, a network that does not match
``meta.json``, outputs that are not probabilities, or a second model of a kind is refused, and the
service keeps the model set it was serving. Paddle is only ever imported in this child, never in the
gunicorn master.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from shared.meta import META_FILE, model_files

SNAPSHOT_PREFIX = "cardsense-model-"


class ReloadError(RuntimeError):
    """The candidate model cannot be served; the message says why."""


def snapshot_model(source: str | os.PathLike, parent: str | os.PathLike | None = None) -> Path:
    """Copy the model files of ``source`` into a new private folder and return it.

    The folder is opened once and its files are read relative to that handle, so a folder swapped
    while we copy (``shared.atomic.atomic_directory``) gives one consistent generation, never half
    of each. Only ``inference.json``, ``inference.pdiparams`` and ``meta.json`` are copied.

    Raises:
        ReloadError: the folder or one of its files cannot be read.
    """
    source = Path(source)
    names = [p.name for p in model_files(source)] + [META_FILE]
    target = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX, dir=parent))  # mode 0700
    try:
        try:
            dir_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ReloadError(f"cannot open the model folder {source}: {exc.strerror}") from None
        try:
            for name in names:
                try:
                    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
                except OSError as exc:
                    raise ReloadError(f"{source}/{name}: {exc.strerror}") from None
                with os.fdopen(fd, "rb") as src, open(target / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        finally:
            os.close(dir_fd)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def snapshot_models(sources: list[str | os.PathLike], parent: str | os.PathLike | None = None) -> list[Path]:
    """:func:`snapshot_model` of every folder of a model set, in order; all or none.

    Raises:
        ReloadError: one of the folders cannot be read (the snapshots already made are removed).
    """
    snapshots: list[Path] = []
    try:
        for source in sources:
            snapshots.append(snapshot_model(source, parent))
    except BaseException:
        for snapshot in snapshots:
            shutil.rmtree(snapshot, ignore_errors=True)
        raise
    return snapshots


def _test_card() -> tuple[bytes, bytes]:
    """One valid card as PNG and as CSV: what a real request would bring."""
    import numpy as np

    from shared.cards import card_csv_text, render_card_png

    t = np.linspace(0.0, 2.0 * np.pi, 200, endpoint=False)
    position = 1.5 * (1.0 - np.cos(t))
    load = np.where(t < np.pi, 40.0 + 30.0 * np.clip(position / 3.0 * 8, 0, 1),
                    70.0 - 30.0 * np.clip((1 - position / 3.0) * 8, 0, 1))
    return render_card_png(position, load), card_csv_text(position, load).encode("utf-8")


def _exercise(model_dir: str | os.PathLike, cfg):
    """Build the predictor the service would build for ``model_dir`` and put one real card through it."""
    from serving.model_set import ModelSet
    from serving.predictor import StartupError, load_predictor
    from shared.cards import CardError

    try:
        predictor = load_predictor(
            model_dir, device=cfg.device, cpu_threads=cfg.cpu_threads, pool_size=1, batch_sizes=cfg.batch_sizes,
            gpu_id=cfg.gpu_id, gpu_mem_mb=cfg.gpu_mem_mb, tensorrt=cfg.tensorrt, trt_cache_dir=cfg.trt_cache_dir,
        )
    except StartupError as exc:
        raise ReloadError(str(exc)) from None
    # One real card through the whole path: route, decode, preprocess, network, its output read. The card has
    # both files, so each kind reads what it reads from a request (image: the PNG; series: the CSV; dual: both).
    png, csv = _test_card()
    try:
        x = ModelSet([predictor]).prepare(png, csv).input
        outputs = predictor.predict_cards([x] * max(cfg.batch_sizes))
    except CardError as exc:
        raise ReloadError(f"{model_dir}: the model's preprocessing refuses a valid card: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the network on a real card refuses the model
        raise ReloadError(f"{model_dir}: the network fails on a valid card: {type(exc).__name__}: {exc}") from None
    if len(outputs) != max(cfg.batch_sizes):
        raise ReloadError(f"{model_dir}: the network returns {len(outputs)} rows for {max(cfg.batch_sizes)} cards")
    try:  # the output meta.json promises (shared.model_outputs): softmax probabilities, or logits
        predictor.output.interpret(outputs)
    except ValueError as exc:
        raise ReloadError(f"{model_dir}: {exc}") from None
    return predictor


def _settings(env: dict[str, str] | None):
    from serving.config import ConfigError, ServingConfig

    try:
        return ServingConfig.from_env(os.environ if env is None else env)
    except ConfigError as exc:
        raise ReloadError(str(exc)) from None


def _info(predictor) -> dict:
    return {**predictor.model_id, "kind": predictor.kind, "sha256": predictor.sha256, "labels": list(predictor.codes)}


def check_model(model_dir: str | os.PathLike, env: dict[str, str] | None = None) -> dict:
    """Build and exercise the predictor the service would build for ``model_dir`` (any kind).

    Returns:
        ``{"name", "version", "kind", "sha256", "labels"}`` of the model.

    Raises:
        ReloadError: the model cannot be served (the message says why).
    """
    return _info(_exercise(model_dir, _settings(env)))


def check_models(model_dirs: list[str | os.PathLike], env: dict[str, str] | None = None) -> list[dict]:
    """Check a whole model set as the service loads it: the image model folder, then the extra folders.

    Each folder is checked as by :func:`check_model` (its kind's own test card: PNG, CSV or both), and
    the set must be servable together (:class:`serving.model_set.ModelSet`: at most one model per kind,
    the same labels everywhere).

    Returns:
        One ``check_model`` answer per folder, in order.

    Raises:
        ReloadError: a model, or the set, cannot be served (the message names the folder).
    """
    from serving.model_set import ModelSet
    from serving.predictor import StartupError

    cfg = _settings(env)
    predictors = [_exercise(d, cfg) for d in model_dirs]
    try:
        ModelSet(predictors)
    except StartupError as exc:
        raise ReloadError(str(exc)) from None
    return [_info(p) for p in predictors]


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.reload MODEL_DIR [EXTRA_DIR ...]``: 0 and a JSON line per model if servable, 1 and why if not."""
    parser = argparse.ArgumentParser(prog="python -m serving.reload", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR",
                        help="model folder(s) to check together, as the service loads them: the image model, then "
                             "series/dual ones (each: inference.json, inference.pdiparams, meta.json)")
    args = parser.parse_args(argv)
    try:
        infos = check_models(args.model_dirs)
    except ReloadError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for info in infos:
        print(json.dumps(info, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
