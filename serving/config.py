"""Service configuration, read from the environment (``CARDSENSE_*``) with safe defaults.

The same settings drive gunicorn (``serving/gunicorn.conf.py``: bind, workers, threads, timeout) and
the Flask app (model folder, device, limits, token). Every variable is listed in ``docs/SERVING.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "default"
# Series/dual models loaded beside the image model when CARDSENSE_EXTRA_MODEL_DIRS is unset (if present).
DEFAULT_EXTRA_MODEL_DIRS = (REPO_ROOT / "models" / "series", REPO_ROOT / "models" / "dual")
DEVICES = ("auto", "cpu", "gpu")
# CARDSENSE_EXPLAIN: who may ask /classify for ?explain=1 (about a hundred model runs per card).
EXPLAIN_MODES = ("on", "off", "token")


class ConfigError(ValueError):
    """A ``CARDSENSE_*`` setting has a value the service cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} must be positive")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def default_workers(cores: int | None = None) -> int:
    """One worker per core, at least one.

    A worker cannot use more than about one core: Paddle's ``predictor.run()`` holds the GIL, so its threads'
    Python, OpenCV calls and the network take turns. Its threads keep several requests in flight, whose
    cards the worker's batcher runs together (docs/SERVING.md, "Batching").
    """
    cores = cores or os.cpu_count() or 1
    return max(1, cores)


@dataclass(frozen=True)
class ServingConfig:
    """Resolved settings of one service process. See :func:`from_env` for the variable names."""

    model_dir: Path = DEFAULT_MODEL_DIR
    extra_model_dirs: tuple[Path, ...] = ()  # series / dual models served beside model_dir (serving.model_set)
    device: str = "auto"
    gpu_id: int = 0
    gpu_mem_mb: int = 256
    tensorrt: bool = False
    trt_cache_dir: Path | None = None
    cpu_threads: int = 1
    threads: int = 8  # requests in flight per worker: the most cards its batcher can group (docs/SERVING.md)
    # Every size up to the largest batch is warmed up, so the dynamic batcher never pads (serving.batcher).
    batch_sizes: tuple[int, ...] = tuple(range(1, 17))
    max_wait_ms: float = 5.0  # a call waits this long at most for cards still being prepared (serving/batcher.py)
    max_upload_mb: float = 8.0
    max_batch_upload_mb: float = 64.0
    max_batch_cards: int = 1000
    api_token: str | None = None
    explain: str = "on"  # on: anyone who may classify; off: nobody; token: requests carrying api_token only

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"CARDSENSE_DEVICE={self.device!r}; expected one of {', '.join(DEVICES)}")
        if self.explain not in EXPLAIN_MODES:
            raise ConfigError(f"CARDSENSE_EXPLAIN={self.explain!r}; expected one of {', '.join(EXPLAIN_MODES)}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"CARDSENSE_BATCH_SIZES must be positive integers, got {self.batch_sizes}")
        if 1 not in self.batch_sizes:
            raise ConfigError("CARDSENSE_BATCH_SIZES must include 1 (single-card requests)")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"CARDSENSE_MAX_WAIT_MS={self.max_wait_ms} must be from 0 to 1000")

    @property
    def model_dirs(self) -> tuple[Path, ...]:
        """All model folders the service loads: ``model_dir`` (the image model), then the extra ones."""
        return (self.model_dir, *self.extra_model_dirs)

    @property
    def max_batch(self) -> int:
        """The largest batch the predictor runs; bigger requests are split into chunks of this size."""
        return max(self.batch_sizes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ServingConfig":
        """Build the configuration from ``CARDSENSE_*`` environment variables.

        Raises:
            ConfigError: a variable holds a value that cannot be used (the message names it).
        """
        env = os.environ if env is None else env
        sizes = batch_sizes(env)
        trt_cache = env.get("CARDSENSE_TRT_CACHE_DIR", "").strip()
        return cls(
            model_dir=Path(env.get("CARDSENSE_MODEL_DIR", "").strip() or DEFAULT_MODEL_DIR),
            extra_model_dirs=extra_model_dirs(env),
            device=env.get("CARDSENSE_DEVICE", "auto").strip().lower() or "auto",
            gpu_id=_int(env, "CARDSENSE_GPU_ID", 0, minimum=0),
            gpu_mem_mb=_int(env, "CARDSENSE_GPU_MEM_MB", 256),
            tensorrt=_bool(env, "CARDSENSE_TENSORRT", False),
            trt_cache_dir=Path(trt_cache) if trt_cache else None,
            cpu_threads=_int(env, "CARDSENSE_CPU_THREADS", 1),
            threads=_int(env, "CARDSENSE_THREADS", cls.threads),
            batch_sizes=sizes,
            max_wait_ms=_wait_ms(env),
            max_upload_mb=_float(env, "CARDSENSE_MAX_UPLOAD_MB", 8.0),
            max_batch_upload_mb=_float(env, "CARDSENSE_MAX_BATCH_UPLOAD_MB", 64.0),
            max_batch_cards=_int(env, "CARDSENSE_MAX_BATCH_CARDS", 1000),
            api_token=env.get("CARDSENSE_API_TOKEN", "").strip() or None,
            explain=env.get("CARDSENSE_EXPLAIN", "").strip().lower() or "on",
        )


def batch_sizes(env: Mapping[str, str]) -> tuple[int, ...]:
    """The batch shapes the predictors warm up and use, from ``CARDSENSE_MAX_BATCH`` or ``CARDSENSE_BATCH_SIZES``.

    ``CARDSENSE_MAX_BATCH=N`` (default 16): the dynamic batcher runs up to N cards per call and every size
    1..N is warmed up, so no call is padded. ``CARDSENSE_BATCH_SIZES=1,8,32``: only those shapes, each call
    padded up to the next (fewer warm-up runs, some wasted work). Set one of the two.

    Raises:
        ConfigError: both set, or a value that is not usable.
    """
    sizes_raw = env.get("CARDSENSE_BATCH_SIZES", "").strip()
    if sizes_raw and env.get("CARDSENSE_MAX_BATCH", "").strip():
        raise ConfigError("set CARDSENSE_MAX_BATCH or CARDSENSE_BATCH_SIZES, not both")
    if sizes_raw:
        try:
            return tuple(sorted({int(s) for s in sizes_raw.split(",") if s.strip()}))
        except ValueError:
            raise ConfigError(f"CARDSENSE_BATCH_SIZES={sizes_raw!r} must be a comma-separated list of integers") from None
    largest = _int(env, "CARDSENSE_MAX_BATCH", max(ServingConfig.batch_sizes))
    if largest > 256:
        raise ConfigError(f"CARDSENSE_MAX_BATCH={largest} must be at most 256 (every size up to it is warmed up)")
    return tuple(range(1, largest + 1))


def _wait_ms(env: Mapping[str, str]) -> float:
    raw = env.get("CARDSENSE_MAX_WAIT_MS", "").strip()
    if not raw:
        return ServingConfig.max_wait_ms
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"CARDSENSE_MAX_WAIT_MS={raw!r} is not a number") from None


def extra_model_dirs(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The series/dual model folders to serve beside ``CARDSENSE_MODEL_DIR``.

    ``CARDSENSE_EXTRA_MODEL_DIRS``: comma-separated folders; ``none`` for none. Unset: the shipped
    ``models/series`` and ``models/dual`` (when they exist) if ``CARDSENSE_MODEL_DIR`` is unset too
    (the shipped set); a service pointed at its own model serves only that unless extras are named.
    """
    env = os.environ if env is None else env
    raw = env.get("CARDSENSE_EXTRA_MODEL_DIRS")
    if raw is None:
        if env.get("CARDSENSE_MODEL_DIR", "").strip():
            return ()
        return tuple(d for d in DEFAULT_EXTRA_MODEL_DIRS if (d / "meta.json").is_file())
    if raw.strip().lower() in ("", "none"):
        return ()
    return tuple(Path(x.strip()) for x in raw.split(",") if x.strip())
