"""Image networks: the notebook's three CNNs (faithful layer shapes) and CardSense's default ``cardnet``.

Every network takes ``float32 [N, 1, 190, 400]`` and returns **logits** ``[N, 12]``; training uses
``cross_entropy`` on logits (numerically the same as the notebook's softmax + cross-entropy) and the
export adds the softmax (:mod:`training.export`) so the served model returns probabilities. They are
built by name through the one registry of networks, :mod:`training.models`.

The notebook (Paddle 1.8 fluid) used ``Conv2D(cin, cout, 3, stride=2, padding=1, act=...)`` and
``Pool2D(pool_size=2, pool_stride=2, pool_padding=1)``; with a 190 x 400 input that gives
95x200 -> 48x101 -> 24x51 -> 13x26 -> 7x13, hence the ``Linear(64*7*13, 12)`` head.
Fluid's mean pooling excluded the padding from the average, which is ``exclusive=True`` here.
"""

from __future__ import annotations

import paddle
from paddle import nn
from paddle.nn import functional as F

from shared.labels import CODES

NUM_CLASSES = len(CODES)
INPUT_SHAPE = (1, 190, 400)


class RowBiasConv2D(nn.Conv2D):
    """``nn.Conv2D`` whose bias is added as one value per (sample, channel) row while training.

    Same parameters, same result: only how the bias is added differs. Paddle's CPU kernels add a
    ``[C, 1, 1]`` bias to an ``[N, C, H, W]`` map (and reduce its gradient) through a slow broadcasting
    path; on the notebook networks' first, full-resolution layer that add and its gradient cost more
    than the convolution itself (cnn01, batch 64: 38 ms per card per step with the broadcast, 17 ms
    without any bias). Viewed as ``[N*C, H*W]`` plus an ``[N*C, 1]`` column, the same add runs about
    4x faster. Evaluation and export use the stock ``nn.Conv2D`` path, so the exported program is
    the standard one.
    """

    def forward(self, x):
        if not self.training or self.bias is None or self._data_format != "NCHW" or self._padding_mode != "zeros":
            return super().forward(x)
        y = F.conv._conv_nd(
            x, self.weight, bias=None, stride=self._stride, padding=self._updated_padding,
            padding_algorithm=self._padding_algorithm, dilation=self._dilation, groups=self._groups,
            data_format=self._data_format, channel_dim=self._channel_dim, op_type=self._op_type,
            use_cudnn=self._use_cudnn,
        )
        n, c, h, w = y.shape
        rows = paddle.tile(self.bias, [n]).reshape([n * c, 1])
        return (y.reshape([n * c, h * w]) + rows).reshape([n, c, h, w])


class NotebookCNN(nn.Layer):
    """The notebook's 3-conv network; ``CNN01``/``CNN02``/``CNN03`` differ in widths, activations, pooling."""

    def __init__(self, widths=(32, 32, 64), acts=("relu", "relu", "relu"), pool="max", num_classes=NUM_CLASSES,
                 conv=RowBiasConv2D):
        super().__init__()
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}

        def pool_layer():
            if pool == "max":
                return nn.MaxPool2D(kernel_size=2, stride=2, padding=1)
            return nn.AvgPool2D(kernel_size=2, stride=2, padding=1, exclusive=True)

        c1, c2, c3 = widths
        self.features = nn.Sequential(
            conv(1, c1, 3, stride=2, padding=1), act[acts[0]](), pool_layer(),
            conv(c1, c2, 3, stride=2, padding=1), act[acts[1]](), pool_layer(),
            conv(c2, c3, 3, stride=2, padding=1), act[acts[2]](),
        )
        self.fc = nn.Linear(c3 * 7 * 13, num_classes)

    def forward(self, x):
        x = self.features(x)
        x = paddle.flatten(x, start_axis=1)
        return self.fc(x)


def cnn01(**kwargs) -> nn.Layer:
    """Notebook CNN01: conv 1->32->32->64 (stride 2, ReLU), max pooling, FC 64*7*13 -> 12."""
    return NotebookCNN((32, 32, 64), ("relu", "relu", "relu"), "max", **kwargs)


def cnn02(**kwargs) -> nn.Layer:
    """Notebook CNN02: conv 1->128->64->64, sigmoid in the first two, max pooling."""
    return NotebookCNN((128, 64, 64), ("sigmoid", "sigmoid", "relu"), "max", **kwargs)


def cnn03(**kwargs) -> nn.Layer:
    """Notebook CNN03: conv 1->64->64->64 (ReLU), average pooling."""
    return NotebookCNN((64, 64, 64), ("relu", "relu", "relu"), "avg", **kwargs)


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 conv (no bias) + BatchNorm + ReLU: ``cardnet``'s stage, shared with the dual networks' image trunk."""
    return nn.Sequential(
        nn.Conv2D(cin, cout, 3, stride=stride, padding=1, bias_attr=False),
        nn.BatchNorm2D(cout),
        nn.ReLU(),
    )


class CardNet(nn.Layer):
    """CardSense default network: fixed 2x2 average-pool stem, conv-BN-ReLU stages, position-aware head.

    Why this shape: a filled card is a large smooth blob, so a 2x2 average pool (190x400 -> 95x200)
    keeps its outline to sub-pixel precision in the grey levels while cutting the cost of the first
    convolution fourfold (measured: a 4x4 stem with a stride-1 first layer trained as fast but confused
    fluid pound with gas interference more, 0.947 vs this net's figure in docs/TRAINING.md). The stem has
    no parameters, so training can run the ``body`` on pooled inputs computed once
    (``training.models.split_stem``, ``training.inputs``), and the exported network still takes the full
    ``[N, 1, 190, 400]``.
    Which corner of the card is missing is the whole diagnosis (A02 vs A08, A05 vs A06), so the head keeps
    a coarse 3 x 6 grid instead of a translation-blind global average.
    """

    def __init__(self, widths=(16, 32, 48, 64), strides=(2, 2, 2, 2), grid=(3, 6), pool=2,
                 num_classes=NUM_CLASSES, dropout=0.2):
        super().__init__()
        self.stem = nn.AvgPool2D(kernel_size=pool, stride=pool)
        layers, cin = [], 1
        for w, s in zip(widths, strides):
            layers.append(conv_bn(cin, w, s))
            cin = w
        self.body = nn.Sequential(
            *layers,
            nn.AdaptiveAvgPool2D(grid),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(cin * grid[0] * grid[1], 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.body(self.stem(x))


def cardnet_wide(**kwargs) -> nn.Layer:
    """A wider ``cardnet`` (24/48/64/96 channels), measured as an alternative default."""
    return CardNet(widths=(24, 48, 64, 96), **kwargs)
