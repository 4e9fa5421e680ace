"""``recserve import``: publish an ONNX model trained elsewhere as the next version of a model.

Read the file, map its tensors to the signature (the two-id one, or a ``--signature`` file for
feature models), adapt the graph (:mod:`training.onnx_import`), check that ONNX Runtime loads it and
that it scores as the original on sampled rows (:mod:`training.import_check`), and publish it with
its vocabularies (and, for a feature model, the feature tables its signature names) through
``modelrepo.write_version``.

Exit status: 0 published, 2 bad input (flags, files, a graph that cannot be mapped), 3 the adapted
graph does not reproduce the original's outputs (nothing published).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import onnx
from pydantic import ValidationError

from modelrepo import (
    InputSpec,
    Manifest,
    PublishedVersion,
    Role,
    Signature,
    Source,
    VersionError,
    Vocabulary,
    is_model_name,
    two_id_signature,
    write_version,
)
from modelrepo.errors import describe
from modelrepo.layout import ITEMS_FILE, MODEL_NAME_PATTERN, MODEL_NAME_RULE, USERS_FILE
from modelrepo.tables import Table, parse_table
from training.exits import EXIT_OK, EXIT_PARITY, EXIT_USAGE, command_parser, fail, positive_int
from training.import_check import parity
from training.onnx_import import (
    ImportFailure,
    TensorMap,
    adapt,
    load_graph,
    resolve_mapping,
    table_rows,
)

KIND = "imported"
HELP = "Publish an ONNX model trained elsewhere as the next version of a model."
_TWO_ID = two_id_signature(2, 2)  # the names and roles; the rows come from the ids


def _pair(text: str) -> tuple[str, str]:
    name, sep, tensor = text.partition("=")
    if not sep or not name or not tensor:
        raise argparse.ArgumentTypeError(f"expected SIGNATURE_NAME=GRAPH_TENSOR, got {text!r}")
    return name, tensor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``import`` flags to ``parser``."""
    parser.add_argument("onnx_file", type=Path, metavar="MODEL.onnx", help="the ONNX model")
    parser.add_argument("--model", required=True, metavar="NAME", help="model name to publish")
    parser.add_argument(
        "--repository", type=Path, required=True, metavar="DIR", help="model repository root"
    )
    mapping = parser.add_argument_group("mapping (signature name = graph tensor name)")
    mapping.add_argument(
        "--input", type=_pair, action="append", default=[], metavar="NAME=TENSOR",
        help="the graph input that takes signature input NAME (two-id signature: user, item)",
    )  # fmt: skip
    mapping.add_argument(
        "--output", type=_pair, action="append", default=[], metavar="NAME=TENSOR",
        help="the graph output that gives signature output NAME (two-id signature: score)",
    )  # fmt: skip
    mapping.add_argument(
        "--signature", type=Path, metavar="FILE.json",
        help="the signature of a feature model (default: user and item ids -> score)",
    )  # fmt: skip
    ids = parser.add_argument_group(
        "ids (line r of a file is row r of the graph's table; without one, ids are row numbers)"
    )
    ids.add_argument("--users", type=Path, metavar="FILE", help="user ids, one per line")
    ids.add_argument("--items", type=Path, metavar="FILE", help="item ids, one per line")
    ids.add_argument(
        "--vocabulary", type=_pair, action="append", default=[], metavar="FILE_NAME=FILE",
        help="ids of another vocabulary a --signature names",
    )  # fmt: skip
    ids.add_argument("--n-users", type=positive_int, metavar="N", help="users without --users")
    ids.add_argument("--n-items", type=positive_int, metavar="N", help="items without --items")
    parser.add_argument(
        "--table", type=_pair, action="append", default=[], metavar="FILE_NAME=FILE.npz",
        help="a feature table a --signature names (user_features.npz, item_features.npz): "
        "one array per input that is looked up in it, aligned with the id rows",
    )  # fmt: skip
    check = parser.add_argument_group("check")
    check.add_argument(
        "--tolerance", type=float, default=1e-5,
        help="largest |adapted - original| allowed on the sampled rows",
    )  # fmt: skip
    check.add_argument("--sample-rows", type=positive_int, default=256, metavar="N")
    check.add_argument("--seed", type=int, default=0, help="seed of the sampled rows")


@dataclass(frozen=True)
class ImportResult:
    published: PublishedVersion
    parity_error: float
    changes: tuple[str, ...]
    unknown: dict[str, str]


class ParityFailure(RuntimeError):
    """The adapted graph's outputs differ from the original's by more than the tolerance."""


def import_model(args: argparse.Namespace) -> ImportResult:
    """Adapt, check and publish; raises :class:`ImportFailure` or :class:`ParityFailure`."""
    if not is_model_name(args.model):
        raise ImportFailure(
            f"--model {args.model!r} must match {MODEL_NAME_PATTERN.pattern} ({MODEL_NAME_RULE})"
        )
    if args.repository.exists() and not args.repository.is_dir():
        raise ImportFailure(f"--repository {args.repository} is not a directory")
    source = _read_bytes(args.onnx_file)
    model = load_graph(args.onnx_file)
    template = _signature_file(args.signature) if args.signature else _TWO_ID
    mapping = resolve_mapping(
        model,
        [spec.name for spec in template.inputs],
        [spec.name for spec in template.outputs],
        _pairs("--input", args.input),
        _pairs("--output", args.output),
    )
    given = _given_vocabularies(args, template)
    if args.signature:
        if args.n_users or args.n_items:
            raise ImportFailure("--n-users and --n-items go without --signature: it gives n_rows")
        signature = template
        for spec in signature.inputs:
            _check_rows(model, spec, mapping.inputs[spec.name])
    else:
        users = _id_count(model, mapping, "user", given.get(USERS_FILE), args.n_users)
        items = _id_count(model, mapping, "item", given.get(ITEMS_FILE), args.n_items)
        signature = two_id_signature(users + 1, items + 1)
    vocabularies = _vocabularies(signature, given)
    tables = _tables(signature, args.table)
    adapted = adapt(model, signature, mapping)
    error = parity(model, adapted.model, signature, mapping, rows=args.sample_rows, seed=args.seed)
    if not error <= args.tolerance:
        raise ParityFailure(
            f"the adapted graph differs from the original by {error:.3g} > --tolerance "
            f"{args.tolerance:g}; nothing was published"
        )
    manifest = Manifest(
        kind=KIND,
        signature=signature,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source={
            "file": args.onnx_file.name,
            "sha256": hashlib.sha256(source).hexdigest(),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "ir_version": model.ir_version,
            "opset": max((o.version for o in model.opset_import if o.domain == ""), default=0),
        },
        mapping={"inputs": mapping.inputs, "outputs": mapping.outputs},
        adaptations=list(adapted.changes),
        unknown_rows=adapted.unknown,
        parity_max_abs_error=error,
        parity_rows=args.sample_rows,
    )
    repository = args.repository
    try:
        published = write_version(
            repository, args.model, manifest, adapted.model, vocabularies, tables=tables
        )
    except OSError as exc:
        raise ImportFailure(f"cannot publish into {repository}: {exc.strerror or exc}") from None
    return ImportResult(published, error, adapted.changes, adapted.unknown)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImportFailure(f"cannot read {path}: {exc.strerror or exc}") from None


def _pairs(flag: str, pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    mapped: dict[str, str] = {}
    for name, tensor in pairs:
        if name in mapped:
            raise ImportFailure(f"{flag} {name}= is given twice")
        mapped[name] = tensor
    return mapped


def _signature_file(path: Path) -> Signature:
    try:
        return Signature.model_validate_json(_read_bytes(path))
    except ValidationError as exc:
        raise ImportFailure(f"--signature {path}: {describe(exc, most=1)}") from None


def _read_ids(flag: str, path: Path) -> Vocabulary:
    try:
        return Vocabulary.parse(_read_bytes(path).decode("utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise ImportFailure(f"{flag} {path}: not UTF-8 text ({exc.reason})") from None
    except VersionError as exc:
        raise ImportFailure(f"{flag} {exc}") from None


def _given_vocabularies(args: argparse.Namespace, template: Signature) -> dict[str, Vocabulary]:
    """The id files given, by the vocabulary file name the signature gives them."""
    given: dict[str, Vocabulary] = {}
    named = {spec.vocabulary for spec in template.inputs if spec.vocabulary}
    flags = (("--users", args.users, Source.USER), ("--items", args.items, Source.ITEM))
    for flag, path, source in flags:
        if path is None:
            continue
        spec = template.one_from(source)
        if spec is None or spec.vocabulary is None:
            raise ImportFailure(f"{flag}: the signature has no input that takes the {source}")
        given[spec.vocabulary] = _read_ids(flag, path)
    for name, file in args.vocabulary:
        if name not in named or name in given:
            raise ImportFailure(
                f"--vocabulary {name}=: the signature's vocabularies are {sorted(named)}, "
                f"given once each"
            )
        given[name] = _read_ids("--vocabulary", Path(file))
    return given


def _check_rows(model: onnx.ModelProto, spec: InputSpec, tensor: str) -> None:
    """An id or bag input of the signature file has no more rows than the embedding tables its
    graph input indexes: an id's tables get the unknown row prepended, a bag's rows (a graph
    that takes integer rows, padding 0 included) index them as they are."""
    if spec.role is Role.DENSE or spec.n_rows is None:
        return
    rows = table_rows(model, tensor)
    if rows is None:
        return
    if spec.role is Role.ID and spec.n_rows - 1 > rows:
        raise ImportFailure(
            f"signature input '{spec.name}' has n_rows {spec.n_rows} ({spec.n_rows - 1} ids), "
            f"but the tables graph input '{tensor}' indexes have {rows} rows"
        )
    if spec.role is Role.MULTI_HOT and spec.n_rows > rows:
        raise ImportFailure(
            f"signature input '{spec.name}' has n_rows {spec.n_rows} (padding row 0 and "
            f"{spec.n_rows - 1} categories), but the tables graph input '{tensor}' indexes have "
            f"{rows} rows"
        )


def _tables(signature: Signature, given: Sequence[tuple[str, str]]) -> dict[str, Table]:
    """The feature tables the signature names, each read from its --table file and checked
    against the signature as a server will read it."""
    named = signature.tables()
    files = dict(given)
    if len(files) != len(given) or set(files) != set(named):
        raise ImportFailure(
            f"--table: the signature looks its features up in {sorted(named)}, each given once "
            f"as --table FILE_NAME=FILE.npz; given {sorted(name for name, _ in given)}"
        )
    tables: dict[str, Table] = {}
    for name, file in files.items():
        data = _read_bytes(Path(file))
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise ImportFailure(f"--table {name}={file}: not a NumPy .npz file")
        try:
            tables[name] = parse_table(data, name, signature)
        except VersionError as exc:
            raise ImportFailure(f"--table {name}={file}: {exc}") from None
    return tables


def _id_count(
    model: onnx.ModelProto, mapping: TensorMap, name: str, ids: Vocabulary | None, n: int | None
) -> int:
    """How many ids the input ``name`` of the two-id signature knows: the id file's, the flag's,
    or the rows of the tables its graph input indexes; never more than those rows."""
    tensor = mapping.inputs[name]
    rows = table_rows(model, tensor)
    if ids is not None and n is not None:
        raise ImportFailure(f"--{name}s and --n-{name}s: give one")
    count = len(ids) if ids is not None else n if n is not None else rows
    if count is None:
        raise ImportFailure(
            f"cannot tell how many {name}s the graph knows: graph input '{tensor}' does not only "
            f"index embedding tables; pass --{name}s FILE or --n-{name}s N"
        )
    if rows is not None and count > rows:
        what = f"--{name}s has {count} ids" if ids is not None else f"--n-{name}s is {count}"
        raise ImportFailure(
            f"{what}, but the tables graph input '{tensor}' indexes have {rows} rows"
        )
    return count


def _vocabularies(signature: Signature, given: dict[str, Vocabulary]) -> dict[str, Vocabulary]:
    """The vocabulary of every file the signature names: the ids given, or the row numbers."""
    vocabularies: dict[str, Vocabulary] = {}
    for spec in signature.inputs:
        if spec.vocabulary is None or spec.n_rows is None:
            continue
        vocabulary = given.get(spec.vocabulary)
        if vocabulary is None:
            vocabulary = Vocabulary([str(row) for row in range(spec.n_rows - 1)])
        if vocabulary.n_rows != spec.n_rows:
            raise ImportFailure(
                f"{spec.vocabulary}: {len(vocabulary)} ids given, but signature input "
                f"'{spec.name}' has n_rows {spec.n_rows} (its ids and the unknown row 0)"
            )
        vocabularies[spec.vocabulary] = vocabulary
    return vocabularies


def summary(result: ImportResult) -> str:
    """What was published and how the graph was adapted, for the terminal."""
    published = result.published
    lines = [
        f"published {published.model_name} version {published.version} -> {published.path}",
        *(f"  {change}" for change in result.changes),
        *(f"  unknown {name} ids: {how}" for name, how in result.unknown.items()),
        f"parity max |adapted - original| = {result.parity_error:.2e} "
        f"on {published.manifest.records()['parity_rows']} rows",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``recserve import`` with parsed flags; returns the exit status."""
    try:
        result = import_model(args)
    except ImportFailure as exc:
        return fail(exc, EXIT_USAGE)
    except ParityFailure as exc:
        return fail(exc, EXIT_PARITY)
    print(summary(result))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    return command_parser("recserve import", HELP, add_arguments)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
