"""Several model folders in one service, and which one answers a card.

A model folder's ``meta.json`` says its ``kind``:

* ``image`` — the PNG (or a CSV rendered to one), ``float32 [N, 1, 190, 400]``: :class:`serving.predictor.Predictor`;
* ``series`` — the raw position/load samples of a CSV, ``float32 [N, 5, 256]`` (:mod:`shared.series`);
* ``dual`` — PNG and CSV of the same card, inputs ``image`` and ``series`` fed by name.

:class:`SeriesPredictor` serves the last two with the same pool of clones, batch buckets and warm-up as
the image predictor. :class:`ModelSet` holds at most one model per kind and routes:

========================  ==========================================================
what arrives              who answers
========================  ==========================================================
PNG                       image
CSV                       series if loaded, else image (the CSV is rendered)
PNG + CSV of one card     dual if loaded, else image on the PNG
========================  ==========================================================

Every answer names the model (``{"name", "version", "kind"}``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from serving.batch import route_kind
from serving.predictor import Predictor, StartupError
from shared.cards import CardError
from shared.meta import ModelFolderError, load_meta
from shared.preprocess import PreprocessConfig, preprocess_png
from shared.series import SeriesConfig, preprocess_series_csv

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


class SeriesPredictor(Predictor):
    """A warmed-up, thread-safe predictor for a ``series`` or ``dual`` model folder.

    Same arguments and guarantees as :class:`serving.predictor.Predictor`; inputs are dicts
    ``{input name: array}`` (``series``; ``image`` + ``series`` for dual), fed to Paddle by name.

    Raises:
        StartupError: wrong kind, unusable ``series_preprocess``/``preprocess``, or ``inputs`` in
            ``meta.json`` that do not match the preprocessing or the network.
    """

    def _setup_inputs(self) -> None:
        if self.kind not in ("series", "dual"):
            raise StartupError(f"{self.model_dir}: kind {self.kind!r} is not a series or dual model")
        try:
            self.series_preprocess = SeriesConfig.from_dict(self.meta["series_preprocess"])
            self.image_preprocess = (PreprocessConfig.from_dict(self.meta["preprocess"]) if self.kind == "dual"
                                     else None)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise StartupError(f"{self.model_dir}/meta.json: unusable preprocessing: {exc}") from exc
        self.preprocess = self.image_preprocess or self.series_preprocess
        self.input_shapes: dict[str, tuple[int, ...]] = {"series": tuple(self.series_preprocess.input_shape)}
        if self.kind == "dual":
            self.input_shapes = {"image": tuple(self.image_preprocess.input_shape), **self.input_shapes}
        self.input_shape = self.input_shapes["series"]
        declared = self.meta.get("inputs")
        if not isinstance(declared, list) or not all(isinstance(d, dict) for d in declared):
            raise StartupError(f"{self.model_dir}/meta.json: a {self.kind} model needs 'inputs' [{{name, shape}}, ...]")
        got = {d.get("name"): [None if v in (None, -1) else v for v in d.get("shape", [])] for d in declared}
        want = {name: [None, *shape] for name, shape in self.input_shapes.items()}
        if got != want:
            raise StartupError(f"{self.model_dir}/meta.json: inputs {got} do not match the preprocessing {want}")

    def _check_network_inputs(self, predictor: Any) -> None:
        names = sorted(predictor.get_input_names())
        if names != sorted(self.input_shapes):
            raise StartupError(f"{self.model_dir}: the network takes inputs {names}, meta.json says "
                               f"{sorted(self.input_shapes)}")

    def _zeros(self, n: int) -> Feeds:
        return {name: np.zeros((n, *shape), np.float32) for name, shape in self.input_shapes.items()}

    def _warm_up(self, predictor: Any) -> None:
        self._check_network_inputs(predictor)
        for size in self.batch_sizes:
            try:
                out = self._run(predictor, self._zeros(size))
            except Exception as exc:  # noqa: BLE001 - any failure here is a start-up failure
                raise StartupError(f"{self.model_dir}: warm-up with a batch of {size} failed: {exc}") from exc
            sums = out.sum(axis=1)
            if out.shape != (size, len(self.codes)) or not (
                np.all(np.isfinite(out)) and np.allclose(sums, 1.0, atol=1e-3) and out.min() >= -1e-6
            ):
                raise StartupError(f"{self.model_dir}: the network returns {list(out.shape)} (row sums "
                                   f"{sums[:3].round(4).tolist()}); expected softmax probabilities "
                                   f"[{size}, {len(self.codes)}]")

    def _run(self, predictor: Any, x: Feeds) -> np.ndarray:  # type: ignore[override]
        for name, arr in x.items():
            handle = predictor.get_input_handle(name)
            handle.reshape(list(arr.shape))
            handle.copy_from_cpu(np.ascontiguousarray(arr, dtype=np.float32))
        predictor.run()
        return predictor.get_output_handle(self._output_name).copy_to_cpu()

    def predict(self, batch: Feeds | np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Class probabilities for a batch: ``{name: float32 [N, ...]}`` (a series model also takes the array).

        Returns:
            ``float32 [N, len(labels)]`` in the order of :attr:`codes`.
        """
        if not isinstance(batch, dict):
            batch = {"series": batch}
        batch = {k: np.asarray(v, np.float32) for k, v in batch.items()}
        if sorted(batch) != sorted(self.input_shapes):
            raise ValueError(f"inputs {sorted(batch)}; the {self.kind} model takes {sorted(self.input_shapes)}")
        for name, arr in batch.items():
            if arr.ndim == len(self.input_shapes[name]):
                batch[name] = arr = arr[None]
            if tuple(arr.shape[1:]) != self.input_shapes[name]:
                raise ValueError(f"input {name!r} shape {list(arr.shape)} does not match [N, {self.input_shapes[name]}]")
        n = len(next(iter(batch.values())))
        if any(len(v) != n for v in batch.values()):
            raise ValueError("inputs of one batch must have the same number of cards")
        out = np.empty((n, len(self.codes)), np.float32)
        if n == 0:
            return out
        with self._borrow() as predictor:
            for start in range(0, n, self.max_batch):
                chunk = {k: v[start:start + self.max_batch] for k, v in batch.items()}
                m = len(next(iter(chunk.values())))
                size = self._bucket(m)
                if size != m:
                    pad = self._zeros(size - m)
                    chunk = {k: np.concatenate([v, pad[k]]) for k, v in chunk.items()}
                out[start:start + m] = self._run(predictor, chunk)[:m]
        return out

    def prepare_pair(self, png: bytes | None, csv: bytes | None) -> Feeds:
        """The card's files -> one input per network input (``[1, ...]`` dropped: per card, no batch axis).

        Raises:
            CardError: a file the model needs is missing or not a usable card.
        """
        feeds = {}
        if csv is None:
            raise CardError(f"the {self.kind} model needs the card's CSV (position/load samples)")
        feeds["series"] = preprocess_series_csv(csv, self.series_preprocess)
        if self.kind == "dual":
            if png is None:
                raise CardError("the dual model needs the card's PNG as well as its CSV")
            feeds["image"] = preprocess_png(png, self.image_preprocess)
        return feeds

    def prepare(self, data: bytes, kind: str) -> Feeds:  # type: ignore[override]
        """One file -> inputs: a series model takes a CSV (a dual model needs :meth:`prepare_pair`)."""
        if kind == "csv" and self.kind == "series":
            return self.prepare_pair(None, data)
        raise CardError(f"the {self.kind} model does not take a lone {kind.upper()}")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["kind"] = self.kind
        info["series_preprocess"] = self.series_preprocess.to_dict()
        info["inputs"] = {name: [None, *shape] for name, shape in self.input_shapes.items()}
        return info


def load_predictor(model_dir: str | os.PathLike, **kwargs: Any) -> Predictor:
    """The right predictor for a model folder's ``kind`` (image, series or dual).

    Raises:
        StartupError: the folder cannot be served (the message says why).
    """
    try:
        kind = load_meta(model_dir).get("kind", "image")
    except ModelFolderError as exc:
        raise StartupError(f"cannot load model: {exc}") from exc
    return (Predictor if kind == "image" else SeriesPredictor)(model_dir, **kwargs)


class ModelSet:
    """At most one predictor per kind, and the routing rule (module docstring).

    Raises:
        StartupError: two folders of the same kind, or no model at all.
    """

    def __init__(self, predictors: Sequence[Predictor]) -> None:
        self.by_kind: dict[str, Predictor] = {}
        for p in predictors:
            if p.kind in self.by_kind:
                raise StartupError(f"two {p.kind} models: {self.by_kind[p.kind].model_dir} and {p.model_dir}; "
                                   "load at most one per kind")
            self.by_kind[p.kind] = p
        if not self.by_kind:
            raise StartupError("no model to serve")
        # The label table every answer uses; all models must agree on it.
        self.primary = self.by_kind.get("image") or next(iter(self.by_kind.values()))
        for p in self.by_kind.values():
            if p.codes != self.primary.codes:
                raise StartupError(f"{p.model_dir}: labels {p.codes} differ from {self.primary.model_dir}'s")

    @classmethod
    def load(cls, folders: Sequence[str | os.PathLike], **kwargs: Any) -> "ModelSet":
        """Build and warm up one predictor per folder (``kwargs`` as for :class:`Predictor`)."""
        return cls([load_predictor(Path(f), **kwargs) for f in folders])

    def get(self, kind: str) -> Predictor | None:
        """The loaded model of a kind, or None."""
        return self.by_kind.get(kind)

    def route(self, png: bytes | None, csv: bytes | None) -> tuple[Predictor, str]:
        """Which model answers a card with these files, and which input it reads (``png|csv|pair``).

        The rule is :func:`serving.batch.route_kind` (Paddle-free, shared with the batch scorer's workers).

        Raises:
            CardError: no loaded model can read what arrived (e.g. a PNG with only a series model).
        """
        kind, used = route_kind(tuple(self.by_kind), png is not None, csv is not None)
        return self.by_kind[kind], used

    def prepare(self, png: bytes | None, csv: bytes | None) -> tuple[Predictor, str, Any]:
        """Route a card and build its model input. Returns ``(predictor, input kind, input)``.

        Raises:
            CardError: the card is not usable by the model it is routed to.
        """
        predictor, used = self.route(png, csv)
        if isinstance(predictor, SeriesPredictor):
            return predictor, used, predictor.prepare_pair(png, csv)
        return predictor, used, predictor.prepare(png if used == "png" else csv, used)

    @staticmethod
    def stack(inputs: list[Any]) -> Any:
        """Stack per-card inputs of one model into a batch (arrays, or dicts of arrays)."""
        if isinstance(inputs[0], dict):
            return {k: np.stack([x[k] for x in inputs]) for k in inputs[0]}
        return np.stack(inputs)

    def describe(self) -> dict[str, Any]:
        """``GET /model``'s ``models``: one entry per kind."""
        return {kind: {**p.model_id, "folder": str(p.model_dir), "metrics": p.meta.get("metrics", {})}
                for kind, p in self.by_kind.items()}


def score_routed(models: ModelSet, source, batch_size: int, progress=None, report_skipped: bool = True,
                 pool=None, workers: int | None = None):
    """The batch scorer with routing: yield one :class:`serving.batch.Row` per card, in the source's order.

    The same pipeline as :func:`serving.batch.score_cards` (which this is): each card goes to the model
    that reads it -- PNG + CSV to the dual model, a lone CSV to the series model, else the image model --
    and all per-card work runs in ``pool``'s processes when given, overlapping inference.
    """
    from serving.batch import score_cards  # noqa: PLC0415

    if workers is None:  # the pool's size: it bounds the chunks in flight
        workers = (os.cpu_count() or 1) if pool is not None else 1
    return score_cards(models, source, batch_size, progress, report_skipped, workers=workers, pool=pool)
