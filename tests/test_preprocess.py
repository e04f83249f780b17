"""The shared preprocessing: golden fixtures, correct fills, renderer invariance, legacy parity, CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.cards import CardError, decode_card_png, read_card_csv, render_card_ink, render_card_png
from shared.preprocess import (
    METHOD_VERSIONS,
    PreprocessConfig,
    fill_outline,
    preprocess_csv,
    preprocess_file,
    preprocess_ink,
    preprocess_png,
)
from tests.shapes import SHAPES, fluid_pound_card, gas_lock_card, normal_card

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
FIELD_CARDS = ROOT / "data" / "field" / "field-cards.csv"
LEGACY = PreprocessConfig(method="legacy")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max(1, (a | b).sum()))


# ---------------------------------------------------------------- golden fixtures


def _golden_cases():
    for expected in sorted(GOLDEN.glob("*.expected.png")):
        name, method = expected.name.split(".")[:2]
        yield pytest.param(GOLDEN / f"{name}.png", method, expected, id=f"{name}-{method}")


@pytest.mark.parametrize("source,method,expected", list(_golden_cases()))
def test_golden_fixtures(source, method, expected):
    model_input = preprocess_png(source, PreprocessConfig(method=method))
    assert model_input.shape == (1, 190, 400) and model_input.dtype == np.float32
    want = cv2.imread(str(expected), cv2.IMREAD_GRAYSCALE).astype(np.float32) / np.float32(255.0)
    assert np.array_equal(model_input[0], want)


def test_golden_set_is_complete():
    assert len(list(_golden_cases())) >= 8


# ---------------------------------------------------------------- fill correctness


def test_output_range_and_type():
    x = preprocess_png(render_card_png(*normal_card()))
    assert x.dtype == np.float32 and x.shape == (1, 190, 400)
    assert x.min() == 0.0 and x.max() == 1.0


def test_concave_card_keeps_its_cut_away_corner():
    # Fluid pound: the lower-right corner of the card is empty, the region left of it is full.
    ink = render_card_ink(*fluid_pound_card())
    filled = fill_outline(ink)
    assert filled[100, 60] == 255, "inside the card"
    assert filled[140, 330] == 0, "the cut-away lower-right corner stays empty"
    x = preprocess_ink(ink)[0]
    assert x[:, 300:].mean() < 0.15 and x[:, 20:80].mean() > 0.8


def test_thin_gas_lock_card_survives():
    x = preprocess_png(render_card_png(*gas_lock_card()))[0]
    assert 0.02 < x.mean() < 0.3, "a sliver: present, but small"


def test_self_touching_outline_is_filled():
    # A figure-eight: the outline crosses itself in the middle; both lobes are filled.
    t = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    ink = render_card_ink(np.sin(t), np.sin(2 * t))
    filled = fill_outline(ink)
    h, w = filled.shape
    assert filled[h // 2 - 30, w // 4] == 255 or filled[h // 2 + 30, w // 4] == 255
    assert filled[h // 2 - 30, 3 * w // 4] == 255 or filled[h // 2 + 30, 3 * w // 4] == 255


@pytest.mark.parametrize("gap", [1, 2])
def test_outline_with_small_gaps_is_still_filled(gap):
    ink = render_card_ink(*normal_card(), line_width=1)
    closed = preprocess_ink(ink)
    broken = ink.copy()
    broken[:, 150 : 150 + gap] = 0  # cuts the top and bottom lines
    broken[60 : 60 + gap, :] = 0  # and both sides
    assert _iou(preprocess_ink(broken), closed) > 0.95


def test_open_outline_with_a_wide_gap_still_fills():
    ink = render_card_ink(*normal_card(), line_width=2)
    closed = preprocess_ink(ink)
    ink[165:185, 0:25] = 0  # erase the lower-left corner: a gap of about 20 pixels
    assert _iou(preprocess_ink(ink), closed) > 0.9


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_renderer_invariance_margins_and_line_widths(shape):
    pos, load = SHAPES[shape]()
    reference = preprocess_png(render_card_png(pos, load, margin=10, line_width=2))
    for margin in (4, 8, 12, 16, 20, 24):
        for line_width in (1, 2, 3):
            x = preprocess_png(render_card_png(pos, load, margin=margin, line_width=line_width))
            assert _iou(x, reference) >= 0.9, (margin, line_width)


def test_renderer_invariance_other_image_size_and_format():
    pos, load = fluid_pound_card()
    reference = preprocess_png(render_card_png(pos, load))
    big = render_card_ink(pos, load, width=640, height=480, margin=40, line_width=3)
    grey_png = cv2.imencode(".png", 255 - big)[1].tobytes()  # dark ink on white, no alpha
    assert _iou(preprocess_png(grey_png), reference) >= 0.9


# ---------------------------------------------------------------- legacy method


def notebook_fill(png: bytes) -> np.ndarray:
    """The original notebook's steps, written out independently of shared/ for the parity check."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    alpha = np.ascontiguousarray(img[:, :, 3])
    points = np.argwhere(alpha == 255)
    points = points[:, [1, 0]]
    cv2.fillPoly(alpha, [points.astype(np.int32)], 255, cv2.LINE_4)
    return (alpha / 255.0).astype(np.float32)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_legacy_method_reproduces_the_notebook_bit_for_bit(shape):
    png = render_card_png(*SHAPES[shape]())
    assert np.array_equal(preprocess_png(png, LEGACY)[0], notebook_fill(png))


def test_legacy_refuses_outline_without_opaque_pixels():
    ink = render_card_ink(*normal_card())
    with pytest.raises(CardError, match="legacy"):
        preprocess_ink((ink // 2).astype(np.uint8), LEGACY)


# ---------------------------------------------------------------- config


def test_config_round_trip_and_refusals():
    for method in METHOD_VERSIONS:
        config = PreprocessConfig(method=method)
        assert PreprocessConfig.from_dict(config.to_dict()) == config
        assert config.to_dict()["version"] == METHOD_VERSIONS[method]
    with pytest.raises(ValueError, match="unknown preprocessing method"):
        PreprocessConfig.from_dict({"method": "sharpen"})
    with pytest.raises(ValueError, match="not supported"):
        PreprocessConfig.from_dict({"method": "default", "version": "fill-v0"})


# ---------------------------------------------------------------- CSV path and files


def test_csv_goes_through_the_png_path(tmp_path):
    pos, load = normal_card()
    path = tmp_path / "c.csv"
    path.write_text("位移(m),载荷(kN)\n" + "\n".join(f"{p},{f}" for p, f in zip(pos, load)), encoding="gbk")
    card = read_card_csv(path)
    via_png = preprocess_png(render_card_png(card.position, card.load))
    assert np.array_equal(preprocess_csv(path), via_png)
    assert np.array_equal(preprocess_file(path), via_png)
    with pytest.raises(CardError, match="unsupported card file type"):
        preprocess_file(tmp_path / "c.txt")


def test_preview_cli(tmp_path):
    src = tmp_path / "card.png"
    src.write_bytes(render_card_png(*fluid_pound_card()))
    for method in ("default", "legacy"):
        out = tmp_path / f"filled-{method}.png"
        result = subprocess.run(
            [sys.executable, "-m", "shared.preprocess", str(src), "--method", method, "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        grey = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert grey.shape == (190, 400) and grey.dtype == np.uint8
        expected = preprocess_png(src, PreprocessConfig(method=method))[0]
        assert np.array_equal(grey, np.rint(expected * 255).astype(np.uint8))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"hello")
    result = subprocess.run(
        [sys.executable, "-m", "shared.preprocess", str(junk), "--out", str(tmp_path / "x.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "not a PNG" in result.stderr
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- real field cards


@pytest.fixture(scope="module")
def field_rows():
    with FIELD_CARDS.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_all_field_cards_pass_csv_render_and_fill(field_rows):
    """Every real card: written as a GBK CSV, read back, rendered, decoded and filled without error."""
    for row in field_rows:
        pos = np.array(row["position_m"].split(), float)
        load = np.array(row["load_kN"].split(), float)
        text = "位移(m),载荷(kN)\n" + "\n".join(f"{p},{f}" for p, f in zip(pos, load))
        card = read_card_csv(text.encode("gbk"))
        assert len(card) == len(pos), row["id"]
        x = preprocess_csv(text.encode("gbk"))
        assert x.shape == (1, 190, 400) and 0.0 < x.mean() < 1.0, row["id"]


def test_field_cards_renderer_invariance(field_rows):
    """Across margins 4-24 and line widths 1-3, nearly every real card of our conditions keeps IoU >= 0.9."""
    worst = []
    for row in [r for r in field_rows if r["code"]][::5]:
        pos = np.array(row["position_m"].split(), float)
        load = np.array(row["load_kN"].split(), float)
        reference = preprocess_png(render_card_png(pos, load, margin=4, line_width=1))
        worst.append(min(
            _iou(preprocess_png(render_card_png(pos, load, margin=m, line_width=w)), reference)
            for m in (4, 14, 24) for w in (1, 2, 3)
        ))
    worst = np.array(worst)
    assert np.median(worst) >= 0.95
    assert (worst >= 0.9).mean() >= 0.97, sorted(worst)[:5]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_centre_region_shortcuts_match_the_distance_transform(shape):
    from shared.cards import ink_binary
    from shared.preprocess import _centre_region, _centre_region_reference, _fill_binary

    for line_width in (1, 2, 3, 4):
        filled = _fill_binary(ink_binary(render_card_ink(*SHAPES[shape](), line_width=line_width)))
        for estimate in np.linspace(1.0, 4.2, 17):
            assert np.array_equal(_centre_region(filled, estimate), _centre_region_reference(filled, estimate))
