"""Every Paddle Inference predictor of the service: one base and the multi-input subclass beside it.

* :class:`Predictor` -- the base, and the predictor of an ``image`` model (one input, the filled card);
* :class:`MultiInputPredictor` -- ``series`` and ``dual`` models, whose inputs ``meta.json`` names;
* :func:`load_predictor` -- the right one for a model folder's ``kind``.

Both take the same batches, ``{input name: float32 [N, ...]}`` (:data:`serving.routing.Batch`), or the
per-card inputs of :mod:`serving.routing` (:meth:`Predictor.predict_cards`, the one per-kind call the
HTTP app and the batch scorer make). What a kind reads and how a card becomes it is
:class:`serving.routing.ModelInputs`, which each predictor builds from its ``meta.json`` (:attr:`Predictor.inputs`).

The folder describes itself (``meta.json``: labels, input shape, preprocessing); nothing about the
model is hard-coded here. Construction validates everything and warms up every batch shape, so a
broken model stops the process at start-up rather than at the first request.

Thread safety: a Paddle predictor is not thread-safe (shared input/output handles return other
requests' outputs). The predictor keeps a pool of ``predictor.clone()`` objects (they share the
weights); a call takes one from the pool and gives it back. Clones used concurrently from several
threads still fail now and then inside ``predictor.run()`` (``RuntimeError: std::exception``, about
1 % of calls with 6 threads on 2 clones), and ``run()`` holds the GIL anyway: the service therefore
makes every call from one thread (:mod:`serving.batcher`) and keeps one clone.

Batch shapes: every batch is padded up to the next of the configured ``batch_sizes`` and larger
batches are split, so only warmed-up shapes ever reach oneDNN (each new shape costs a slow first run
and a cache entry). The service warms every size from 1 to its largest batch, so the dynamic batcher's
calls are never padded (:class:`serving.config.ServingConfig`).
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
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import paddle
from paddle import inference

from serving.routing import Batch, CardInput, ModelInputs, stack_inputs
from shared.meta import ModelFolderError, load_meta, model_files
from shared.model_outputs import OutputContract
from shared.preprocess import PreprocessConfig
from shared.series import SeriesConfig

log = logging.getLogger(__name__)


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
    """A warmed-up, thread-safe Paddle Inference predictor for one model folder: the base of the family.

    It serves an ``image`` model itself (one input, the filled card ``[N, 1, H, W]``, fed to the network's
    only input); :class:`MultiInputPredictor` serves the kinds whose inputs ``meta.json`` names. Every
    predictor takes batches ``{input name: float32 [N, ...]}`` (:meth:`predict`) or per-card inputs
    (:meth:`predict_cards`), and describes what it reads in :attr:`inputs`.

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
        try:  # how the network's first output is read (shared.model_outputs): checked here, applied per answer
            self.output: OutputContract = OutputContract.from_meta(self.meta)
        except ValueError as exc:
            raise StartupError(f"{self.model_dir}/meta.json: {exc}") from exc
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
        self._network_inputs = self._bind_network_inputs(first.get_input_names())
        self._output_name = first.get_output_names()[0]
        # Only the first clone is warmed (and checked) here: oneDNN caches its primitives per thread, so a warm-up
        # on this thread would not spare the threads that use the other clones their first slow runs, and the
        # service's batcher uses one clone only (pin()). Each other clone is warmed when first borrowed.
        self._warm_up(first)
        clones = [first] + [first.clone() for _ in range(max(1, pool_size) - 1)]
        self._warmed = {id(first)}
        self._pool: queue.Queue = queue.Queue()
        for clone in clones:
            self._pool.put(clone)
        self.pool_size = len(clones)
        self._pinned: Any | None = None  # the one clone every call uses once pin() was called
        self._pinned_lock = threading.Lock()
        self.startup_seconds = time.perf_counter() - started
        self.ready = True
        log.info(
            "model %s (%s) ready on %s (%s); %d clone(s), batch sizes %s, warm-up done in %.2f s",
            self.name, self.version, self.device, self.device_reason, self.pool_size, self.batch_sizes,
            self.startup_seconds,
        )

    # ---------------------------------------------------------------------------------- set-up (per kind)

    def _setup_inputs(self) -> None:
        """What the model reads, from ``meta.json``: :attr:`inputs`, :attr:`input_shapes`, :attr:`preprocess`.

        The base reads an ``image`` model; :class:`MultiInputPredictor` the others.
        """
        if self.kind != "image":
            raise StartupError(f"{self.model_dir}: a {self.kind!r} model is served by MultiInputPredictor "
                               "(serving.predictor.load_predictor picks the predictor for a folder's kind), "
                               "not Predictor")
        try:
            self.preprocess = PreprocessConfig.from_dict(self.meta["preprocess"])
        except (ValueError, TypeError, AttributeError) as exc:
            raise StartupError(f"{self.model_dir}/meta.json: unusable preprocessing: {exc}") from exc
        self.inputs = ModelInputs("image", image=self.preprocess)
        self.input_shapes: dict[str, tuple[int, ...]] = self.inputs.shapes
        self.input_shape: tuple[int, ...] = self.input_shapes["image"]
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

    def _bind_network_inputs(self, network_names: Sequence[str]) -> dict[str, str]:
        """``{input name: the network's input name}``: an image model's one input is the network's first."""
        return {"image": network_names[0]}

    def _tensorrt_input_names(self, graph: Path) -> dict[str, str]:
        """:meth:`_bind_network_inputs` before the network is loaded (TensorRT needs the names in its config)."""
        name, _ = _graph_input(graph)
        return {"image": name or "x"}

    # ---------------------------------------------------------------------------------- set-up (every kind)

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
                names = self._tensorrt_input_names(graph)
                one = {names[k]: [1, *shape] for k, shape in self.input_shapes.items()}
                most = {names[k]: [self.max_batch, *shape] for k, shape in self.input_shapes.items()}
                config.set_trt_dynamic_shape_info(one, most, one)
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

    def _zeros(self, n: int) -> Batch:
        return {name: np.zeros((n, *shape), np.float32) for name, shape in self.input_shapes.items()}

    def _warm_up(self, predictor: Any) -> None:
        for size in self.batch_sizes:
            x = self._zeros(size)
            try:
                out = self._run(predictor, x)
            except Exception as exc:  # noqa: BLE001 - any failure here is a start-up failure
                shapes = {name: list(v.shape) for name, v in x.items()}
                raise StartupError(f"{self.model_dir}: warm-up with inputs {shapes} failed: {exc}") from exc
            if len(out) != size:
                raise StartupError(f"{self.model_dir}: the network returns {len(out)} rows for a batch of {size}")
            try:  # the shape and kind meta.json promises: softmax [N, 12], or logits [N, 12 | 13]
                self.output.check_raw(out)
            except ValueError as exc:
                raise StartupError(f"{self.model_dir}: {exc}") from exc

    def warm_up(self) -> None:
        """Run every batch shape once on every clone in use (the pinned one, if any), from the calling thread.

        Construction already warms up (and checks) every shape from the constructing thread; oneDNN keeps
        its primitive cache per thread, so a thread that will make the calls -- the service's batcher
        (:mod:`serving.batcher`) -- warms up again on itself, or each shape's first call there is slow.

        Raises:
            StartupError: a warm-up run failed.
        """
        if self._pinned is not None:
            with self._pinned_lock:
                self._warm_up(self._pinned)
            return
        clones = [self._pool.get() for _ in range(self.pool_size)]
        try:
            for clone in clones:
                self._warm_up(clone)
                self._warmed.add(id(clone))
        finally:
            for clone in clones:
                self._pool.put(clone)

    def pin(self) -> None:
        """From now on every call uses one and the same clone (serialised), until :meth:`unpin`.

        For a caller that makes every call from one thread, the service's batcher: a thread that uses
        *several* clones one after another -- or a new thread taking over clones another thread used --
        sometimes fails inside ``predictor.run()`` with ``RuntimeError: std::exception`` (measured: 2 of
        6 fresh threads warming up 2 clones in turn; 0 of 9 on one clone). Idempotent.
        """
        with self._pinned_lock:
            if self._pinned is None:
                self._pinned = self._pool.get()

    def unpin(self) -> None:
        """Give the pinned clone back to the pool (calls borrow clones again). Idempotent."""
        with self._pinned_lock:
            if self._pinned is not None:
                self._pool.put(self._pinned)
                self._pinned = None

    # ---------------------------------------------------------------------------------- inference

    def _run(self, predictor: Any, batch: Batch) -> np.ndarray:
        for name, arr in batch.items():
            handle = predictor.get_input_handle(self._network_inputs[name])
            handle.reshape(list(arr.shape))
            handle.copy_from_cpu(np.ascontiguousarray(arr, dtype=np.float32))
        predictor.run()
        return predictor.get_output_handle(self._output_name).copy_to_cpu()

    @contextmanager
    def _borrow(self) -> Iterator[Any]:
        if self._pinned is not None:
            with self._pinned_lock:
                if self._pinned is not None:
                    yield self._pinned
                    return
        predictor = self._pool.get()
        try:
            if id(predictor) not in self._warmed:  # its first use (see __init__)
                self._warm_up(predictor)
                self._warmed.add(id(predictor))
            yield predictor
        finally:
            self._pool.put(predictor)

    def _bucket(self, n: int) -> int:
        for size in self.batch_sizes:
            if size >= n:
                return size
        return self.max_batch

    def _checked(self, batch: Mapping[str, np.ndarray] | np.ndarray) -> Batch:
        """A batch as float32 arrays with the batch axis, one per input of the model, or ValueError."""
        if not isinstance(batch, Mapping):
            if len(self.input_shapes) != 1:
                raise ValueError(f"the {self.kind} model takes inputs {sorted(self.input_shapes)}: pass "
                                 "{name: array}")
            batch = {next(iter(self.input_shapes)): batch}
        if sorted(batch) != sorted(self.input_shapes):
            raise ValueError(f"inputs {sorted(batch)}; the {self.kind} model takes {sorted(self.input_shapes)}")
        checked: Batch = {}
        for name, arr in batch.items():
            arr = np.asarray(arr, dtype=np.float32)
            shape = self.input_shapes[name]
            if arr.ndim == len(shape):
                arr = arr[None]
            if tuple(arr.shape[1:]) != shape:
                raise ValueError(f"input {name!r} shape {list(arr.shape)} does not match the model input "
                                 f"[N, {', '.join(map(str, shape))}]")
            checked[name] = arr
        if len({len(v) for v in checked.values()}) != 1:
            raise ValueError("inputs of one batch must have the same number of cards")
        return checked

    def predict(self, batch: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        """The network's first output for a batch of model inputs (read it with :attr:`output`).

        Args:
            batch: ``{input name: float32 [N, ...]}`` (:data:`serving.routing.Batch`; a single card may leave
                out the batch axis); a model with one input also takes its array alone (an image model:
                ``float32 [N, 1, H, W]``).

        Returns:
            ``float32 [N, output.width]`` in the order of :attr:`codes` (plus "none of the twelve" last when
            the model has it): softmax probabilities of an old model, logits of a new one
            (:class:`shared.model_outputs.OutputContract`; ``self.output.interpret`` gives the probabilities).

        Raises:
            ValueError: inputs that are not this model's, or of the wrong shape.
        """
        batch = self._checked(batch)
        n = len(next(iter(batch.values())))
        out = np.empty((n, self.output.width), np.float32)
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

    def predict_cards(self, inputs: Sequence[CardInput]) -> np.ndarray:
        """The network's first output for cards prepared for this model (:meth:`serving.routing.Router.prepare`).

        The one call per model kind that the HTTP app and the batch scorer make (the service's dynamic batcher,
        :mod:`serving.batcher`, sits in front of it).

        Returns:
            ``float32 [len(inputs), output.width]`` as :meth:`predict`.
        """
        return self.predict(stack_inputs(inputs))

    # ---------------------------------------------------------------------------------- description

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
                "pinned": self._pinned is not None,
                "batch_sizes": list(self.batch_sizes),
                "startup_seconds": round(self.startup_seconds, 3),
                "pid": os.getpid(),
                "threads_alive": threading.active_count(),
            },
        }


class MultiInputPredictor(Predictor):
    """The predictor of a ``series`` or ``dual`` model: its inputs are named in ``meta.json`` and fed by name.

    A series model has one input, ``series`` (``[N, 5, 256]``); a dual model two, ``image`` and ``series``.
    Same arguments and guarantees as :class:`Predictor`.

    Raises:
        StartupError: wrong kind, unusable ``series_preprocess``/``preprocess``, or ``inputs`` in
            ``meta.json`` that do not match the preprocessing or the network.
    """

    def _setup_inputs(self) -> None:
        if self.kind not in ("series", "dual"):
            raise StartupError(f"{self.model_dir}: kind {self.kind!r} is not a series or dual model")
        try:
            self.series_preprocess = SeriesConfig.from_dict(self.meta["series_preprocess"])
            image = PreprocessConfig.from_dict(self.meta["preprocess"]) if self.kind == "dual" else None
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise StartupError(f"{self.model_dir}/meta.json: unusable preprocessing: {exc}") from exc
        self.preprocess = image or self.series_preprocess
        self.inputs = ModelInputs(self.kind, image=image, series=self.series_preprocess)
        self.input_shapes = self.inputs.shapes
        self.input_shape = self.input_shapes["series"]
        declared = self.meta.get("inputs")
        if not isinstance(declared, list) or not all(isinstance(d, dict) for d in declared):
            raise StartupError(f"{self.model_dir}/meta.json: a {self.kind} model needs 'inputs' [{{name, shape}}, ...]")
        got = {d.get("name"): [None if v in (None, -1) else v for v in d.get("shape", [])] for d in declared}
        want = {name: [None, *shape] for name, shape in self.input_shapes.items()}
        if got != want:
            raise StartupError(f"{self.model_dir}/meta.json: inputs {got} do not match the preprocessing {want}")

    def _bind_network_inputs(self, network_names: Sequence[str]) -> dict[str, str]:
        """The network's inputs carry the names ``meta.json`` gives them."""
        if sorted(network_names) != sorted(self.input_shapes):
            raise StartupError(f"{self.model_dir}: the network takes inputs {sorted(network_names)}, meta.json says "
                               f"{sorted(self.input_shapes)}")
        return {name: name for name in self.input_shapes}

    def _tensorrt_input_names(self, graph: Path) -> dict[str, str]:
        return {name: name for name in self.input_shapes}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["kind"] = self.kind
        info["series_preprocess"] = self.series_preprocess.to_dict()
        info["inputs"] = {name: [None, *shape] for name, shape in self.input_shapes.items()}
        return info


def load_predictor(model_dir: str | os.PathLike, **kwargs: Any) -> Predictor:
    """The predictor of the family for a model folder's ``kind`` (image, series or dual), built and warmed up.

    Args:
        model_dir: the model folder.
        kwargs: as for :class:`Predictor`.

    Raises:
        StartupError: the folder cannot be served (the message says why).
    """
    try:
        kind = load_meta(model_dir).get("kind", "image")
    except ModelFolderError as exc:
        raise StartupError(f"cannot load model: {exc}") from exc
    return (Predictor if kind == "image" else MultiInputPredictor)(model_dir, **kwargs)
