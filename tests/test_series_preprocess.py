"""The shared series preprocessing: shape, normalisation, invariances, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from shared.cards import Card, CardError, card_csv_text
from shared.series import SERIES_CHANNELS, SeriesConfig, preprocess_series, preprocess_series_csv
from tests.shapes import SHAPES, fluid_pound_card, normal_card


def test_shape_range_and_channels():
    x = preprocess_series(Card(*normal_card()))
    assert x.shape == (SERIES_CHANNELS, 256) and x.dtype == np.float32
    assert x[0].min() == 0.0 and x[0].max() <= 1.0 and x[1].min() >= 0.0 and x[1].max() <= 1.0
    assert np.abs(x[2]).max() == pytest.approx(1.0) and np.abs(x[3]).max() == pytest.approx(1.0)
    assert np.ptp(x[4]) == 0.0  # constant channel: min/max load
    assert x[4, 0] == pytest.approx(normal_card()[1].min() / normal_card()[1].max(), rel=1e-6)


def test_invariant_to_start_point_scale_and_direction():
    pos, load = fluid_pound_card(240)
    reference = preprocess_series(Card(pos, load))
    rolled = preprocess_series(Card(np.roll(pos, 37), np.roll(load, 37)))
    np.testing.assert_allclose(rolled, reference, atol=1e-6)
    scaled = preprocess_series(Card(pos * 2.0, load * 1.0))
    np.testing.assert_allclose(scaled[:4], reference[:4], atol=1e-6)
    backwards = preprocess_series(Card(pos[::-1].copy(), load[::-1].copy()))
    np.testing.assert_allclose(backwards, reference, atol=1e-6)


def test_shapes_differ_in_series_space():
    a = preprocess_series(Card(*SHAPES["normal"]()))
    b = preprocess_series(Card(*SHAPES["fluid_pound"]()))
    assert np.abs(a[1] - b[1]).mean() > 0.05


def test_csv_path_and_config_round_trip():
    pos, load = normal_card()
    data = card_csv_text(pos, load).encode("gbk")
    np.testing.assert_allclose(preprocess_series_csv(data), preprocess_series(Card(pos, load)), atol=2e-3)
    config = SeriesConfig(length=128)
    assert preprocess_series(Card(pos, load), config).shape == (SERIES_CHANNELS, 128)
    assert SeriesConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        SeriesConfig.from_dict({"version": "series-v0"})
    with pytest.raises(ValueError):
        SeriesConfig(length=8)


@pytest.mark.parametrize(
    "pos,load",
    [
        (np.zeros(50), np.arange(50.0)),
        (np.arange(50.0), np.full(50, 3.0)),
        (np.arange(10.0), np.arange(10.0)),
        (np.append(np.arange(49.0), np.nan), np.arange(50.0)),
    ],
)
def test_unusable_strokes_raise_card_error(pos, load):
    with pytest.raises(CardError):
        preprocess_series(Card(pos, load))
