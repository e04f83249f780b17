"""VisualDL helpers: every component the original notebook used, working on Paddle 3.3 / VisualDL 2.5.3.

All helpers accept ``writer=None`` (rank > 0 in distributed runs, or ``--no-vdl``) and do nothing then.

Tags are fixed strings (``train/loss``, ``holdout/acc``, ``pr/A01`` …) so that runs written under one
``--logdir`` overlay on the same charts: that is how ``compare-models`` and ``compare-lr`` work.

Two pitfalls of this stack, handled here and only here:

* ``add_pr_curve`` / ``add_roc_curve`` use ``np.float``, removed in numpy 2 (fixed upstream in VisualDL
  PR #1291, unreleased): :func:`numpy2_shim` defines it before those calls.
* ``add_graph`` fails on Paddle 3.3 with the PIR API on; it works with ``FLAGS_enable_pir_api=0``. That
  flag must be set before Paddle starts, and the export must keep writing the PIR ``.json`` that serving
  loads, so :func:`log_graph` runs it in a child process (``python -m training.vdl graph …``).

And one rule of VisualDL's board: it reads **one** ``vdlrecords.*.log`` per run folder, the newest by name
(``LogReader.logs``), and one ``vdlgraph.*.log``, the newest likewise (``GraphReader.graphs``). A second
``LogWriter`` on a run folder starts a newer, nearly empty records file that hides the run's scalars, images,
histograms, PR curves and hyper-parameters. So the graph child writes only the graph file
(:func:`write_graph_file`, no ``LogWriter``), and :func:`open_writer` can continue a run's records file
(``append=True``, for a resumed run) instead of starting a second one.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from shared.labels import CODES
from training.classes import OTHER
from training.metrics import other_probability

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


def numpy2_shim() -> None:
    """Restore ``np.float`` (an alias of ``float``) for VisualDL 2.5.3's PR/ROC curve code."""
    if "float" not in np.__dict__:
        np.float = float  # type: ignore[attr-defined]


def records_files(run_dir: str | os.PathLike) -> list[Path]:
    """The run folder's VisualDL records files, newest last; the board shows only the last one."""
    return sorted(p for p in Path(run_dir).glob("vdlrecords.*") if p.is_file())


def open_writer(logdir: str | os.PathLike, run: str, flush_secs: int = 10, append: bool = False):
    """A ``LogWriter`` for ``logdir/run`` (one sub-folder per run, so runs overlay).

    Args:
        logdir, run: the board's folder and the run's sub-folder.
        flush_secs: how often the records reach the disk (the board shows what is on disk).
        append: continue the run folder's newest records file (a resumed run) rather than start a newer one,
            which the board would show alone.
    """
    from visualdl import LogWriter

    path = Path(logdir) / run
    path.mkdir(parents=True, exist_ok=True)
    existing = records_files(path) if append else []
    # LogWriter appends to an existing file named by file_name (VisualDL's local file system opens it "ab").
    return LogWriter(logdir=str(path), flush_secs=flush_secs, file_name=existing[-1].name if existing else "")


def log_scalars(writer, step: int, values: dict[str, float]) -> None:
    """One scalar per tag, e.g. ``{"train/loss": 0.3, "holdout/acc": 0.97, "train/lr": 1e-3}``."""
    if writer is None:
        return
    for tag, value in values.items():
        writer.add_scalar(tag=tag, value=float(value), step=int(step))


def log_histograms(writer, layer, step: int) -> None:
    """A histogram of every parameter of ``layer`` (tag ``params/<structured name>``)."""
    if writer is None:
        return
    for name, param in layer.named_parameters():
        writer.add_histogram(tag=f"params/{name}", values=param.numpy().ravel(), step=int(step), buckets=30)


def log_pr_roc(writer, labels: np.ndarray, probs: np.ndarray, step: int, prefix: str = "holdout",
               num_thresholds: int = 50, outputs: np.ndarray | None = None) -> None:
    """One-vs-rest PR and ROC curves for each of the twelve classes (tags ``pr/A01`` …, ``roc/A01`` …).

    Args:
        probs: the twelve conditions' probabilities ``[n, 12]``.
        outputs: the raw outputs; with a 13th "other" output its ``p(other)`` gets curves too (``pr/other``).
    """
    if writer is None or len(labels) == 0:
        return
    numpy2_shim()
    labels = np.asarray(labels)
    curves = [(code, (labels == i).astype(np.int32), probs[:, i]) for i, code in enumerate(CODES)]
    p_other = other_probability(outputs) if outputs is not None else None
    if p_other is not None:
        curves.append(("other", (labels == OTHER).astype(np.int32), p_other))
    for code, truth, scores in curves:
        writer.add_pr_curve(tag=f"{prefix}_pr/{code}", labels=truth, predictions=np.asarray(scores, np.float64),
                            step=int(step), num_thresholds=num_thresholds)
        writer.add_roc_curve(tag=f"{prefix}_roc/{code}", labels=truth, predictions=np.asarray(scores, np.float64),
                             step=int(step), num_thresholds=num_thresholds)


def confusion_image(cm: np.ndarray, title: str = "") -> np.ndarray:
    """Render a confusion matrix (rows = truth, columns = prediction) as an RGB ``uint8`` image."""
    n = cm.shape[0]
    cell, left, top = 44, 52, 40 if title else 26
    img = np.full((top + n * cell + 6, left + n * cell + 6, 3), 255, np.uint8)
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    frac = cm / rows
    font = cv2.FONT_HERSHEY_SIMPLEX
    if title:
        cv2.putText(img, title, (left, 16), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for j in range(n):
        cv2.putText(img, CODES[j][1:], (left + j * cell + 12, top - 6), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(n):
        cv2.putText(img, CODES[i], (6, top + i * cell + 27), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(n):
            v = frac[i, j]
            colour = (int(255 - 200 * v), int(255 - 120 * v), 255) if i != j else (int(255 - 200 * v), 255, int(255 - 200 * v))
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), colour[::-1], -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), (200, 200, 200), 1)
            if cm[i, j]:
                cv2.putText(img, str(int(cm[i, j])), (x0 + 4, y0 + 27), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def log_confusion(writer, cm: np.ndarray, step: int, tag: str = "holdout/confusion_matrix") -> None:
    """The confusion matrix as an image."""
    if writer is None:
        return
    writer.add_image(tag=tag, img=confusion_image(cm), step=int(step), dataformats="HWC")


def log_card_images(writer, examples: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> None:
    """The same cards before and after preprocessing, per class: ``cards_raw/A01`` (outline) and ``cards_input/A01``.

    Args:
        examples: code -> list of (outline mask ``uint8 [H, W]``, model input ``float32 [1, H, W]``).
    """
    if writer is None:
        return
    for code, pairs in examples.items():
        for k, (ink, model_input) in enumerate(pairs):
            writer.add_image(tag=f"cards_raw/{code}", img=np.asarray(ink, np.uint8), step=k, dataformats="HW")
            grey = np.clip(np.rint(model_input[0] * 255.0), 0, 255).astype(np.uint8)
            writer.add_image(tag=f"cards_input/{code}", img=grey, step=k, dataformats="HW")


def log_hparams(writer, hparams: dict, metric_tags: list[str]) -> None:
    """Recipe -> final metrics (the metrics must also be logged as scalars under ``metric_tags``)."""
    if writer is None:
        return
    # VisualDL's protobuf rejects booleans in its int field: record them as text.
    clean = {k: (str(v).lower() if isinstance(v, bool) else v if isinstance(v, (int, float, str)) else str(v))
             for k, v in hparams.items() if v is not None}
    writer.add_hparams(hparams_dict=clean, metrics_list=list(metric_tags))


def log_graph(logdir: str | os.PathLike, run: str, model: str, timeout: float = 300, classes: int = len(CODES)) -> bool:
    """Write the model graph for VisualDL's Graph tab, in a child process with ``FLAGS_enable_pir_api=0``.

    ``classes``: the network's outputs (13 with the "other" class). The graph is the exported network: logits.

    Returns:
        True when the graph was written; False (with a warning) when the child failed.
    """
    env = dict(os.environ, FLAGS_enable_pir_api="0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # The launcher's rank variables would make the child think it is part of the job.
    for key in list(env):
        if key.startswith(("PADDLE_", "FLAGS_selected", "POD_", "PADDLE_TRAINER")):
            env.pop(key)
    # The child runs in the repository (to import training): a relative --logdir must not move with it.
    cmd = [sys.executable, "-m", "training.vdl", "graph", "--model", model, "--logdir", str(Path(logdir).resolve()),
           "--run", run, "--classes", str(classes)]
    try:
        proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("model graph for VisualDL timed out")
        return False
    if proc.returncode != 0:
        log.warning("model graph for VisualDL failed: %s", proc.stderr.strip().splitlines()[-1:] or proc.returncode)
        return False
    return True


def _graph_main(args: argparse.Namespace) -> int:
    if os.environ.get("FLAGS_enable_pir_api") != "0":
        print("run with FLAGS_enable_pir_api=0 (VisualDL's add_graph needs the old program format)", file=sys.stderr)
        return 2
    from paddle.static import InputSpec

    from training.export import ImageLogits
    from training.image_models import INPUT_SHAPE
    from training.models import build_model

    net = ImageLogits(build_model(args.model, num_classes=args.classes))
    net.eval()
    write_graph_file(Path(args.logdir) / args.run, net, [InputSpec([1, *INPUT_SHAPE], "float32")])
    return 0


def write_graph_file(run_dir: Path, net, input_spec: list) -> Path:
    """Write ``net``'s graph as the run folder's ``vdlgraph.<time>.log``, beside its records file.

    What ``LogWriter.add_graph`` writes, without the ``LogWriter``: opening one would add a newer records file
    to the run folder, and the board would show that (empty) file instead of the run's. Written to a hidden
    temporary name first (no ``vdlgraph`` in it, so a live board never reads half a graph).

    Returns:
        The graph file.
    """
    from visualdl.component.graph import translate_graph

    graph = translate_graph(net, input_spec, verbose=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / f"vdlgraph.{int(time.time()):010d}.log"
    fd, tmp = tempfile.mkstemp(prefix=".graph-", suffix=".tmp", dir=run_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(graph)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the board may run as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.vdl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("graph", help="write a model's graph into LOGDIR/RUN (needs FLAGS_enable_pir_api=0)")
    g.add_argument("--model", required=True)
    g.add_argument("--logdir", required=True)
    g.add_argument("--run", required=True)
    g.add_argument("--classes", type=int, default=len(CODES), help="outputs of the network (13 with 'other')")
    args = parser.parse_args(argv)
    return _graph_main(args)


if __name__ == "__main__":
    sys.exit(main())
