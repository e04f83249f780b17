"""The hostile corpus against the shared layer, plus a bounded coverage-guided fuzz of the decoders.

Every input either gives a model input or raises the one documented error type (CardError / ArchiveError).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cards import CardError, decode_card_png, read_card_csv
from shared.dataset_io import ArchiveError, iter_cards
from shared.preprocess import preprocess_csv, preprocess_png
from tests.hostile import archive_corpus, card_corpus, csv_corpus, good_csv, good_png

CARDS = {h.name: h for h in card_corpus()}
CSVS = {h.name: h for h in csv_corpus()}


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_corpus(name):
    case = CARDS[name]
    if case.ok:
        x = preprocess_png(case.data)
        assert x.shape == (1, 190, 400) and 0.0 < x.mean() < 1.0
    else:
        with pytest.raises(CardError):
            preprocess_png(case.data)


@pytest.mark.parametrize("name", sorted(CSVS))
def test_csv_corpus(name):
    case = CSVS[name]
    if case.ok:
        assert preprocess_csv(case.data).shape == (1, 190, 400)
    else:
        with pytest.raises(CardError):
            preprocess_csv(case.data)


@pytest.mark.parametrize("name", sorted(archive_corpus()))
def test_archive_corpus_keeps_the_good_card(name):
    source = iter_cards(archive_corpus()[name])
    cards = [c for c in source if c.png is not None or c.csv is not None]
    good = [c for c in cards if c.id == "good"]
    assert len(good) == 1 and good[0].png == good_png()
    # Nothing hostile came through as a card, except a GBK-named copy of the good card.
    assert all(c.png == good_png() for c in cards)
    if name not in {"non-utf8-names.zip", "bomb-members.zip"}:
        assert source.problems, "the hostile member is reported"


def test_archive_that_is_not_a_zip():
    with pytest.raises(ArchiveError):
        iter_cards(b"PK\x03\x04 but then nothing")


# ---------------------------------------------------------------- fuzz (bounded)

GOOD_PNG = good_png()
GOOD_CSV = good_csv()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@FUZZ
@given(st.data())
def test_fuzz_png_mutations(data):
    """Byte flips, truncations and splices of a real card PNG: a model input or a CardError, nothing else."""
    raw = bytearray(GOOD_PNG)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(raw)))
    try:
        x = preprocess_png(bytes(raw[:cut]))
    except CardError:
        return
    assert x.shape == (1, 190, 400) and np.isfinite(x).all()


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_png_random_bytes(blob):
    with pytest.raises(CardError):
        decode_card_png(b"\x89PNG\r\n\x1a\n" + blob)


@FUZZ
@given(st.data())
def test_fuzz_csv(data):
    """Random edits of a real CSV and random text: a card or a CardError, nothing else."""
    text = GOOD_CSV.decode("gbk")
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = data.draw(st.text(max_size=30))
    blob = "\n".join(lines).encode("utf-8", errors="surrogatepass") if data.draw(st.booleans()) else data.draw(st.binary(max_size=600))
    try:
        card = read_card_csv(blob)
    except CardError:
        return
    assert np.isfinite(card.position).all() and len(card) >= 20
    try:
        preprocess_csv(blob)
    except CardError:
        pass
