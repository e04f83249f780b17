"""Benchmark 4: the limit -- what one card must cost on this machine, and what it costs now, stage by stage.

Measured in one process, per card, as CPU time of the measuring thread (``time.thread_time``: unlike wall
time it hardly depends on what else the machine runs), medians over real simulated cards:

* the **unavoidable** parts: inflating the card PNG's image data (ISA-L, the fastest inflate we have; every
  byte of the four channels must be inflated, whatever is kept) and the network at the batch the service and
  the batch scorer run, plus the network's FLOPs (from ``paddle.flops`` on the architecture named in
  ``meta.json``) against one core's peak;
* the **path as it runs**: PNG header + alpha plane (``decode_card_png``), the fill (``trace_outline`` +
  ``filled_card``), the structural card check (``check_outline``) and the card measures (``measure_outline``)
  every answer carries, both reading the traced outline as ``serving.routing.Router.prepare`` passes it,
  scaling into the batch (``stack_inputs``), the network per card at batch 1, 8 and 16.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.data import base_cards

BATCHES = (1, 4, 8, 16, 32)


def _median_ms(values: list[int], per: int = 1) -> float:
    return statistics.median(values) / 1e6 / per


def card_path(cards: list[bytes], config) -> dict:
    """CPU ms per card of each stage of the card path, medians over ``cards`` (two passes, the second timed)."""
    from serving.routing import stack_inputs  # noqa: PLC0415
    from shared.card_check import check_outline  # noqa: PLC0415
    from shared.cards import decode_card_png, read_png_header  # noqa: PLC0415
    from shared.measures import measure_outline  # noqa: PLC0415
    from shared.png_decode import _idat_stream, _inflate  # noqa: PLC0415
    from shared.preprocess import filled_card, trace_outline  # noqa: PLC0415

    clock = time.thread_time_ns
    stages: dict[str, list[int]] = {"inflate": [], "decode": [], "fill": [], "check": [], "measures": [], "scale": []}
    for timed in (False, True):
        for data in cards:
            header = read_png_header(data)
            t0 = clock()
            _inflate(_idat_stream(data), header.height * (1 + 4 * header.width))
            t1 = clock()
            ink = decode_card_png(data)
            t2 = clock()
            traced = trace_outline(ink)  # in the order of Router.prepare: the model's fill, then the card's facts
            filled = filled_card(ink, config, traced)
            t3 = clock()
            check_outline(ink, traced)
            t4 = clock()
            measure_outline(ink, traced)
            t5 = clock()
            stack_inputs([{"image": filled}])
            t6 = clock()
            if timed:
                for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                    stages[name].append(value)
    return {name: _median_ms(values) for name, values in stages.items()}


def network(model: str, batches=BATCHES, calls: int = 96) -> dict:
    """CPU ms per card of the exported network at each batch size (one oneDNN thread, the service's setting)."""
    import numpy as np  # noqa: PLC0415

    from serving.predictor import Predictor  # noqa: PLC0415

    predictor = Predictor(model, device="cpu", cpu_threads=1, pool_size=1, batch_sizes=batches)
    rng = np.random.default_rng(0)
    out = {}
    for size in batches:
        x = (rng.random((size, *predictor.input_shape)) > 0.7).astype(np.float32)
        times = []
        for _ in range(max(4, calls // size)):
            t0 = time.thread_time_ns()
            predictor.predict(x)
            times.append(time.thread_time_ns() - t0)
        out[str(size)] = _median_ms(times, size)
    return out


def flops(model: str) -> dict:
    """Multiply-adds of one card through the network's convolutions and linear layers (forward hooks on the
    architecture named in ``meta.json``; pooling, BatchNorm and ReLU are a few per cent more), or why unknown."""
    try:
        import numpy as np  # noqa: PLC0415
        import paddle  # noqa: PLC0415
        from paddle import nn  # noqa: PLC0415

        from shared.meta import load_meta  # noqa: PLC0415
        from training.models import build_model  # noqa: PLC0415

        meta = load_meta(Path(model))
        net = build_model(meta["architecture"])
        net.eval()
        counts: list[int] = []

        def count(layer, inputs, output) -> None:
            if isinstance(layer, nn.Conv2D):
                kh, kw = layer.weight.shape[2:]
                counts.append(int(np.prod(output.shape[1:])) * layer.weight.shape[1] * kh * kw)
            elif isinstance(layer, nn.Linear):
                counts.append(int(layer.weight.shape[0] * layer.weight.shape[1]))

        hooks = [m.register_forward_post_hook(count) for m in net.sublayers() if isinstance(m, (nn.Conv2D, nn.Linear))]
        with paddle.no_grad():
            net(paddle.zeros([1, *meta["input"]["shape"][1:]], "float32"))
        for h in hooks:
            h.remove()
        return {"architecture": meta["architecture"], "macs": int(sum(counts))}
    except Exception as exc:  # noqa: BLE001 - the FLOP count is context, never a reason to fail the run
        return {"error": f"{type(exc).__name__}: {exc}"}


def cpu_mhz() -> float | None:
    """The CPU clock /proc/cpuinfo reports (for the FLOP peak), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def bench_limit(model: str, per_class: int = 100, cards: int = 300, log=print) -> dict:
    """The stage costs, the network per batch size and its FLOPs (see the module docstring)."""
    from shared.meta import load_meta  # noqa: PLC0415
    from shared.preprocess import PreprocessConfig  # noqa: PLC0415

    import cv2  # noqa: PLC0415

    cv2.setNumThreads(0)
    paths = base_cards(per_class)
    paths = paths[:: max(1, len(paths) // cards)][:cards]
    data = [p.read_bytes() for p in paths]
    config = PreprocessConfig.from_dict(load_meta(Path(model))["preprocess"])
    result = {"cards": len(data), "stages_ms": card_path(data, config), "network_ms": network(model),
              "flops": flops(model), "cpu_mhz": cpu_mhz()}
    log(f"  card path {result['stages_ms']}, network {result['network_ms']}, {result['flops']}")
    return result
