"""The one registry of networks: name -> builder and the input kind it reads (image, series or dual).

Everything that needs a network by name asks here: the CLI (``--model``, ``--input``), the training loop,
late fusion, the VisualDL graph, the benchmarks. The networks themselves live by input kind in
:mod:`training.image_models`, :mod:`training.series_models` and :mod:`training.dual_models`; a new one is
written there and registered once in :data:`NETWORKS`.

Every network returns **logits** ``[N, num_classes]``: the twelve conditions, and a 13th output "other" when
the run trains it (``--other-class``, :mod:`training.other_class`; ``build_model(name, num_classes=13)``). The
export writes them as they are (``meta.json`` ``output: "logits"``, :mod:`training.export`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from paddle import nn

from training.dual_models import DualNet, LateFusionDual, dualnet_aux, dualnet_ens, dualnet_sum
from training.image_models import CardNet, cardnet_wide, cnn01, cnn02, cnn03
from training.series_models import SeriesNet, seriesnet_small

@dataclass(frozen=True)
class Network:
    """A registered network: how to build it and what it reads.

    ``late_fusion``: trained as two separately fitted networks, then mixed (:mod:`training.late_fusion`),
    instead of end to end by :func:`training.train.fit`.
    """

    build: Callable[..., nn.Layer]
    kind: str  # what it reads: one of shared.meta.MODEL_KINDS (image, series, dual)
    late_fusion: bool = False


NETWORKS: dict[str, Network] = {
    "cnn01": Network(cnn01, "image"), "cnn02": Network(cnn02, "image"), "cnn03": Network(cnn03, "image"),
    "cardnet": Network(CardNet, "image"), "cardnet_wide": Network(cardnet_wide, "image"),
    "seriesnet": Network(SeriesNet, "series"), "seriesnet_small": Network(seriesnet_small, "series"),
    "dualnet": Network(DualNet, "dual"), "dualnet_sum": Network(dualnet_sum, "dual"),
    "dualnet_aux": Network(dualnet_aux, "dual"), "dualnet_ens": Network(dualnet_ens, "dual"),
    "dualnet_late": Network(LateFusionDual, "dual", late_fusion=True),
}
DEFAULT_FOR_INPUT = {"image": "cardnet", "series": "seriesnet", "dual": "dualnet_late"}


def network(name: str) -> Network:
    """The registry entry of ``name`` (any case; ``default`` is the image default, ``cardnet``).

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    key = name.lower()
    if key == "default":
        key = DEFAULT_FOR_INPUT["image"]
    if key not in NETWORKS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(NETWORKS)} (or 'default')")
    return NETWORKS[key]


def build_model(name: str, **kwargs) -> nn.Layer:
    """A fresh network by name (``kwargs`` go to its constructor, e.g. ``conv=nn.Conv2D``, ``num_classes=13``).

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    return network(name).build(**kwargs)


def network_kind(name: str) -> str:
    """``image``, ``series`` or ``dual``: what the network ``name`` reads.

    Raises:
        ValueError: an unknown name.
    """
    return network(name).kind


def split_stem(net: nn.Layer):
    """(stem, body) of a network: ``net(x) == body(stem(x))``; the stem has no parameters (or is None).

    Training computes ``stem(x)`` once per card and trains ``body`` on it (:mod:`training.inputs`).
    """
    stem = getattr(net, "stem", None)
    if stem is None:
        return None, net
    return stem, net.body


def count_parameters(layer: nn.Layer) -> int:
    """Number of trainable scalars in ``layer``."""
    return int(sum(p.size for p in layer.parameters() if not p.stop_gradient))
