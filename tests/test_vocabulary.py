"""Vocabularies: ids to rows and back, the unknown row, the file format."""

from __future__ import annotations

import numpy as np
import pytest

from modelrepo import UNKNOWN_ROW, VersionError, Vocabulary


def test_ids_map_to_rows_from_one_and_unknown_ids_to_row_zero() -> None:
    vocab = Vocabulary(["a", "b", "c"])
    rows, unknown = vocab.rows(["c", "x", "a", "x", "b"])
    assert rows.dtype == np.int64
    assert rows.tolist() == [3, UNKNOWN_ROW, 1, UNKNOWN_ROW, 2]
    assert unknown == ["x", "x"]
    assert vocab.n_rows == 4
    assert len(vocab) == 3
    assert "b" in vocab and "x" not in vocab
    assert vocab.row("b") == 2 and vocab.row("zz") == UNKNOWN_ROW == 0


def test_rows_of_no_ids() -> None:
    rows, unknown = Vocabulary(["a"]).rows([])
    assert rows.shape == (0,) and unknown == []


def test_rows_back_to_ids() -> None:
    vocab = Vocabulary(["a", "b", "c"])
    assert [vocab.id_of_row(r) for r in (1, 2, 3)] == ["a", "b", "c"]
    for row in (0, 4, -1):
        with pytest.raises(IndexError):
            vocab.id_of_row(row)
    assert vocab.ids_of_rows(np.array([3, 1, 0])) == ["c", "a", ""]
    assert vocab.catalog_rows().tolist() == [1, 2, 3]


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(VersionError, match="duplicate id 'b'"):
        Vocabulary(["a", "b", "c", "b"])


def test_line_i_of_the_file_is_row_i_plus_one() -> None:
    vocab = Vocabulary.parse("i7\ni3\ni9\n", "items.txt")
    assert vocab.ids == ["i7", "i3", "i9"]
    assert vocab.rows(["i9"])[0].tolist() == [3]
    assert Vocabulary.parse("i7\ni3", "items.txt").ids == ["i7", "i3"]  # final newline optional
    assert Vocabulary.parse("", "items.txt").n_rows == 1
    assert Vocabulary.parse(vocab.to_text(), "items.txt").ids == vocab.ids


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a\n\nb\n", r"users\.txt line 2"),
        ("a\n b\n", r"users\.txt line 2"),
        ("a\nb\na\n", r"users\.txt: duplicate id 'a'"),
    ],
)
def test_malformed_files_are_refused_by_name(text: str, reason: str) -> None:
    with pytest.raises(VersionError, match=reason):
        Vocabulary.parse(text, "users.txt")
