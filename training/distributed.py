"""Device choice and data-parallel helpers; every helper is a no-op in a single process.

A run becomes data-parallel when ``paddle.distributed.launch`` starts it (``run.py --procs N`` relaunches
itself that way): the launcher's environment gives each process its rank, :func:`init_distributed` joins
them, :func:`epoch_order` deals each rank its share of every epoch, and rank 0's values and buffers become
everyone's (:func:`shared_value`, :func:`sync_buffers`) so that all ranks decide and checkpoint alike.
"""

from __future__ import annotations

import os

import numpy as np
import paddle


def set_device(choice: str) -> str:
    """Put Paddle on ``auto`` (GPU when there is one), ``cpu`` or ``gpu``; return the device used.

    Raises:
        SystemExit: ``gpu`` on a Paddle build without CUDA.
    """
    if choice == "auto":
        choice = "gpu" if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else "cpu"
    if choice == "gpu" and not paddle.is_compiled_with_cuda():
        raise SystemExit("--device gpu: this Paddle build has no CUDA support (use --device cpu or auto)")
    if choice == "gpu":
        # Under paddle.distributed.launch each process owns the GPU the launcher gave it.
        gpu = os.environ.get("FLAGS_selected_gpus", "0").split(",")[0]
        paddle.set_device(f"gpu:{gpu}")
    else:
        paddle.set_device("cpu")
    return choice


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment."""
    return int(os.environ.get("PADDLE_TRAINER_ID", "0")), int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


_PARALLEL_READY = False


def init_distributed() -> tuple[int, int]:
    """Initialise data-parallel training when started by ``paddle.distributed.launch``; return (rank, world)."""
    global _PARALLEL_READY
    rank, size = world()
    if size > 1 and not _PARALLEL_READY:
        paddle.distributed.init_parallel_env()
        _PARALLEL_READY = True
    if size > 1:
        rank, size = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    return rank, size


def shared_value(value: int, size: int) -> int:
    """Rank 0's value of an integer, on every rank."""
    if size <= 1:
        return value
    t = paddle.to_tensor([value], dtype="int64")
    paddle.distributed.broadcast(t, src=0)
    return int(t.numpy()[0])


def barrier(size: int) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if size > 1:
        paddle.distributed.barrier()


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, size: int = 1) -> np.ndarray:
    """The distributed sampler: a permutation from (seed, epoch), dealt round-robin to the ranks.

    Every rank gets the same number of samples (the remainder is dropped), so all ranks run the same
    number of steps, which data-parallel all-reduce needs.
    """
    perm = np.random.default_rng(np.random.SeedSequence((seed, 1000 + epoch))).permutation(n)
    per_rank = n // size
    return perm[rank::size][:per_rank]


def sync_buffers(layer: paddle.nn.Layer, size: int) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank.

    The statistics are per process under DataParallel; rank 0's become everyone's so that all ranks
    evaluate, early-stop and checkpoint identically.
    """
    if size > 1:
        for buf in layer.buffers():
            paddle.distributed.broadcast(buf, src=0)
