"""``recserve models``: what a model repository, or a running server, holds.

From a directory (``--repository``, default the server's ``--model-repository``) each version's
manifest is read through :func:`modelrepo.read_manifest`: whether it reads, when it was created,
what it was trained on and its test metrics (HR@10, NDCG@10 and their lift over the popularity
baseline on the same candidates), so that choosing or checking a version needs no JSON reading.
From a server (``--url``) it is the repository index, which anyone may read: model, version, state
and reason (the full reasons with ``RECSERVE_ADMIN_TOKEN`` set). It is asked with Triton's
``POST /v2/repository/index``, so a Triton server can be listed the same way.

Exit status: 0 listed, 1 the server could not be asked, 2 bad flags or a repository that cannot be
read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelrepo import VersionError, read_manifest, scan
from modelrepo.access import read_problem, shown
from service.settings import Settings

EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE = 0, 1, 2
K = 10  # the cut-off `recserve train` reports its ranking metrics at
READABLE, UNREADABLE, EMPTY = "READABLE", "UNREADABLE", "EMPTY"
_TOKEN_ENV = "RECSERVE_ADMIN_TOKEN"
_TIMEOUT_S = 10.0
_NONE = "-"


class ListingError(Exception):
    """The listing cannot be made; the message is one line for the operator."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Metrics:
    hr: float | None
    ndcg: float | None
    lift_hr: float | None
    lift_ndcg: float | None


@dataclass(frozen=True)
class Row:
    """One version (or a model without any) as listed."""

    model: str
    version: str
    state: str
    reason: str = ""
    created_at: str | None = None
    dataset: str | None = None
    dataset_size: int | None = None
    metrics: Metrics | None = None

    def to_json(self) -> dict[str, Any]:
        dataset = None
        if self.dataset is not None or self.dataset_size is not None:
            dataset = {"name": self.dataset, "size": self.dataset_size}
        metrics = None
        if self.metrics is not None:
            m = self.metrics
            lift = {f"hr@{K}": m.lift_hr, f"ndcg@{K}": m.lift_ndcg}
            metrics = {f"hr@{K}": m.hr, f"ndcg@{K}": m.ndcg, "lift": lift}
        return {
            "model": self.model,
            "version": self.version,
            "state": self.state,
            "reason": self.reason,
            "created_at": self.created_at,
            "dataset": dataset,
            "metrics": metrics,
        }


# -- reading -------------------------------------------------------------------------------------


def _at(records: Mapping[str, Any], *keys: str) -> Any:
    """``records[k1][k2]...``, or None where any step is missing or not an object."""
    value: Any = records
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _number(value: Any) -> float | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number else None


def _metrics(records: Mapping[str, Any]) -> Metrics | None:
    test = _at(records, "metrics", "test")
    if not isinstance(test, Mapping):
        return None
    hr, ndcg = f"hr@{K}", f"ndcg@{K}"
    return Metrics(
        hr=_number(_at(test, "model", hr)),
        ndcg=_number(_at(test, "model", ndcg)),
        lift_hr=_number(_at(test, "lift", hr)),
        lift_ndcg=_number(_at(test, "lift", ndcg)),
    )


def version_row(model: str, version: int, path: Path) -> Row:
    """One version directory as listed: its manifest's records, or why it does not read."""
    try:
        manifest = read_manifest(path)
    except VersionError as exc:
        return Row(model, str(version), UNREADABLE, str(exc))
    records = manifest.records()
    name = _at(records, "dataset", "name")
    size = _number(_at(records, "dataset", "size"))
    return Row(
        model,
        str(version),
        READABLE,
        created_at=manifest.created_at,
        dataset=name if isinstance(name, str) else None,
        dataset_size=None if size is None else int(size),
        metrics=_metrics(records),
    )


def from_repository(root: Path) -> list[Row]:
    """Every model and version under ``root``, in name and version order."""
    try:
        models = scan(root)
    except OSError as exc:
        why = read_problem(root) or f"model repository {shown(root)} cannot be read: {exc}"
        raise ListingError(why, EXIT_USAGE) from None
    rows: list[Row] = []
    for name in sorted(models):
        model = models[name]
        if not model.versions:
            rows.append(Row(name, "", EMPTY, "no versions"))
        rows.extend(version_row(name, v, model.path / str(v)) for v in model.versions)
    return rows


def from_server(url: str, token: str | None) -> list[Row]:
    """The repository index of the server at ``url`` (``http://host:port``)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url.rstrip("/") + "/v2/repository/index", data=b"{}", headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            entries = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        answer = f"{url} answered {exc.code}: {_error_of(exc)}"
        raise ListingError(answer, EXIT_UNREACHABLE) from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise ListingError(f"cannot reach {url}: {why}", EXIT_UNREACHABLE) from None
    except ValueError:
        raise ListingError(f"{url} did not answer a JSON index", EXIT_UNREACHABLE) from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ListingError(f"{url} did not answer a repository index", EXIT_UNREACHABLE)
    return [
        Row(
            str(e.get("name", "")),
            str(e.get("version") or ""),
            str(e.get("state") or ""),
            str(e.get("reason") or ""),
        )
        for e in entries
    ]


def _error_of(exc: urllib.error.HTTPError) -> str:
    """The server's ``{"error": ...}`` message, or the HTTP reason."""
    try:
        body = json.loads(exc.read())
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return str(exc.reason)


# -- showing -------------------------------------------------------------------------------------

_LIFT_NOTE = "lift: the model's figure minus the popularity baseline's, on the same candidates"


def _figure(value: float | None, signed: bool = False) -> str:
    if value is None:
        return _NONE
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _cells(row: Row) -> dict[str, str]:
    m = row.metrics or Metrics(None, None, None, None)
    data = row.dataset or _NONE
    if row.dataset_size is not None:
        data = f"{data} ({row.dataset_size:,})"
    return {
        "MODEL": row.model,
        "VERSION": row.version or _NONE,
        "STATE": row.state or _NONE,
        "CREATED": row.created_at or _NONE,
        "DATA (INTERACTIONS)": data,
        f"HR@{K}": _figure(m.hr),
        f"NDCG@{K}": _figure(m.ndcg),
        f"HR@{K} LIFT": _figure(m.lift_hr, signed=True),
        f"NDCG@{K} LIFT": _figure(m.lift_ndcg, signed=True),
        "REASON": row.reason,
    }


def table(rows: Sequence[Row]) -> str:
    """A fixed-width table; a column nobody has a value in is left out."""
    if not rows:
        return "no models"
    cells = [_cells(row) for row in rows]
    always = ("MODEL", "VERSION", "STATE")
    columns = [
        c for c in cells[0] if c in always or any(line[c] not in ("", _NONE) for line in cells)
    ]
    widths = {c: max(len(c), *(len(line[c]) for line in cells)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(line[c].ljust(widths[c]) for c in columns).rstrip() for line in cells]
    if f"HR@{K} LIFT" in columns:
        lines.append(_LIFT_NOTE)
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------


def default_repository() -> Path:
    """The repository ``recserve serve`` would serve: ``RECSERVE_MODEL_REPOSITORY`` or its
    default."""
    given = os.environ.get("RECSERVE_MODEL_REPOSITORY")
    default: Path = Settings.model_fields["model_repository"].default
    return Path(given) if given else default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``models`` flags to ``parser``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--repository",
        type=Path,
        metavar="DIR",
        help="a model repository (default: RECSERVE_MODEL_REPOSITORY, else the server's default)",
    )
    source.add_argument(
        "--url",
        metavar="URL",
        help=f"a running server, e.g. http://127.0.0.1:8000 (full reasons with {_TOKEN_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="one JSON array, for machines")


def run(args: argparse.Namespace) -> int:
    """List what ``--repository`` or ``--url`` holds; returns the exit status."""
    try:
        if args.url is not None:
            rows = from_server(args.url, os.environ.get(_TOKEN_ENV))
        else:
            rows = from_repository(args.repository or default_repository())
    except ListingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        print(table(rows))
    return EXIT_OK
