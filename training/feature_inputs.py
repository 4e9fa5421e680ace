"""From side-feature files to a feature model's inputs: files -> encoded tables -> SideFeatures.

``recserve train --user-features PATH --item-features PATH`` reads each file with
:mod:`training.features` and encodes it against the id vocabularies of the run's interactions,
learning each feature's vocabulary and statistics from the *training* ids only (the ids with a
training interaction in the split), so that nothing about the hold-outs or the cold-start users
leaks into the model. The result, :class:`FeatureInputs`, holds what every later step needs: the
:class:`~training.models.SideFeature`s the model trains on, the vocabulary of every feature input
(``vocab_<input>.txt``), the tables the version ships, the notes the report prints and the record
the manifest keeps.

``--feature-kind NAME=KIND`` and ``--drop-feature NAME`` name a column of either file; a name that
is in neither is refused, naming the flag, before anything is trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from modelrepo import Source, Vocabulary
from training.data import Interactions
from training.features import (
    EncodedFeature,
    EncodedTable,
    FeatureFile,
    FeatureFileError,
    FeatureKind,
    encode_table,
    read_feature_file,
)
from training.features.formats import parse
from training.models import SideFeature, feature_tables
from training.split import Split

_TABLE_SOURCE = {"user": Source.USER_TABLE, "item": Source.ITEM_TABLE}


@dataclass(frozen=True)
class FeatureOptions:
    """The side-feature flags of ``recserve train``."""

    user_path: Path | None = None
    item_path: Path | None = None
    kinds: Mapping[str, FeatureKind] = field(default_factory=dict)  # --feature-kind NAME=KIND
    drop: tuple[str, ...] = ()  # --drop-feature NAME
    max_bag: int | None = None  # --max-bag N

    @property
    def paths(self) -> dict[str, Path]:
        """The given files by side (``user``, ``item``)."""
        given = {"user": self.user_path, "item": self.item_path}
        return {side: path for side, path in given.items() if path is not None}


@dataclass(frozen=True)
class EncodedFeatures:
    """The encoded tables of one run: the user table, for training users then any cold ones."""

    user: EncodedTable | None
    item: EncodedTable | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class FeatureInputs:
    """Everything the run needs of its side features."""

    features: tuple[SideFeature, ...] = ()
    vocabularies: dict[str, Vocabulary] = field(default_factory=dict)  # by file name
    notes: tuple[str, ...] = ()
    cold_user_rows: dict[str, np.ndarray] = field(default_factory=dict)
    """Cold-start users' feature rows, by input name, in the order of their ids (no id row)."""

    @property
    def tables(self) -> dict[str, dict[str, np.ndarray]]:
        """What ``write_version(tables=...)`` takes."""
        return feature_tables(self.features)

    def record(self, features: Sequence[SideFeature]) -> dict[str, Any]:
        """The manifest's ``features`` record: each input of ``features`` (the model's: these
        and any the training adds, as the user's latest items), whether a caller may or must send
        it, and the reading notes."""
        inputs = [
            {
                "input": feature.name,
                "feature": feature.feature,
                "source": str(feature.source),
                "role": str(feature.role),
                "caller": feature.input_spec().caller,
            }
            for feature in features
        ]
        return {"inputs": inputs, "notes": list(self.notes)}


def read_files(options: FeatureOptions) -> dict[str, FeatureFile]:
    """Each given file read whole, ``--feature-kind`` and ``--drop-feature`` applied to the file(s)
    holding that column; :class:`FeatureFileError` for a name neither file holds."""
    columns = {side: _column_names(path) for side, path in options.paths.items()}
    for flag, names in (("--feature-kind", list(options.kinds)), ("--drop-feature", options.drop)):
        for name in names:
            if not any(name in held for held in columns.values()):
                files = ", ".join(str(path) for path in options.paths.values()) or "none given"
                raise FeatureFileError(
                    f"{flag} names '{name}', which is not a column of the feature files ({files})"
                )
    return {
        side: read_feature_file(
            path,
            kinds={k: v for k, v in options.kinds.items() if k in columns[side]},
            drop=[name for name in options.drop if name in columns[side]],
        )
        for side, path in options.paths.items()
    }


def _column_names(path: Path) -> set[str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeatureFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return {column.name for column in parse(path, data).columns}


def encode(
    files: Mapping[str, FeatureFile],
    data: Interactions,
    *,
    train_users: np.ndarray,
    train_items: np.ndarray,
    cold_users: Sequence[str] = (),
    max_bag: int | None = None,
) -> EncodedFeatures:
    """Encode the files for the id vocabularies of ``data`` (the user table followed by the rows
    of ``cold_users``), fitted on the ids with a training interaction (dense indices)."""
    notes: list[str] = [note for file in files.values() for note in file.notes]
    tables: dict[str, EncodedTable] = {}
    for side, file in files.items():
        ids = data.user_ids if side == "user" else data.item_ids
        trained = np.unique(train_users if side == "user" else train_items)
        extra = list(cold_users) if side == "user" else []
        table = encode_table(
            file,
            [*ids, *extra],
            fit_ids=[ids[index] for index in trained.tolist()],
            max_bag=max_bag,
            entity=f"{side}s",
        )
        notes.extend(table.notes)
        tables[side] = table
    return EncodedFeatures(tables.get("user"), tables.get("item"), tuple(notes))


def side_inputs(encoded: EncodedFeatures, n_user_rows: int) -> FeatureInputs:
    """The model's side features and the version's vocabularies: the first ``n_user_rows`` rows
    of the user table are the model's (the rest, cold-start users, are kept apart)."""
    features: list[SideFeature] = []
    vocabularies: dict[str, Vocabulary] = {}
    cold: dict[str, np.ndarray] = {}
    for side, table in (("user", encoded.user), ("item", encoded.item)):
        for encoded_feature in table.features if table is not None else ():
            rows = encoded_feature.rows
            if side == "user":
                cold[f"user_{encoded_feature.name}"] = rows[n_user_rows:]
                rows = rows[:n_user_rows]
            feature = _side_feature(encoded_feature, _TABLE_SOURCE[side], rows)
            features.append(feature)
            if feature.vocabulary is not None and encoded_feature.vocabulary is not None:
                vocabularies[feature.vocabulary] = encoded_feature.vocabulary
    return FeatureInputs(tuple(features), vocabularies, encoded.notes, cold)


def _side_feature(encoded: EncodedFeature, source: Source, rows: np.ndarray) -> SideFeature:
    if encoded.kind is FeatureKind.NUMERIC:
        assert encoded.mean is not None and encoded.std is not None
        return SideFeature.dense(encoded.name, source, rows, [encoded.mean], [encoded.std])
    assert encoded.vocabulary is not None
    if encoded.kind is FeatureKind.CATEGORICAL:
        return SideFeature.categorical(encoded.name, source, encoded.vocabulary.n_rows, rows)
    return SideFeature.multi_hot(encoded.name, source, encoded.vocabulary.n_rows, rows)


def prepare(
    options: FeatureOptions | None,
    data: Interactions,
    split: Split,
    cold_users: Sequence[str],
    stream: TextIO,
) -> FeatureInputs:
    """The run's side features (none without feature files), each reading note said on
    ``stream``; :class:`FeatureFileError` when a file cannot be read."""
    if options is None or not options.paths:
        return FeatureInputs()
    encoded = encode(
        read_files(options),
        data,
        train_users=split.train_users,
        train_items=split.train_items,
        cold_users=cold_users,
        max_bag=options.max_bag,
    )
    for note in encoded.notes:
        stream.write(f"note: {note}\n")
    return side_inputs(encoded, data.n_users + 1)
