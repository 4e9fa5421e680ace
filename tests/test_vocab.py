"""Id vocabularies: ids to rows and back, the unknown-id row, file checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelLoadError
from service.models.vocab import Vocabulary


def test_ids_map_to_rows_from_one_and_unknown_ids_to_row_zero() -> None:
    vocab = Vocabulary(["a", "b", "c"])
    rows, unknown = vocab.rows(["c", "x", "a", "x", "b"])
    assert rows.dtype == np.int64
    assert rows.tolist() == [3, 0, 1, 0, 2]
    assert unknown == ["x", "x"]
    assert vocab.n_rows == 4
    assert len(vocab) == 3
    assert "b" in vocab and "x" not in vocab
    assert vocab.row("b") == 2 and vocab.row("zz") == 0


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
    with pytest.raises(ModelLoadError, match="duplicate id 'b'"):
        Vocabulary(["a", "b", "c", "b"])


def test_from_file_line_i_is_row_i_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "items.txt"
    path.write_text("i7\ni3\ni9\n")
    vocab = Vocabulary.from_file(path)
    assert vocab.ids == ["i7", "i3", "i9"]
    assert vocab.rows(["i9"])[0].tolist() == [3]
    path.write_text("i7\ni3")  # the final newline is optional
    assert Vocabulary.from_file(path).ids == ["i7", "i3"]
    path.write_text("")
    assert Vocabulary.from_file(path).n_rows == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [("a\n\nb\n", "line 2"), ("a\n b\n", "line 2"), ("a\nb\na\n", "duplicate id 'a'")],
)
def test_from_file_refuses_malformed_files(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "users.txt"
    path.write_text(text)
    with pytest.raises(ModelLoadError, match=reason):
        Vocabulary.from_file(path)


def test_from_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"users\.txt is missing"):
        Vocabulary.from_file(tmp_path / "users.txt")
