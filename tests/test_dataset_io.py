"""Safe reading of card zips and folders: layouts, pairing, names, and every hostile archive."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from shared.cards import card_csv_text, render_card_png
from shared.dataset_io import MAX_MEMBER_BYTES, ArchiveError, iter_cards
from tests.shapes import fluid_pound_card, normal_card

PNG = render_card_png(*normal_card())
CSV = card_csv_text(*fluid_pound_card()).encode("utf-8-sig")


def _zip(members: dict[str, bytes], **kwargs) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _ids(source) -> list[tuple[str, str | None, bool, bool]]:
    return [(c.id, c.label, c.png is not None, c.csv is not None) for c in source]


def test_competition_train_layout_pairs_png_and_csv():
    data = _zip({
        "train/A01/1.png": PNG, "train/A01/1.csv": CSV,
        "train/A02/2.csv": CSV,
        "train/A12/3.png": PNG,
        "__MACOSX/train/A01/._1.png": b"junk", "train/.DS_Store": b"junk", "train/A01/Thumbs.db": b"junk",
    })
    source = iter_cards(data)
    assert _ids(source) == [("1", "A01", True, True), ("2", "A02", False, True), ("3", "A12", True, False)]
    assert source.problems == []
    assert source.folders == {"A01": 1, "A02": 1, "A12": 1}


def test_flat_test_layout_has_no_labels(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "b.png").write_bytes(PNG)
    (tmp_path / "test" / "a.csv").write_bytes(CSV)
    (tmp_path / "test" / "notes.txt").write_text("hello")
    source = iter_cards(tmp_path)
    assert _ids(source) == [("a", None, False, True), ("b", None, True, False)]
    assert [p.reason for p in source.problems] == ["not a card file (.png or .csv)"]


def test_chinese_names_survive_utf8_and_gbk_archives():
    utf8 = _zip({"train/A03/油井一号.png": PNG})
    assert [c.id for c in iter_cards(utf8)] == ["油井一号"]
    # An archiver that writes GBK names without the UTF-8 flag (common on Chinese Windows).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("train/A03/placeholder.png")
        zf.writestr(info, PNG)
    raw = buf.getvalue().replace(b"placeholder", "油井二号".encode("gbk") + b"xxx"[: 11 - len("油井二号".encode("gbk"))])
    names = [c.id for c in iter_cards(raw)]
    assert names and names[0].startswith("油井二号")


@pytest.mark.parametrize(
    "name,reason",
    [
        ("../evil.png", "escapes"),
        ("train/../../evil.png", "escapes"),
        ("/etc/evil.png", "absolute"),
        ("C:/evil.png", "absolute"),
        ("C:\\evil.png", "absolute"),
        ("inner.zip", "nested archive"),
    ],
)
def test_hostile_member_names_are_skipped_and_reported(name, reason):
    source = iter_cards(_zip({name: PNG, "ok.png": PNG}))
    assert [c.id for c in source] == ["ok"]
    assert len(source.problems) == 1 and reason in source.problems[0].reason


def test_symlink_members_are_skipped():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("ok.png", PNG)
    source = iter_cards(buf.getvalue())
    assert [c.id for c in source] == ["ok"]
    assert "symbolic link" in source.problems[0].reason


def test_encrypted_members_are_skipped():
    data = bytearray(_zip({"secret.png": PNG, "ok.png": PNG}))
    # Set the "encrypted" flag bit of the first member in its local and central headers.
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.find(sig)
        flag_at = at + (6 if sig == b"PK\x03\x04" else 8)
        data[flag_at] |= 0x1
    source = iter_cards(bytes(data))
    assert [c.id for c in source] == ["ok"]
    assert "encrypted" in source.problems[0].reason


def test_zip_bomb_members_are_refused_before_inflating():
    bomb = b"\x00" * (MAX_MEMBER_BYTES + 1)
    source = iter_cards(_zip({"bomb.csv": bomb, "ratio.png": b"\x00" * (3 << 20), "ok.png": PNG}))
    assert [c.id for c in source] == ["ok"]
    reasons = " ".join(p.reason for p in source.problems)
    assert "limit" in reasons and "ratio" in reasons


def test_duplicate_member_names_keep_the_first():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("dup.png", PNG)
        with pytest.warns(UserWarning):
            zf.writestr("dup.png", b"second")
    source = iter_cards(buf.getvalue())
    cards = list(source)
    assert len(cards) == 1 and cards[0].png == PNG
    assert "duplicate" in source.problems[0].reason


def test_corrupt_member_is_an_error_on_that_card_only():
    data = bytearray(_zip({"a.png": PNG, "b.png": PNG}))
    at = data.find(b"PK\x03\x04") + 30 + len("a.png") + 5
    data[at] ^= 0xFF  # damage a's compressed bytes: its CRC check fails on read
    cards = list(iter_cards(bytes(data)))
    assert [c.id for c in cards] == ["a", "b"]
    assert cards[0].errors and cards[0].png is None
    assert cards[1].png == PNG and not cards[1].errors


def test_not_a_zip_and_missing_paths_are_archive_errors(tmp_path):
    with pytest.raises(ArchiveError, match="zip"):
        iter_cards(b"this is not a zip")
    with pytest.raises(ArchiveError, match="does not exist"):
        iter_cards(tmp_path / "missing.zip")


def test_folder_symlinks_are_not_followed(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(PNG)
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "ok.png").write_bytes(PNG)
    (cards / "link.png").symlink_to(outside)
    source = iter_cards(cards)
    assert [c.id for c in source] == ["ok"]
    assert "symbolic link" in source.problems[0].reason


def test_shards_partition_the_sorted_cards():
    data = _zip({f"test/{i:03d}.png": PNG for i in range(23)})
    whole = [c.id for c in iter_cards(data)]
    for n in (1, 2, 3, 7):
        parts = [[c.id for c in iter_cards(data, shard=(k, n))] for k in range(n)]
        assert sum(parts, []) == whole
    with pytest.raises(ValueError):
        iter_cards(data, shard=(3, 3))
