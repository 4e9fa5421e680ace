"""How ``/v1`` fills a feature model's side inputs, so that a caller sends ids and the server does
the rest.

Where each input's value comes from (its ``source`` in the signature):

- ``user_table``: the user's row of the version's user feature table (row 0, the defaults, for a
  user the version does not know), unless the request's ``user_features`` supplies the feature;
- ``item_table``: each candidate's row of the item feature table, gathered with one fancy index
  over the candidates' rows. For the whole catalog the gathered tensors are built once per
  version and kept with the catalog (:meth:`SideInputs.items`), never per request;
- ``context``: the request's ``context``, which must supply every context feature.

A request's own values (``user_features``, ``context``) are checked and encoded by
:mod:`service.v1.feature_values` before anything is queued; they are the same for every candidate
and repeated once per row when the feeds are built. An unknown categorical value is served from
row 0 and counted in ``recserve_unknown_ids_total`` with ``kind="<field>:<feature>"`` (e.g.
``user_features:occupation``, ``context:device``). A model without side inputs has no
:class:`SideInputs` and pays for none of this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from modelrepo import InputSpec, Role, Source, Vocabulary
from service.errors import InvalidInput
from service.v1.feature_values import Encoded, encode_value, refuse

if TYPE_CHECKING:
    from service.models.served import ServedVersion

USER_FEATURES, CONTEXT = "user_features", "context"
_FIELDS = {USER_FEATURES: Source.USER_TABLE, CONTEXT: Source.CONTEXT}
_NAME_CHARS = 64  # of a feature name a caller sent that the model does not take, when quoted


class SideInputs:
    """The inputs of one version beyond the user and item ids, and their values' origins."""

    def __init__(self, version: ServedVersion, where: str) -> None:
        signature = version.signature
        self._callers: dict[str, dict[str, InputSpec]] = {
            name: {str(spec.feature): spec for spec in signature.from_source(source)}
            for name, source in _FIELDS.items()
        }
        self._vocabularies: dict[str, Vocabulary | None] = {}
        for spec in (*self._callers[USER_FEATURES].values(), *self._callers[CONTEXT].values()):
            if spec.role is not Role.DENSE and spec.vocabulary is None:
                raise InvalidInput(
                    f"input '{spec.name}' of {where} has no vocabulary for the values a caller "
                    "sends; /v1 cannot serve it yet (V2 infer can)"
                )
            has_vocabulary = spec.vocabulary is not None
            self._vocabularies[spec.name] = version.vocabulary(spec) if has_vocabulary else None
        self._user_tables = _columns(version, signature.from_source(Source.USER_TABLE))
        self._item_tables = _columns(version, signature.from_source(Source.ITEM_TABLE))
        self._where = where

    def encode(
        self, user_features: Mapping[str, Any] | None, context: Mapping[str, Any] | None
    ) -> Encoded:
        """The request's own values as rows of their inputs; 400 naming the field and the feature
        for one the model does not take in that field, a wrong value, a missing context one."""
        encoded = Encoded()
        for name, sent in ((USER_FEATURES, user_features), (CONTEXT, context)):
            declared = self._callers[name]
            for feature, value in (sent or {}).items():
                spec = declared.get(feature)
                where = f"{name}.{feature[:_NAME_CHARS]}"
                if spec is None:
                    raise refuse(where, f"{self._where} takes no such feature{_takes(declared)}")
                encode_value(spec, value, where, self._vocabularies[spec.name], encoded)
        missing = [feature for feature in self._callers[CONTEXT] if feature not in (context or {})]
        if missing:
            raise refuse(f"{CONTEXT}.{missing[0]}", f"{self._where} needs it in every request")
        return encoded

    def users(self, user_row: int, n: int, encoded: Encoded) -> dict[str, np.ndarray]:
        """The user-side inputs of ``n`` rows of one user: the table's row, replaced by what the
        request sent, repeated ``n`` times (contiguous, as the runtime takes them)."""
        index = np.full(n, user_row, dtype=np.intp)
        feeds = {
            name: table.take(index, axis=0)
            for name, table in self._user_tables.items()
            if name not in encoded.rows
        }
        for name, row in encoded.rows.items():
            feeds[name] = np.repeat(row[np.newaxis], n, axis=0)
        return feeds

    def items(self, item_rows: np.ndarray) -> dict[str, np.ndarray]:
        """The item-side inputs of the candidates ``item_rows``: one gather per table column
        (``take``: a fraction of a fancy index's time on a 2-D column)."""
        return {name: table.take(item_rows, axis=0) for name, table in self._item_tables.items()}


def _columns(version: ServedVersion, specs: Iterable[InputSpec]) -> dict[str, np.ndarray]:
    """The table column of each input, by input name (read once, when the feeding is built)."""
    return {spec.name: version.tables[str(spec.table)][spec.name] for spec in specs}


def _takes(declared: Mapping[str, InputSpec]) -> str:
    return f" (it takes {sorted(declared)})" if declared else ""


def side_inputs(version: ServedVersion, where: str) -> SideInputs | None:
    """The version's :class:`SideInputs`, or None when it takes the two ids only."""
    ids = (Source.USER, Source.ITEM)
    if all(spec.source in ids for spec in version.signature.inputs):
        return None
    return SideInputs(version, where)


def sent_values(
    side: SideInputs | None,
    version: ServedVersion,
    user_features: Mapping[str, Any] | None,
    context: Mapping[str, Any] | None,
    where: str,
) -> Encoded | None:
    """The request's own feature values, checked (400 naming the field and the feature) before
    anything is looked up or queued; unknown categorical values counted. A model without side
    inputs takes none: one it is sent is refused."""
    if side is None:
        for name, sent in ((USER_FEATURES, user_features), (CONTEXT, context)):
            if sent:
                feature = next(iter(sent))[:_NAME_CHARS]
                raise refuse(f"{name}.{feature}", f"{where} takes no such feature")
        return None
    encoded = side.encode(user_features, context)
    for kind, n in encoded.unknown.items():
        version.count_unknown(kind, n)
    return encoded


def side_feeds(
    side: SideInputs,
    user_row: int,
    item_rows: np.ndarray,
    sent: Encoded | None,
    items: Mapping[str, np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """The side inputs of one user against ``item_rows``: the user-side rows repeated, the items'
    gathered (or ``items``, already gathered for these rows: the catalog's)."""
    feeds = side.users(user_row, len(item_rows), sent or Encoded())
    feeds.update(side.items(item_rows) if items is None else items)
    return feeds
