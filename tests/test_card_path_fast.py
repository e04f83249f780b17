"""The cheaper card path (issue 17) gives the same bits as the full decode and the distance transform.

* ``shared.png_decode.decode_alpha8``: the alpha plane alone of a card PNG equals cv2's, or it declines;
* ``shared.cards.decode_card_png`` takes that path for the cards we render, and a PNG whose alpha is a
  background plate still goes through the whole image;
* ``shared.preprocess._centre_region``: the 3 x 3 square erosion for thresholds in [1.4, 2) equals the
  distance transform, across the line widths of real and rendered cards and beyond.
"""

from __future__ import annotations

import numpy as np
import pytest

from shared.cards import alpha_outline, decode_card_png, ink_binary, read_png_header, render_card_ink, render_card_png
from shared.png_decode import _undo_sub_plane, decode_alpha8
from shared.preprocess import _centre_region, _centre_region_reference, _fill_binary
from tests.conftest import CARD_KINDS, synthetic_card
from tests.shapes import SHAPES
from tests.test_png_decode import (
    FIXTURE_PNGS,
    assert_same_as_cv2_path,
    card_rgba,
    cv2_image,
    png_with_filters,
)


def fast_alpha(data: bytes) -> np.ndarray | None:
    return decode_alpha8(data, read_png_header(data))


_SIZES = [(400, 190)] * 5 + [(397, 181), (640, 300), (123, 77)]


@pytest.mark.parametrize("batch", range(4))
def test_alpha_plane_of_rendered_cards_equals_cv2(batch: int):
    for seed in range(batch * 16, batch * 16 + 16):
        width, height = _SIZES[seed % len(_SIZES)]
        position, load = synthetic_card(CARD_KINDS[seed % len(CARD_KINDS)], seed=seed)
        data = render_card_png(position, load, width=width, height=height, line_width=1 + seed % 4)
        alpha = fast_alpha(data)
        assert alpha is not None, "a rendered card must take the alpha path"
        assert alpha.flags.c_contiguous and alpha.dtype == np.uint8
        assert np.array_equal(alpha, cv2_image(data)[:, :, 3])
        assert_same_as_cv2_path(data)


def test_alpha_plane_ignores_the_colour_channels():
    """Random colours beside the outline: the alpha plane is still cv2's, and the ink is the alpha."""
    rgba = card_rgba(seed=5, noise=True)
    data = png_with_filters(rgba, [1] * rgba.shape[0])
    assert np.array_equal(fast_alpha(data), rgba[:, :, 3])
    assert np.array_equal(decode_card_png(data), rgba[:, :, 3])


@pytest.mark.parametrize("filters", ["mixed", "none", "up"])
def test_rows_not_all_sub_are_left_to_the_whole_image_path(filters: str):
    rgba = card_rgba(seed=2)
    height = rgba.shape[0]
    kinds = {"mixed": [1, 0, 2] * (height // 3) + [1] * (height % 3), "none": [0] * height, "up": [2] * height}
    data = png_with_filters(rgba, kinds[filters])
    assert fast_alpha(data) is None
    assert np.array_equal(decode_card_png(data), rgba[:, :, 3])  # decoded whole, same ink
    assert_same_as_cv2_path(data)


def test_golden_rgba_cards_take_the_alpha_path():
    golden = [p for p in FIXTURE_PNGS if "expected" not in p.name and read_png_header(p.read_bytes()).color_type == 6]
    assert golden
    for path in golden:
        data = path.read_bytes()
        assert np.array_equal(fast_alpha(data), cv2_image(data)[:, :, 3]), path.name
    # Grey images (the expected fills) are not RGBA: declined.
    for path in FIXTURE_PNGS:
        if read_png_header(path.read_bytes()).color_type != 6:
            assert fast_alpha(path.read_bytes()) is None


def test_alpha_plate_with_the_line_in_the_colours_reads_the_colours():
    """Mostly opaque alpha (a background plate): the alpha says nothing; the ink comes from the colours."""
    rgba = np.full((120, 200, 4), 255, np.uint8)
    rgba[:, :, 3] = 200
    rgba[10:110, 20:180, 3] = 255
    ink = render_card_ink(*synthetic_card("normal", seed=1), width=200, height=120)
    rgba[:, :, :3][ink > 128] = 0  # black line on white
    data = png_with_filters(rgba, [1] * 120)
    assert alpha_outline(fast_alpha(data)) is None
    assert_same_as_cv2_path(data)
    assert decode_card_png(data).max() > 0


def test_large_plane_running_sums_do_not_overflow():
    """Over 8.4 million pixels the summed-area table could overflow int32: those planes use np.cumsum."""
    rng = np.random.default_rng(0)
    for shape in ((190, 400), (2200, 4000)):
        plane = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = np.cumsum(plane, axis=1, dtype=np.uint8)
        assert np.array_equal(_undo_sub_plane(plane.copy()), expected), shape


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_square_erosion_shortcut_matches_the_distance_transform(shape):
    for line_width in (2, 3, 4, 5, 6):
        filled = _fill_binary(ink_binary(render_card_ink(*SHAPES[shape](), line_width=line_width)))
        for estimate in np.linspace(3.0, 6.0, 31):  # thresholds 1.0 ... 2.5: both shortcuts and the transform
            assert np.array_equal(_centre_region(filled, estimate), _centre_region_reference(filled, estimate)), \
                (line_width, estimate)
