"""``--render-augment``: real cards re-drawn from their series (points, line width, margin, aliasing) then
the ONE shared preprocessing tail; varied, deterministic per seed, recorded in the run. Vendored field cards."""

from __future__ import annotations

import json
import numpy as np
import pytest


@pytest.fixture(scope="module")
def field_cards(few_field_csv, training_cache):
    from training.data import field_csv_to_folder, load_data
    from training.series_data import load_strokes

    folder = field_csv_to_folder(few_field_csv, cache_dir=training_cache)
    cs = load_data(folder, cache_dir=training_cache, keep_ink=True, progress=False)
    cs.strokes = load_strokes(cs, progress=False)
    return cs


def test_resample_keeps_the_closed_stroke():
    from training.render_augment import resample_stroke

    t = np.linspace(0, 2 * np.pi, 250, endpoint=False)
    p, f = 1 - np.cos(t), np.sin(t) + 2
    for n in (100, 1000):
        q, g = resample_stroke(p, f, n, phase=0.37)
        assert len(q) == len(g) == n
        assert q.min() >= p.min() - 1e-9 and q.max() <= p.max() + 1e-9  # on the stroke, never outside it
    same, _ = resample_stroke(p, f, 250, phase=0.0)
    np.testing.assert_allclose(same, p)


def test_rerender_varies_line_margin_and_aliasing(field_cards):
    from shared.cards import render_card_ink
    from training.render_augment import rerender_ink

    position, load = field_cards.strokes[0]
    rng = np.random.default_rng(0)
    inks = [rerender_ink(position, load, rng, 190, 400) for _ in range(12)]
    assert all(i.shape == (190, 400) and i.dtype == np.uint8 for i in inks)
    widths = {int((i > 0).sum()) for i in inks}
    assert len(widths) > 6  # line widths and margins differ from draw to draw
    assert any(set(np.unique(i)) <= {0, 255} for i in inks)  # aliased drawings
    assert any(len(np.unique(i)) > 2 for i in inks)  # anti-aliased ones
    plain = render_card_ink(position, load)
    assert not any(np.array_equal(i, plain) for i in inks)
    again = [rerender_ink(position, load, np.random.default_rng(0), 190, 400) for _ in range(1)]
    np.testing.assert_array_equal(again[0], inks[0])  # deterministic for a seed


def test_augmented_inputs_go_through_the_shared_tail(field_cards):
    """The batch is exactly ``preprocess_ink`` of the re-drawn outline: no second preprocessing path."""
    from shared.preprocess import PreprocessConfig, preprocess_ink
    from training.image_augment import augmented_inputs
    from training.render_augment import rerender_ink

    config = PreprocessConfig()
    idx = np.array([0, 5, 9])
    got = augmented_inputs(field_cards, idx, np.random.default_rng(7), config, jitter=False, rerender=True)
    rng = np.random.default_rng(7)
    want = np.stack([preprocess_ink(rerender_ink(*field_cards.strokes[i], rng, 190, 400), config) for i in idx])
    np.testing.assert_array_equal(got, want)
    clean = field_cards.model_input(idx)
    assert not np.array_equal(got, clean)  # the input varies …
    ious = [((g[0] > 0.5) & (c[0] > 0.5)).sum() / ((g[0] > 0.5) | (c[0] > 0.5)).sum() for g, c in zip(got, clean)]
    assert min(ious) > 0.7  # … and stays the same card
    both = augmented_inputs(field_cards, idx, np.random.default_rng(7), config, jitter=True, rerender=True)
    assert not np.array_equal(both, got)  # the outline jitter comes on top


def test_cards_without_a_csv_keep_their_outline(field_cards):
    from shared.preprocess import PreprocessConfig
    from training.image_augment import augmented_inputs

    cs = field_cards
    strokes = list(cs.strokes)
    cs.strokes = [None] * len(cs)
    try:
        x = augmented_inputs(cs, np.array([1, 2]), np.random.default_rng(0), PreprocessConfig(), jitter=False,
                             rerender=True)
    finally:
        cs.strokes = strokes
    np.testing.assert_array_equal(x, cs.model_input(np.array([1, 2])))


def test_run_with_render_augment(field_cards, training_cache, tmp_path):
    from training import pipeline, run

    result = pipeline.train_run(run.parse_args([
        "--data", field_cards.source, "--render-augment", "--epochs", "1", "--cache-dir", str(training_cache),
        "--runs-dir", str(tmp_path), "--name", "ra", "--no-vdl", "--no-export", "--no-progress"]))
    assert result["metrics"]["epochs_run"] == 1
    assert json.loads((tmp_path / "ra" / "config.json").read_text())["recipe"]["render_augment"] is True
