"""Series networks: the raw position/load samples of a card's CSV (``--input series``).

The input comes from the shared series preprocessing (:func:`shared.series.preprocess_series`):
``float32 [N, 5, 256]``. Like every network here they return **logits**; the export adds the softmax
(:mod:`training.export`). They are built by name through the one registry, :mod:`training.models`.

Why this shape (measured on the 709 field cards, 70/30, and the simulated set; docs/TRAINING.md):
``seriesnet`` is four conv1d-BN-ReLU stages 5->32->64->96->128 (stride 2 after the first), then a
coarse 8-bin average over the stroke *plus* a global max. The series starts at the bottom of the
stroke and runs in time order, so *where* along the stroke a load change happens (early upstroke =
A07, late downstroke = A02/A03, top = A05) is the diagnosis; a translation-blind global average alone
throws that away, the global max keeps sharp spikes (tagging) wherever they fall.
"""

from __future__ import annotations

import paddle
from paddle import nn

from shared.series import SERIES_CHANNELS
from training.image_models import NUM_CLASSES


def _conv1d_bn(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1D(cin, cout, k, stride=stride, padding=k // 2, bias_attr=False),
        nn.BatchNorm1D(cout),
        nn.ReLU(),
    )


class SeriesTrunk(nn.Layer):
    """conv1d stages + (8-bin average ++ global max) -> ``[N, out_features]``."""

    def __init__(self, widths=(32, 64, 96, 128), kernels=(7, 5, 5, 3), strides=(1, 2, 2, 2), bins: int = 8,
                 out_features: int = 128, dropout: float = 0.2):
        super().__init__()
        layers, cin = [], SERIES_CHANNELS
        for w, k, s in zip(widths, kernels, strides):
            layers.append(_conv1d_bn(cin, w, k, s))
            cin = w
        self.convs = nn.Sequential(*layers)
        self.bins = nn.AdaptiveAvgPool1D(bins)
        self.peak = nn.AdaptiveMaxPool1D(1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin * (bins + 1), out_features), nn.ReLU())
        self.out_features = out_features

    def forward(self, x):
        h = self.convs(x)
        feats = paddle.concat([paddle.flatten(self.bins(h), 1), paddle.flatten(self.peak(h), 1)], axis=1)
        return self.head(feats)


class SeriesNet(nn.Layer):
    """Series-only classifier: ``float32 [N, 5, L]`` -> logits ``[N, 12]``."""

    def __init__(self, num_classes: int = NUM_CLASSES, **trunk):
        super().__init__()
        self.trunk = SeriesTrunk(**trunk)
        self.fc = nn.Linear(self.trunk.out_features, num_classes)

    def forward(self, x):
        return self.fc(self.trunk(x))


def seriesnet_small(**kwargs) -> nn.Layer:
    """A lighter ``seriesnet`` (16/32/64/64), measured as an alternative."""
    return SeriesNet(widths=(16, 32, 64, 64), **kwargs)
