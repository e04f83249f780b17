"""Dual networks: a card's PNG and its CSV series together (``--input dual``).

Inputs: the image ``float32 [N, 1, 190, 400]`` (:mod:`shared.preprocess`) and the series
``float32 [N, 5, 256]`` (:mod:`shared.series`). They return **logits**; the export adds the softmax
(:mod:`training.export`). Built by name through the one registry, :mod:`training.models`.

* ``dualnet``: the ``cardnet`` image trunk (same stem, convs and 3x6 grid) and the ``seriesnet``
  trunk, each projected to 128 features, concatenated, one linear layer. The two trunks see the
  same card in different forms; the classifier learns which to trust per condition. Its variants
  ``dualnet_sum``/``dualnet_aux``/``dualnet_ens`` meet the trunks differently (:class:`DualBody`).
* ``dualnet_late`` (the default dual model): a whole image network and a whole series network, trained
  apart and mixed at a weight chosen on held-out cards (:class:`LateFusionDual`, :mod:`training.late_fusion`).
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from training.image_models import NUM_CLASSES, CardNet, conv_bn
from training.series_models import SeriesNet, SeriesTrunk


class ImageTrunk(nn.Layer):
    """``cardnet``'s body without its classifier: pooled card ``[N, 1, 95, 200]`` -> ``[N, out_features]``."""

    def __init__(self, widths=(16, 32, 48, 64), grid=(3, 6), out_features: int = 128, dropout: float = 0.2):
        super().__init__()
        layers, cin = [], 1
        for w in widths:
            layers.append(conv_bn(cin, w, 2))
            cin = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2D(grid), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin * grid[0] * grid[1], out_features), nn.ReLU())
        self.out_features = out_features

    def forward(self, x):
        return self.body(x)


class DualBody(nn.Layer):
    """Takes ``[pooled image, series]`` (one list argument, so the training loop's ``body(x)`` works).

    ``fusion`` says how the two trunks meet:

    * ``concat``: features concatenated, one classifier.
    * ``sum``: one classifier per trunk, logits added (trained jointly through the sum).
    * ``aux``: ``concat`` plus one auxiliary classifier per trunk, each trained on the labels too
      (the summed losses keep both trunks predictive alone; the auxiliary heads are training-only).
    * ``ensemble``: one classifier per trunk, each trained on its own loss (so neither trunk can lean on
      the other), answering with the sum of their log-probabilities — a product of experts.

    Modality dropout (training only, ``concat``/``sum``/``aux``): for a random ``modality_dropout`` share
    of the cards the image features are zeroed, for another share the series features (never both).
    Without it the image trunk, which fits the training cards fastest, carries the decision and the dual
    net generalised worse than the series net alone on the field cards.

    In training mode the multi-head fusions return ``(prediction, [heads…])``
    (:func:`training.train.training_loss`); in eval mode every fusion returns the prediction logits.
    """

    FUSIONS = ("concat", "sum", "aux", "ensemble")

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2, modality_dropout: float = 0.2,
                 fusion: str = "concat"):
        super().__init__()
        if fusion not in self.FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(self.FUSIONS)}")
        self.image = ImageTrunk()
        self.series = SeriesTrunk()
        self.modality_dropout = modality_dropout if fusion != "ensemble" else 0.0
        self.fusion = fusion
        if fusion in ("concat", "aux"):
            self.fc = nn.Sequential(nn.Dropout(dropout),
                                    nn.Linear(self.image.out_features + self.series.out_features, num_classes))
        if fusion != "concat":  # per-trunk classifiers (the fused output of sum/ensemble, aux heads of aux)
            self.fc_image = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.image.out_features, num_classes))
            self.fc_series = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.series.out_features, num_classes))

    def _drop_modality(self, fi, fs):
        r = paddle.rand([fi.shape[0], 1])
        p = self.modality_dropout
        return fi * (r >= p).astype(fi.dtype), fs * ((r < p) | (r >= 2 * p)).astype(fs.dtype)

    def forward(self, x):
        image, series = x
        fi, fs = self.image(image), self.series(series)
        if self.fusion == "ensemble":
            li, ls = self.fc_image(fi), self.fc_series(fs)
            prediction = F.log_softmax(li, axis=-1) + F.log_softmax(ls, axis=-1)
            return (prediction, [li, ls]) if self.training else prediction
        di, ds = self._drop_modality(fi, fs) if self.training and self.modality_dropout > 0 else (fi, fs)
        if self.fusion == "sum":
            return self.fc_image(di) + self.fc_series(ds)
        fused = self.fc(paddle.concat([di, ds], axis=1))
        if self.fusion == "aux" and self.training:
            return fused, [fused, self.fc_image(fi), self.fc_series(fs)]
        return fused


class DualNet(nn.Layer):
    """PNG + series classifier: ``(image [N, 1, 190, 400], series [N, 5, L])`` -> logits ``[N, 12]``.

    The parameter-free 2x2 average-pool stem is the image network's (``cardnet``), so training
    computes it once per card (``training.models.split_stem``) and trains :attr:`body` on pooled arrays.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, **body):
        super().__init__()
        self.stem = nn.AvgPool2D(kernel_size=2, stride=2)
        self.body = DualBody(num_classes, **body)

    def forward(self, image, series):
        return self.body([self.stem(image), series])


def dualnet_sum(**kwargs) -> nn.Layer:
    """``dualnet`` with one classifier per trunk and summed logits (modality dropout 0.3), measured as an alternative."""
    return DualNet(fusion="sum", modality_dropout=0.3, **kwargs)


def dualnet_aux(**kwargs) -> nn.Layer:
    """``dualnet`` plus a training-only auxiliary classifier per trunk (summed losses), measured as an alternative."""
    return DualNet(fusion="aux", **kwargs)


def dualnet_ens(**kwargs) -> nn.Layer:
    """Two trunks each trained on its own loss, answering with the product of their probabilities."""
    return DualNet(fusion="ensemble", **kwargs)


class LateFusionDual(nn.Layer):
    """PNG + series as a weighted mixture of a whole image network and a whole series network.

    ``p = w * softmax(image_net(image)) + (1 - w) * softmax(series_net(series))``, returned as ``log p``
    (log-probabilities act as logits: a softmax of them gives ``p`` back exactly; with a 13th output "other"
    the mixture is over all 13). The two networks are trained separately, each
    with its own early stopping (:mod:`training.late_fusion`), and ``w`` (the ``image_weight`` buffer,
    saved with the parameters) is then chosen on the holdout. ``w = 0`` is the series network alone,
    so the image counts only as far as it helps on held-out cards — measured on the field cards, where
    the PNG is drawn from the same samples as the CSV, the joint ``dualnet`` fell below the series
    network alone (docs/TRAINING.md).
    """

    def __init__(self, image_net: nn.Layer | None = None, series_net: nn.Layer | None = None,
                 image_weight: float = 0.0, num_classes: int = NUM_CLASSES):
        """Mix ``image_net`` (default a fresh ``cardnet``) and ``series_net`` (default a fresh ``seriesnet``),
        each with ``num_classes`` outputs when built here."""
        super().__init__()
        self.image_net = image_net if image_net is not None else CardNet(num_classes=num_classes)
        self.series_net = series_net if series_net is not None else SeriesNet(num_classes=num_classes)
        self.register_buffer("image_weight", paddle.to_tensor([image_weight], dtype="float32"))

    def set_image_weight(self, w: float) -> None:
        """Set the mixture weight of the image network (0 … 1)."""
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"image weight {w} is outside 0 … 1")
        self.image_weight.set_value(paddle.to_tensor([w], dtype="float32"))

    def forward(self, image, series):
        w = self.image_weight
        p = w * F.softmax(self.image_net(image), axis=-1) + (1.0 - w) * F.softmax(self.series_net(series), axis=-1)
        return paddle.log(paddle.clip(p, min=1e-12))
