"""Interaction data: loaders for CSV and MovieLens files, and a synthetic generator.

Raw ids are strings. Each vocabulary is sorted (numerically when every id is an integer) and an
interaction refers to it by dense index ``d``; embedding row ``d + 1`` holds it, row 0 being the
unknown-id row. Every interaction is an implicit positive; ratings are parsed only to validate rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Format = Literal["csv", "u.data", "ratings.dat"]
FORMATS: tuple[Format, ...] = ("csv", "u.data", "ratings.dat")

USER_COLUMNS = ("user_id", "userid", "user")
ITEM_COLUMNS = ("item_id", "itemid", "movieid", "movie_id", "item")
MAX_REPORTED_LINES = 10
_BREAKS = frozenset("\r\n")  # an id must fit on one line of its vocabulary file


class DataError(ValueError):
    """The source cannot be read as interactions."""


@dataclass(frozen=True)
class Interactions:
    """Implicit-feedback interactions over string-id vocabularies, in source order."""

    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray  # int64 [n], dense user index per interaction
    items: np.ndarray  # int64 [n], dense item index per interaction
    timestamps: np.ndarray  # int64 [n]; the row position where the source has none
    name: str
    content_hash: str
    skipped_rows: int = 0
    skipped_lines: tuple[int, ...] = field(default=())  # first line numbers (1-based)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def describe(self) -> dict[str, object]:
        """Name, sizes and content hash, as recorded in a version's metadata."""
        return {
            "name": self.name,
            "interactions": len(self),
            "users": self.n_users,
            "items": self.n_items,
            "content_hash": self.content_hash,
            "skipped_rows": self.skipped_rows,
        }

    def skipped_report(self) -> str | None:
        """One line naming the skipped rows, or None when every row was read."""
        if not self.skipped_rows:
            return None
        lines = ", ".join(str(n) for n in self.skipped_lines)
        more = ", ..." if self.skipped_rows > len(self.skipped_lines) else ""
        return (
            f"skipped {self.skipped_rows} row(s) with missing or malformed fields "
            f"(lines {lines}{more})"
        )


@dataclass
class _Rows:
    """Accumulates parsed rows and the line numbers of rejected ones."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)

    def skip(self, line: int) -> None:
        self.skipped += 1
        if len(self.skipped_lines) < MAX_REPORTED_LINES:
            self.skipped_lines.append(line)

    def add(self, line: int, user: str, item: str, rating: str | None, ts: str | None) -> None:
        user, item = user.strip(), item.strip()
        if not user or not item or _BREAKS.intersection(user + item):
            self.skip(line)
            return
        if rating is not None and not _is_number(rating):
            self.skip(line)
            return
        stamp = len(self.users)
        if ts is not None:
            parsed = _parse_timestamp(ts)
            if parsed is None:
                self.skip(line)
                return
            stamp = parsed
        self.users.append(user)
        self.items.append(item)
        self.timestamps.append(stamp)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _parse_timestamp(text: str) -> int | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) else None


def _vocabulary(raw: list[str]) -> tuple[list[str], np.ndarray]:
    """Sorted vocabulary of ``raw`` and the dense index of each element."""
    first: dict[str, int] = {}
    codes = np.fromiter((first.setdefault(r, len(first)) for r in raw), np.int64, len(raw))
    ids = list(first)
    if all(i.isdigit() for i in ids):
        order = sorted(range(len(ids)), key=lambda k: (int(ids[k]), ids[k]))
    else:
        order = sorted(range(len(ids)), key=lambda k: ids[k])
    remap = np.empty(len(ids), np.int64)
    remap[np.asarray(order, np.int64)] = np.arange(len(ids), dtype=np.int64)
    return [ids[k] for k in order], remap[codes]


def _finish(rows: _Rows, name: str, digest: str) -> Interactions:
    if not rows.users:
        raise DataError(f"{name}: no valid interactions")
    user_ids, users = _vocabulary(rows.users)
    item_ids, items = _vocabulary(rows.items)
    return Interactions(
        user_ids=user_ids,
        item_ids=item_ids,
        users=users,
        items=items,
        timestamps=np.asarray(rows.timestamps, np.int64),
        name=name,
        content_hash=digest,
        skipped_rows=rows.skipped,
        skipped_lines=tuple(rows.skipped_lines),
    )


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def parse_separated(
    text: str, separator: str, name: str = "data", digest: str | None = None
) -> Interactions:
    """Parse ``user<sep>item<sep>rating<sep>timestamp`` lines (MovieLens u.data, ratings.dat).

    ``digest`` is the content hash to record (default: sha256 of ``text`` as UTF-8).
    """
    rows = _Rows()
    digest = digest or hashlib.sha256(text.encode()).hexdigest()
    for number, line in _numbered_lines(text):
        fields = line.split(separator)
        if len(fields) < 4:
            rows.skip(number)
            continue
        rows.add(number, fields[0], fields[1], fields[2], fields[3])
    return _finish(rows, name, digest)


def _column(header: list[str], names: Iterable[str]) -> int | None:
    normalized = [h.strip().lower() for h in header]
    for candidate in names:
        if candidate in normalized:
            return normalized.index(candidate)
    return None


def parse_csv(text: str, name: str = "data", digest: str | None = None) -> Interactions:
    """Parse CSV with a header naming ``user_id``, ``item_id`` and optionally rating, timestamp.

    ``digest`` is the content hash to record (default: sha256 of ``text`` as UTF-8).
    """
    digest = digest or hashlib.sha256(text.encode()).hexdigest()
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise DataError(f"{name}: empty file")
    user_col = _column(header, USER_COLUMNS)
    item_col = _column(header, ITEM_COLUMNS)
    if user_col is None or item_col is None:
        raise DataError(f"{name}: the CSV header must name user_id and item_id, got {header}")
    rating_col = _column(header, ("rating", "score"))
    ts_col = _column(header, ("timestamp", "time", "ts"))
    width = max(c for c in (user_col, item_col, rating_col, ts_col) if c is not None) + 1
    rows = _Rows()
    for fields in reader:
        number = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) < width:
            rows.skip(number)
            continue
        rows.add(
            number,
            fields[user_col],
            fields[item_col],
            None if rating_col is None else fields[rating_col],
            None if ts_col is None else fields[ts_col],
        )
    return _finish(rows, name, digest)


def detect_format(path: Path, text: str) -> Format:
    """Guess the format from the file name, then from the first non-empty line."""
    if path.name == "ratings.dat":
        return "ratings.dat"
    if path.name == "u.data":
        return "u.data"
    first = next((line for _, line in _numbered_lines(text)), "")
    if "::" in first:
        return "ratings.dat"
    if "\t" in first and first.split("\t")[0].strip().isdigit():
        return "u.data"
    if "," in first:
        return "csv"
    raise DataError(f"{path}: cannot detect the format; pass --format ({', '.join(FORMATS)})")


def load(path: Path, fmt: Format | None = None) -> Interactions:
    """Read interactions from ``path`` in ``fmt`` (detected when None)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    text = raw.decode("utf-8", errors="replace")
    fmt = fmt or detect_format(path, text)
    digest = hashlib.sha256(raw).hexdigest()
    if fmt == "csv":
        return parse_csv(text, path.name, digest)
    separator = "\t" if fmt == "u.data" else "::"
    return parse_separated(text, separator, path.name, digest)


# --- synthetic data --------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic generator; ``ML1M`` matches MovieLens-1M's size and shape."""

    users: int = 1000
    items: int = 800
    interactions: int = 60_000
    seed: int = 0
    factors: int = 32
    affinity: float = 2.5  # weight of the latent user-item affinity in the choice logits
    popularity_exponent: float = 1.0  # Zipf exponent of the item popularity prior
    min_per_user: int = 20


ML1M = SyntheticSpec(users=6040, items=3706, interactions=1_000_209)


def synthetic(spec: SyntheticSpec | None = None) -> Interactions:
    """Interactions drawn from a planted low-rank model with long-tailed popularity.

    User ``u`` picks ``n_u`` distinct items without replacement with probability proportional to
    ``exp(affinity * <p_u, q_i> + log prior_i)`` (Gumbel top-k), where the prior is Zipfian over a
    random item order and ``n_u`` is log-normal (at least ``min_per_user``). Timestamps increase
    per user in random order of the picks, so the latest interaction is an ordinary draw.
    Deterministic for a given spec (default: ``SyntheticSpec()``).
    """
    spec = spec or SyntheticSpec()
    if spec.users < 1 or spec.items < 2 or spec.interactions < spec.users:
        raise DataError(f"synthetic: need users >= 1, items >= 2, interactions >= users: {spec}")
    rng = np.random.default_rng(spec.seed)
    n_users, n_items = spec.users, spec.items
    counts = _user_counts(rng, spec)
    user_f = rng.standard_normal((n_users, spec.factors)) / math.sqrt(spec.factors)
    item_f = rng.standard_normal((n_items, spec.factors))
    rank = rng.permutation(n_items) + 1.0
    log_prior = -spec.popularity_exponent * np.log(rank)

    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    items = np.empty(int(counts.sum()), np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    chunk = max(1, 2_000_000 // n_items)
    for start in range(0, n_users, chunk):
        stop = min(n_users, start + chunk)
        logits = spec.affinity * (user_f[start:stop] @ item_f.T) + log_prior
        logits += rng.gumbel(size=logits.shape)
        order = np.argsort(-logits, axis=1, kind="stable")
        for u in range(start, stop):
            picks = order[u - start, : counts[u]]
            items[offsets[u] : offsets[u + 1]] = rng.permutation(picks)

    # Per-user sessions: a start time within ~3 years, then gaps of minutes to days.
    base = 956_703_932
    starts = base + rng.integers(0, 3 * 365 * 86_400, n_users)
    gaps = rng.exponential(3_600.0, users.shape[0]).astype(np.int64) + 1
    cumulative = np.cumsum(gaps)
    first = cumulative[offsets[:-1]] - gaps[offsets[:-1]]
    timestamps = starts[users] + cumulative - np.repeat(first, counts)

    digest = hashlib.sha256()
    digest.update(repr(spec).encode())
    for array in (users, items, timestamps):
        digest.update(array.tobytes())
    return Interactions(
        user_ids=[f"u{u}" for u in range(n_users)],
        item_ids=[f"i{i}" for i in range(n_items)],
        users=users,
        items=items,
        timestamps=timestamps.astype(np.int64),
        name=(
            f"synthetic(users={n_users},items={n_items},"
            f"interactions={spec.interactions},seed={spec.seed})"
        ),
        content_hash=digest.hexdigest(),
    )


def _user_counts(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Log-normal interactions per user summing to ``spec.interactions``, within item limits."""
    cap = max(1, int(spec.items * 0.6))
    floor = min(spec.min_per_user, cap, spec.interactions // spec.users)
    weights = rng.lognormal(0.0, 1.0, spec.users)
    extra_total = spec.interactions - floor * spec.users
    counts = np.full(spec.users, floor, np.int64)
    if extra_total > 0:
        extra = np.floor(weights / weights.sum() * extra_total).astype(np.int64)
        counts += extra
        counts = np.minimum(counts, cap)
        # Hand out what flooring and the cap left over, one each, in user order.
        short = spec.interactions - int(counts.sum())
        while short > 0:
            room = np.flatnonzero(counts < cap)
            if room.size == 0:
                break
            take = room[: min(short, room.size)]
            counts[take] += 1
            short -= take.size
    return counts
