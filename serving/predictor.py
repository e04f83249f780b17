"""Paddle Inference predictor for an exported CardSense model folder.

The folder describes itself (``meta.json``: labels, input shape, preprocessing); nothing about the
model is hard-coded here. Construction validates everything and warms up every batch shape, so a
broken model stops the process at start-up rather than at the first request.

Thread safety: a Paddle predictor is not thread-safe (shared input/output handles return other
requests' outputs). The predictor keeps a pool of ``predictor.clone()`` objects (they share the
weights), one per serving thread; a call takes one from the pool and gives it back.

Batch shapes: every batch is padded up to the next of the configured ``batch_sizes`` and larger
batches are split, so only warmed-up shapes ever reach oneDNN (each new shape costs a slow first run
and a cache entry).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import paddle
from paddle import inference

from shared.cards import CardError, decode_card_png, read_card_csv
from shared.meta import ModelFolderError, load_meta, model_files
from shared.preprocess import PreprocessConfig, card_ink, preprocess_csv, preprocess_png

log = logging.getLogger(__name__)

CARD_KINDS = ("png", "csv")


class StartupError(RuntimeError):
    """The predictor cannot start: missing or inconsistent model files, bad device, failed warm-up."""


def _graph_input(graph: Path) -> tuple[str | None, list[int] | None]:
    """Best-effort read of the input name and shape from a PIR ``inference.json``.

    The PIR JSON layout is internal to Paddle, so anything unexpected returns ``(None, None)`` and
    the warm-up run is the check that remains.
    """
    try:
        program = json.loads(graph.read_text(encoding="utf-8"))
        ops = program["program"]["regions"][0]["blocks"][0]["ops"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None, None
    for op in ops:
        if isinstance(op, dict) and str(op.get("#", "")).endswith(".data"):
            attrs = {a.get("N"): a.get("AT", {}).get("D") for a in op.get("A", []) if isinstance(a, dict)}
            name, shape = attrs.get("name"), attrs.get("shape")
            if isinstance(name, str) and isinstance(shape, list) and all(isinstance(d, int) for d in shape):
                return name, shape
    return None, None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(requested: str, gpu_id: int = 0) -> tuple[str, str]:
    """Choose the device for ``requested`` (``auto|cpu|gpu``).

    Returns:
        ``(device, reason)`` with device ``"cpu"`` or ``"gpu"`` and a sentence for the log.

    Raises:
        StartupError: ``gpu`` was requested but Paddle has no CUDA or the device is not visible.
    """
    cuda = bool(paddle.is_compiled_with_cuda())
    count = int(paddle.device.cuda.device_count()) if cuda else 0
    if requested == "cpu":
        return "cpu", "CPU requested"
    if requested == "gpu":
        if not cuda:
            raise StartupError("CARDSENSE_DEVICE=gpu but this Paddle build has no CUDA support (CPU wheel)")
        if count <= gpu_id:
            raise StartupError(f"CARDSENSE_DEVICE=gpu but GPU {gpu_id} is not visible ({count} CUDA device(s))")
        return "gpu", f"GPU {gpu_id} requested"
    if cuda and count > gpu_id:
        return "gpu", f"auto: Paddle has CUDA and {count} device(s) visible"
    why = "Paddle has no CUDA support" if not cuda else "no CUDA device is visible"
    return "cpu", f"auto: {why}, using CPU"


class Predictor:
    """A warmed-up, thread-safe Paddle Inference predictor for one model folder.

    Args:
        model_dir: exported model folder (``inference.json``, ``inference.pdiparams``, ``meta.json``).
        device: ``auto``, ``cpu`` or ``gpu``.
        cpu_threads: math-library threads per predictor clone on CPU.
        pool_size: number of predictor clones (one per serving thread).
        batch_sizes: the batch shapes that are warmed up and used; must include 1.
        gpu_id, gpu_mem_mb: GPU device and initial memory pool (MB) on GPU.
        tensorrt: use TensorRT on GPU (engines cached in ``trt_cache_dir``).
        cpu_ir_optim: run Paddle's IR optimisation passes on CPU (off by default: slower here, same output).

    Raises:
        StartupError: with a message naming the folder and what is wrong.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        device: str = "auto",
        cpu_threads: int = 1,
        pool_size: int = 1,
        batch_sizes: Sequence[int] = (1, 8, 32),
        gpu_id: int = 0,
        gpu_mem_mb: int = 256,
        tensorrt: bool = False,
        trt_cache_dir: str | os.PathLike | None = None,
        cpu_ir_optim: bool = False,
    ) -> None:
        started = time.perf_counter()
        self.model_dir = Path(model_dir)
        try:
            self.meta: dict[str, Any] = load_meta(self.model_dir)
        except ModelFolderError as exc:
            raise StartupError(f"cannot load model: {exc}") from exc
        self.kind: str = self.meta.get("kind", "image")
        self.labels: list[dict[str, str]] = [dict(x) for x in self.meta["labels"]]
        self.codes: list[str] = [x["code"] for x in self.labels]
        if len(set(self.codes)) != len(self.codes):
            raise StartupError(f"{self.model_dir}/meta.json: label codes are not unique: {self.codes}")
        self._setup_inputs()

        self.batch_sizes = tuple(sorted(set(int(b) for b in batch_sizes)))
        if not self.batch_sizes or self.batch_sizes[0] < 1 or 1 not in self.batch_sizes:
            raise StartupError(f"batch sizes {batch_sizes} must be positive and include 1")
        self.max_batch = self.batch_sizes[-1]

        graph, params = model_files(self.model_dir)
        self.sha256 = _file_sha256(params)
        self.name = str(self.meta.get("name") or self.model_dir.name)
        self.version = str(self.meta.get("version") or self.meta.get("created") or f"sha256:{self.sha256[:12]}")

        self.device, self.device_reason = resolve_device(device, gpu_id)
        self.requested_device = device
        self.cpu_threads = cpu_threads
        self.cpu_ir_optim = bool(cpu_ir_optim)
        self.tensorrt = bool(tensorrt and self.device == "gpu")
        config = self._make_config(graph, params, gpu_id, gpu_mem_mb, trt_cache_dir)
        try:
            first = inference.create_predictor(config)
        except Exception as exc:  # Paddle raises plain RuntimeError/ValueError subclasses from C++
            raise StartupError(f"{self.model_dir}: Paddle cannot load the network: {exc}") from exc
        self._input_name = first.get_input_names()[0]
        self._output_name = first.get_output_names()[0]
        clones = [first] + [first.clone() for _ in range(max(1, pool_size) - 1)]
        self._pool: queue.Queue = queue.Queue()
        for clone in clones:
            self._warm_up(clone)
            self._pool.put(clone)
        self.pool_size = len(clones)
        self.startup_seconds = time.perf_counter() - started
        self.ready = True
        log.info(
            "model %s (%s) ready on %s (%s); %d clone(s), batch sizes %s, warm-up done in %.2f s",
            self.name, self.version, self.device, self.device_reason, self.pool_size, self.batch_sizes,
            self.startup_seconds,
        )

    # ---------------------------------------------------------------------------------- set-up

    def _setup_inputs(self) -> None:
        """Preprocessing and input shape from ``meta.json`` (image models; series/dual: serving.routing)."""
        if self.kind != "image":
            raise StartupError(f"{self.model_dir}: a {self.kind!r} model is served by serving.routing.load_predictor, "
                               "not Predictor")
        try:
            self.preprocess = PreprocessConfig.from_dict(self.meta["preprocess"])
        except (ValueError, TypeError, AttributeError) as exc:
            raise StartupError(f"{self.model_dir}/meta.json: unusable preprocessing: {exc}") from exc
        self.input_shape: tuple[int, ...] = tuple(self.preprocess.input_shape)
        self._check_input_spec()

    def _check_input_spec(self) -> None:
        spec = self.meta.get("input") or {}
        shape = spec.get("shape") if isinstance(spec, dict) else None
        dtype = spec.get("dtype", "float32") if isinstance(spec, dict) else None
        expected = [None, *self.input_shape]
        if not isinstance(shape, list) or len(shape) != 4:
            raise StartupError(f"{self.model_dir}/meta.json: input shape {shape!r} is not [N, C, H, W]")
        got = [None if (d is None or d == -1) else d for d in shape]
        if got[1:] != expected[1:]:
            raise StartupError(
                f"{self.model_dir}/meta.json: input shape {shape} does not match the preprocessing output "
                f"{list(self.input_shape)} (method {self.preprocess.method})"
            )
        if dtype != "float32":
            raise StartupError(f"{self.model_dir}/meta.json: input dtype {dtype!r}; this service feeds float32")
        graph, _ = model_files(self.model_dir)
        _, graph_shape = _graph_input(graph)
        if graph_shape is not None and [d for d in graph_shape[1:]] != list(self.input_shape):
            raise StartupError(
                f"{self.model_dir}/inference.json: the network takes {graph_shape}, but meta.json and the "
                f"preprocessing give {[None, *self.input_shape]}"
            )

    def _make_config(self, graph: Path, params: Path, gpu_id: int, gpu_mem_mb: int, trt_cache_dir) -> Any:
        config = inference.Config(str(graph), str(params))
        config.disable_glog_info()
        # Not enable_memory_optim(): it breaks create_predictor on PIR (.json) models in Paddle 3.3.1.
        if self.device == "gpu":
            config.enable_use_gpu(gpu_mem_mb, gpu_id)
            if self.tensorrt:
                cache = Path(trt_cache_dir or self.model_dir / "_trt_cache")
                cache.mkdir(parents=True, exist_ok=True)
                config.set_optim_cache_dir(str(cache))
                config.enable_tensorrt_engine(
                    workspace_size=1 << 30,
                    max_batch_size=self.max_batch,
                    min_subgraph_size=3,
                    precision_mode=inference.PrecisionType.Float32,
                    use_static=True,  # serialise engines to the cache: fast cold start next time
                    use_calib_mode=False,
                )
                name, _ = _graph_input(graph)
                name = name or "x"
                one = [1, *self.input_shape]
                config.set_trt_dynamic_shape_info(
                    {name: one}, {name: [self.max_batch, *self.input_shape]}, {name: one}
                )
        else:
            config.disable_gpu()
            # Measured on the 2-core EPYC with the default cardnet, interleaved repeats: without Paddle's
            # IR optimisation passes the oneDNN predictor gives bit-identical probabilities and is
            # 1.1-1.6x faster at batch 1 and 1.3-1.4x at batch 32 (bench/notes.md). GPU keeps the passes
            # (TensorRT needs them).
            config.switch_ir_optim(self.cpu_ir_optim)
            config.enable_mkldnn()
            # One cache entry per warmed batch shape, with room to spare.
            config.set_mkldnn_cache_capacity(max(10, 2 * len(self.batch_sizes)))
            config.set_cpu_math_library_num_threads(self.cpu_threads)
        return config

    def _warm_up(self, predictor: Any) -> None:
        for size in self.batch_sizes:
            x = np.zeros((size, *self.input_shape), np.float32)
            try:
                out = self._run(predictor, x)
            except Exception as exc:  # noqa: BLE001 - any failure here is a start-up failure
                raise StartupError(
                    f"{self.model_dir}: warm-up with input {list(x.shape)} failed: {exc}"
                ) from exc
            if out.shape != (size, len(self.codes)):
                raise StartupError(
                    f"{self.model_dir}: the network returns shape {list(out.shape)} for a batch of {size}, "
                    f"expected [{size}, {len(self.codes)}] (one probability per label in meta.json)"
                )
            sums = out.sum(axis=1)
            if not (np.all(np.isfinite(out)) and np.allclose(sums, 1.0, atol=1e-3) and out.min() >= -1e-6):
                raise StartupError(
                    f"{self.model_dir}: the network output is not softmax probabilities "
                    f"(row sums {sums[:3].round(4).tolist()}); export it with a softmax head"
                )

    # ---------------------------------------------------------------------------------- inference

    def _run(self, predictor: Any, x: np.ndarray) -> np.ndarray:
        handle = predictor.get_input_handle(self._input_name)
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(np.ascontiguousarray(x, dtype=np.float32))
        predictor.run()
        return predictor.get_output_handle(self._output_name).copy_to_cpu()

    @contextmanager
    def _borrow(self) -> Iterator[Any]:
        predictor = self._pool.get()
        try:
            yield predictor
        finally:
            self._pool.put(predictor)

    def _bucket(self, n: int) -> int:
        for size in self.batch_sizes:
            if size >= n:
                return size
        return self.max_batch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of model inputs.

        Args:
            batch: ``float32 [N, 1, H, W]`` (or one input ``[1, H, W]``), from the shared preprocessing.

        Returns:
            ``float32 [N, len(labels)]``, each row summing to 1, in the order of :attr:`codes`.
        """
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == len(self.input_shape):
            batch = batch[None]
        if tuple(batch.shape[1:]) != self.input_shape:
            raise ValueError(f"batch shape {list(batch.shape)} does not match the model input [N, {self.input_shape}]")
        n = batch.shape[0]
        if n == 0:
            return np.zeros((0, len(self.codes)), np.float32)
        out = np.empty((n, len(self.codes)), np.float32)
        with self._borrow() as predictor:
            for start in range(0, n, self.max_batch):
                chunk = batch[start : start + self.max_batch]
                size = self._bucket(len(chunk))
                if size != len(chunk):
                    pad = np.zeros((size - len(chunk), *self.input_shape), np.float32)
                    chunk = np.concatenate([chunk, pad])
                out[start : start + self.max_batch] = self._run(predictor, chunk)[: min(self.max_batch, n - start)]
        return out

    # ---------------------------------------------------------------------------------- cards

    def prepare(self, data: bytes, kind: str) -> np.ndarray:
        """Card bytes -> model input ``float32 [1, H, W]`` with the model's own preprocessing.

        Args:
            data: file contents.
            kind: ``"png"`` or ``"csv"`` (a CSV is rendered and then takes the PNG path).

        Raises:
            CardError: the file is not a usable card.
        """
        if kind == "png":
            return preprocess_png(data, self.preprocess)
        if kind == "csv":
            return preprocess_csv(data, self.preprocess)
        raise CardError(f"unsupported card type {kind!r}; expected png or csv")

    @staticmethod
    def card_outline(data: bytes, kind: str) -> np.ndarray:
        """The card's outline mask as the preprocessing sees it (for display): ``uint8 [H, W]``."""
        if kind == "png":
            return decode_card_png(data)
        return card_ink(read_card_csv(data))

    def result(self, probs: np.ndarray, top_k: int = 0) -> dict[str, Any]:
        """A JSON-ready prediction for one row of probabilities."""
        probs = np.asarray(probs, dtype=np.float64)
        best = int(np.argmax(probs))
        label = self.labels[best]
        out: dict[str, Any] = {
            "label": label["code"],
            "name": label["name"],
            "name_en": label["name_en"],
            "confidence": float(probs[best]),
            "probabilities": {code: float(p) for code, p in zip(self.codes, probs)},
        }
        if top_k > 0:
            order = np.argsort(-probs, kind="stable")[:top_k]
            out["top_k"] = [
                {"label": self.codes[i], "name": self.labels[i]["name"], "name_en": self.labels[i]["name_en"],
                 "probability": float(probs[i])}
                for i in order
            ]
        return out

    @property
    def model_id(self) -> dict[str, str]:
        """``{"name", "version", "kind"}`` of the loaded model, returned with every prediction."""
        return {"name": self.name, "version": self.version, "kind": self.kind}

    def describe(self) -> dict[str, Any]:
        """Model metadata, device and runtime settings, for ``GET /model``."""
        return {
            "model": {**self.model_id, "sha256": self.sha256, "folder": str(self.model_dir)},
            "meta": self.meta,
            "labels": self.labels,
            "preprocess": self.preprocess.to_dict(),
            "input_shape": [None, *self.input_shape],
            "metrics": self.meta.get("metrics", {}),
            "device": {
                "requested": self.requested_device,
                "selected": self.device,
                "reason": self.device_reason,
                "tensorrt": self.tensorrt,
                "cpu_threads": self.cpu_threads if self.device == "cpu" else None,
                "onednn": self.device == "cpu",
                "ir_optim": self.cpu_ir_optim if self.device == "cpu" else True,
            },
            "runtime": {
                "pool_size": self.pool_size,
                "batch_sizes": list(self.batch_sizes),
                "startup_seconds": round(self.startup_seconds, 3),
                "pid": os.getpid(),
                "threads_alive": threading.active_count(),
            },
        }
