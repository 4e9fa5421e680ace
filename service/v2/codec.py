"""KServe V2 inference request decoding and response encoding, JSON and binary tensor extension.

A request body is a JSON header, optionally followed by raw tensor bytes (binary tensor data
extension): the header's length is given by ``Inference-Header-Content-Length`` and each binary
input by ``parameters.binary_data_size``, in input order. Binary inputs are decoded as read-only
NumPy views of the body, without copies. Responses are encoded with orjson; outputs asked for in
binary follow the JSON header in output order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput, not_utf8

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"

# KServe V2 datatype -> little-endian NumPy dtype (BYTES is not taken by this server's models).
DATATYPES: Mapping[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_DATATYPE_OF = {(dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items()}
# Element kinds NumPy infers from JSON numbers that each target kind accepts without loss.
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
_MAX_RANK = 8


@dataclass(frozen=True)
class RequestedOutput:
    """An entry of the request's ``outputs``; ``binary`` is None when the request did not say."""

    name: str
    binary: bool | None


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...] | None  # None: every output of the model
    binary_data_output: bool  # request-level default for outputs that do not say


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    media_type: str
    header_length: int | None  # set when binary outputs follow the JSON header


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The KServe datatype name of a NumPy dtype."""
    name = _DATATYPE_OF.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise InvalidInput(f"no KServe datatype for NumPy dtype {dtype}")
    return name


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int checked against the body."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        raise InvalidInput(f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}")
    length = int(value)
    if length > body_length:
        raise InvalidInput(
            f"{HEADER_LENGTH} is {length} but the request body has only {body_length} bytes"
        )
    return length


def decode_infer_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse an inference request body; raises :class:`InvalidInput` saying what is wrong."""
    json_end = len(body) if header_length is None else header_length
    header = memoryview(body)[:json_end]
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        # orjson words a bad byte as a string problem; say which byte of the body it is.
        not_text = not_utf8(header)
        if not_text is not None:
            raise InvalidInput(f"request body is {not_text}") from None
        raise InvalidInput(f"request header is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("request header must be a JSON object")

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = _optional_object(doc, "parameters", "request")
    binary_data_output = _optional_bool(parameters, "binary_data_output", "request parameters")

    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    offset = json_end  # where the next binary input starts in the body
    for raw in raw_inputs:
        name, array, offset = _decode_input(raw, body, offset)
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given more than once")
        inputs[name] = array
    if offset != len(body):
        raise InvalidInput(
            f"the body holds {len(body) - json_end} bytes after the JSON header but the inputs' "
            f"binary_data_size add up to {offset - json_end}"
        )

    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_decode_outputs(doc.get("outputs")),
        binary_data_output=bool(binary_data_output),
    )


def select_outputs(
    requested: Sequence[RequestedOutput] | None,
    available: Sequence[str],
    binary_data_output: bool,
) -> list[tuple[str, bool]]:
    """Names of the outputs to return, in answer order, each with whether it goes in binary."""
    if requested is None:
        return [(name, binary_data_output) for name in available]
    known = set(available)
    chosen: list[tuple[str, bool]] = []
    for out in requested:
        if out.name not in known:
            raise InvalidInput(
                f"unknown output '{out.name}'; the model's outputs are: {', '.join(available)}"
            )
        chosen.append((out.name, binary_data_output if out.binary is None else out.binary))
    return chosen


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
) -> EncodedResponse:
    """Encode ``(name, array, binary)`` outputs as a V2 response (JSON header + binary tail)."""
    entries: list[dict[str, Any]] = []
    tail: list[np.ndarray] = []
    for name, array, binary in outputs:
        datatype = datatype_of(array.dtype)
        flat = np.ascontiguousarray(array.reshape(-1), dtype=DATATYPES[datatype])
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": flat.nbytes}
            tail.append(flat)
        else:
            entry["data"] = flat
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tail:
        return EncodedResponse(header, JSON_TYPE, None)
    body = b"".join([header, *(t.data.cast("B") for t in tail)])
    return EncodedResponse(body, BINARY_TYPE, len(header))


def _decode_input(raw: Any, body: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(raw, dict):
        raise InvalidInput("each entry of 'inputs' must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("each input needs a 'name' string")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input '{name}' needs a 'datatype' string")
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"input '{name}' has unsupported datatype {datatype!r}; "
            f"expected one of {', '.join(DATATYPES)}"
        )
    shape = _decode_shape(name, raw.get("shape"))
    count = math.prod(shape)
    parameters = _optional_object(raw, "parameters", f"input '{name}'")
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"input '{name}': shared memory is not supported by this server")
    size = parameters.get("binary_data_size")
    has_data = "data" in raw
    if size is None:
        if not has_data:
            raise InvalidInput(f"input '{name}' has neither 'data' nor binary_data_size")
        return name, _json_tensor(name, datatype, dtype, shape, count, raw["data"]), offset
    if has_data:
        raise InvalidInput(f"input '{name}' has both 'data' and binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
    expected = count * dtype.itemsize
    if size != expected:
        raise InvalidInput(
            f"input '{name}': binary_data_size is {size} bytes but shape {list(shape)} "
            f"of {datatype} needs {expected}"
        )
    if offset + size > len(body):
        raise InvalidInput(
            f"input '{name}': its {size} bytes of binary data run past the end of the body "
            f"({len(body) - offset} bytes left)"
        )
    if count == 0:
        return name, _empty(name, shape, dtype), offset
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
    return name, array, offset + size


def _decode_shape(name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) > _MAX_RANK:
        raise InvalidInput(f"input '{name}': 'shape' must be a list of at most {_MAX_RANK} sizes")
    for dim in raw:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise InvalidInput(f"input '{name}': shape {raw} must hold non-negative integers only")
    return tuple(raw)


def _json_tensor(
    name: str, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], count: int, data: Any
) -> np.ndarray:
    """A tensor from JSON ``data`` (flat or nested, row-major), checked element by element."""
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(
            f"input '{name}': 'data' must be a flat or evenly nested list of numbers"
        ) from None
    if array.size != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} holds {count} elements but 'data' has "
            f"{array.size}"
        )
    if count == 0:
        return _empty(name, shape, dtype)
    if array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        if dtype.kind in "iu" and array.dtype.kind in "fO":
            # Integers that no one NumPy type holds together (3 and 2**64 - 1; -1 and 2**64 - 1)
            # are read as floats or objects: read them again, exactly, as the datatype.
            objects = np.array(data, dtype=object).reshape(-1)
            if all(type(value) is int for value in objects):
                _check_range(name, datatype, dtype, objects)
                return objects.astype(dtype).reshape(shape)
        raise InvalidInput(
            f"input '{name}': 'data' does not match datatype {datatype} "
            f"(found {_kind_name(array.dtype.kind)} values)"
        )
    if dtype.kind in "iu" and not np.can_cast(array.dtype, dtype):  # narrowing: check the range
        _check_range(name, datatype, dtype, array.reshape(-1))
    return array.astype(dtype, copy=False).reshape(shape)


def _check_range(name: str, datatype: str, dtype: np.dtype[Any], flat: np.ndarray) -> None:
    """Refuse the first value of ``flat`` (integers) that ``dtype`` cannot hold, as sent."""
    info = np.iinfo(dtype)
    outside = np.flatnonzero((flat < info.min) | (flat > info.max))
    if outside.size:
        at = int(outside[0])
        raise InvalidInput(
            f"input '{name}' value {int(flat[at])} at index {at} is out of range for datatype "
            f"{datatype}"
        )


def _empty(name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    try:
        return np.empty(shape, dtype=dtype)
    except ValueError:
        raise InvalidInput(f"input '{name}': shape {list(shape)} is too large") from None


def _kind_name(kind: str) -> str:
    return {
        "b": "boolean",
        "i": "integer",
        "u": "integer",
        "f": "floating-point",
        "U": "string",
    }.get(kind, "non-numeric")


def _decode_outputs(raw: Any) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput("each entry of 'outputs' must be an object with a 'name' string")
        name = entry["name"]
        if name in seen:
            raise InvalidInput(f"output '{name}' is asked for more than once")
        seen.add(name)
        parameters = _optional_object(entry, "parameters", f"output '{name}'")
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in parameters:
                raise InvalidInput(f"output '{name}': {unsupported} is not supported")
        outputs.append(
            RequestedOutput(name, _optional_bool(parameters, "binary_data", f"output '{name}'"))
        )
    return tuple(outputs)


def _optional_object(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: '{key}' must be a JSON object")
    return value


def _optional_bool(parameters: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{where}: '{key}' must be true or false")
    return value
