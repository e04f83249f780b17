"""The condition table: fixed order and fields, and advice (cause, remedy, sources) for every condition."""

from __future__ import annotations

import re

import pytest

from shared.labels import BY_CODE, CODES, CONDITIONS, SOURCES, advice, label_index, labels_as_dicts


def test_order_and_the_metadata_fields_are_unchanged():
    assert CODES == tuple(f"A{i:02d}" for i in range(1, 13))
    assert labels_as_dicts()[1] == {"code": "A02", "name": "供液不足", "name_en": "insufficient liquid (fluid pound)"}
    assert all(set(d) == {"code", "name", "name_en"} for d in labels_as_dicts())  # meta.json's label shape
    assert label_index("A12") == 11
    with pytest.raises(KeyError, match="A01"):
        label_index("A13")


@pytest.mark.parametrize("code", CODES)
def test_every_condition_has_a_cause_and_remedy_in_both_languages_with_sources(code):
    c = BY_CODE[code]
    for text in (c.cause, c.remedy):
        assert re.search(r"[\u4e00-\u9fff]", text), f"{code}: Chinese text expected, got {text!r}"
    for text in (c.cause_en, c.remedy_en):
        assert text and text.isascii() and text.endswith("."), f"{code}: one English sentence expected"
        assert len(text) < 220, f"{code}: keep it to one line"
    assert c.sources and all(key in SOURCES for key in c.sources)


def test_advice_is_json_ready_with_full_citations():
    a = advice("A02")
    assert set(a) == {"cause", "cause_en", "remedy", "remedy_en", "sources"}
    assert "smaller" in a["remedy_en"] and "降低冲次" in a["remedy"]
    assert all("http" in s for s in a["sources"])
    with pytest.raises(KeyError):
        advice("B01")


def test_every_source_is_cited_by_some_condition():
    cited = {key for c in CONDITIONS for key in c.sources}
    assert cited == set(SOURCES)
