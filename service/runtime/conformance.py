"""Does a graph take and give what the version's signature declares? The signature is the contract.

Every input of the signature must be an input of the graph with the same datatype and a compatible
shape (each dimension equal, or dynamic in the graph), and the graph may take nothing else, since
nothing would feed it. Every output of the signature must be an output of the graph; further graph
outputs are computed but not served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from modelrepo import InputSpec, OutputSpec, Signature
from service.errors import ModelLoadError
from service.runtime.session import TensorSpec


def signature_specs(signature: Signature) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs of a signature as served (V2 metadata, the Triton config)."""
    return _specs(signature.inputs), _specs(signature.outputs)


def _specs(declared: Sequence[InputSpec | OutputSpec]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(spec.name, spec.dtype, spec.shape) for spec in declared)


def check_graph(
    signature: Signature, inputs: Iterable[TensorSpec], outputs: Iterable[TensorSpec]
) -> None:
    """Raise :class:`ModelLoadError` unless the graph's inputs and outputs fit the signature."""
    got_in = {spec.name: spec for spec in inputs}
    got_out = {spec.name: spec for spec in outputs}
    wanted_in, wanted_out = signature_specs(signature)
    if set(got_in) != {spec.name for spec in wanted_in}:
        raise ModelLoadError(
            f"model inputs {sorted(got_in)} do not match the contract "
            f"{sorted(spec.name for spec in wanted_in)}"
        )
    missing = sorted(spec.name for spec in wanted_out if spec.name not in got_out)
    if missing:
        raise ModelLoadError(f"model has no output {missing} (outputs: {sorted(got_out)})")
    _check_specs("input", got_in, wanted_in)
    _check_specs("output", got_out, wanted_out)


def _check_specs(kind: str, graph: Mapping[str, TensorSpec], wanted: Iterable[TensorSpec]) -> None:
    for spec in wanted:
        found = graph[spec.name]
        if found.datatype != spec.datatype:
            raise ModelLoadError(
                f"model {kind} '{spec.name}' has datatype {found.datatype}, "
                f"expected {spec.datatype}"
            )
        if not _fits(found.shape, spec.shape):
            raise ModelLoadError(
                f"model {kind} '{spec.name}' has shape {list(found.shape)}, "
                f"expected {list(spec.shape)}"
            )


def _fits(graph: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    """A dimension the signature leaves free (-1, the batch) must be free in the graph too."""
    return len(graph) == len(declared) and all(
        g == d or g == -1 for g, d in zip(graph, declared, strict=True)
    )
