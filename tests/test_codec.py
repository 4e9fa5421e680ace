"""KServe V2 codec: JSON and binary tensor decoding, response encoding, compressed bodies."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from service.errors import InvalidInput, PayloadTooLarge
from service.http.request_body import decompress
from service.v2.codec import (
    BINARY_TYPE,
    DATATYPES,
    JSON_TYPE,
    RequestedOutput,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    select_outputs,
)

GZIP_WBITS = 16 + zlib.MAX_WBITS


def _json(doc: object) -> bytes:
    return orjson.dumps(doc)


def _tensor(
    name: str, data: object, shape: list[int], datatype: str = "INT64"
) -> dict[str, object]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _binary_body(
    arrays: dict[str, np.ndarray], datatype: str = "INT64", extra: dict[str, object] | None = None
) -> tuple[bytes, int]:
    inputs = [
        {
            "name": name,
            "shape": list(a.shape),
            "datatype": datatype,
            "parameters": {"binary_data_size": a.nbytes},
        }
        for name, a in arrays.items()
    ]
    header = _json({"inputs": inputs, **(extra or {})})
    return header + b"".join(a.tobytes() for a in arrays.values()), len(header)


def test_json_inputs_flat_and_nested_become_typed_arrays() -> None:
    body = _json(
        {
            "id": "req-1",
            "inputs": [
                _tensor("user", [1, 2, 3, 4], [4]),
                _tensor("item", [[5, 6], [7, 8]], [2, 2], "INT32"),
                _tensor("weight", [1, 2.5], [2], "FP32"),
            ],
        }
    )
    request = decode_infer_request(body)
    assert request.id == "req-1"
    assert request.outputs is None
    assert not request.binary_data_output
    np.testing.assert_array_equal(request.inputs["user"], [1, 2, 3, 4])
    assert request.inputs["user"].dtype == np.int64
    assert request.inputs["item"].dtype == np.int32
    assert request.inputs["item"].shape == (2, 2)
    np.testing.assert_array_equal(request.inputs["weight"], np.array([1.0, 2.5], np.float32))
    assert request.inputs["weight"].dtype == np.float32


def test_flat_data_is_reshaped_to_the_declared_shape() -> None:
    request = decode_infer_request(_json({"inputs": [_tensor("x", [1, 2, 3, 4, 5, 6], [2, 3])]}))
    np.testing.assert_array_equal(request.inputs["x"], [[1, 2, 3], [4, 5, 6]])


def test_binary_inputs_are_views_of_the_body_without_copies() -> None:
    users = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    items = np.array([9, 2, 6, 5, 3], dtype=np.int64)
    body, header_length = _binary_body({"user": users, "item": items})
    request = decode_infer_request(body, header_length)
    np.testing.assert_array_equal(request.inputs["user"], users)
    np.testing.assert_array_equal(request.inputs["item"], items)
    whole = np.frombuffer(body, dtype=np.uint8)
    for array in request.inputs.values():
        assert np.shares_memory(array, whole)
        assert not array.flags.writeable


def test_json_and_binary_inputs_mix_in_one_request() -> None:
    items = np.array([7, 8], dtype=np.int64)
    header = _json(
        {
            "inputs": [
                _tensor("user", [1, 2], [2]),
                {
                    "name": "item",
                    "shape": [2],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": 16},
                },
            ]
        }
    )
    request = decode_infer_request(header + items.tobytes(), len(header))
    np.testing.assert_array_equal(request.inputs["user"], [1, 2])
    np.testing.assert_array_equal(request.inputs["item"], items)


def test_tritonclient_request_bodies_decode() -> None:
    users = np.arange(6, dtype=np.int64)
    user = triton.InferInput("user", [6], "INT64")
    user.set_data_from_numpy(users)
    item = triton.InferInput("item", [6], "INT64")
    item.set_data_from_numpy(users[::-1].copy(), binary_data=False)
    outputs = [triton.InferRequestedOutput("score", binary_data=False)]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [user, item], outputs=outputs, request_id="abc"
    )
    request = decode_infer_request(body, header_length)
    assert request.id == "abc"
    np.testing.assert_array_equal(request.inputs["user"], users)
    np.testing.assert_array_equal(request.inputs["item"], users[::-1])
    assert request.outputs == (RequestedOutput("score", False),)


def test_request_level_binary_output_and_per_output_choice() -> None:
    body = _json(
        {
            "inputs": [_tensor("user", [1], [1])],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "b"}, {"name": "a", "parameters": {"binary_data": False}}],
        }
    )
    request = decode_infer_request(body)
    assert request.binary_data_output
    chosen = select_outputs(request.outputs, ["a", "b"], request.binary_data_output)
    assert chosen == [("b", True), ("a", False)]
    assert select_outputs(None, ["a", "b"], False) == [("a", False), ("b", False)]


def test_unknown_output_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match=r"unknown output 'nope'.*score"):
        select_outputs((RequestedOutput("nope", None),), ["score"], False)


GOOD = _tensor("user", [1, 2], [2])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (_json({}), "'inputs' must be a non-empty list"),
        (_json({"inputs": []}), "'inputs' must be a non-empty list"),
        (_json({"inputs": [5]}), "must be a JSON object"),
        (_json({"inputs": [{"shape": [1], "datatype": "INT64", "data": [1]}]}), "'name'"),
        (_json({"inputs": [_tensor("user", [1], [1], "INT65")]}), "unsupported datatype 'INT65'"),
        (_json({"inputs": [_tensor("user", ["a"], [1], "BYTES")]}), "unsupported datatype"),
        (_json({"inputs": [{**GOOD, "datatype": None}]}), "needs a 'datatype'"),
        (_json({"inputs": [{**GOOD, "shape": "2"}]}), "'shape' must be a list"),
        (_json({"inputs": [{**GOOD, "shape": [-1]}]}), "non-negative integers"),
        (_json({"inputs": [{**GOOD, "shape": [True, 2]}]}), "non-negative integers"),
        (_json({"inputs": [_tensor("user", [1, 2, 3], [2])]}), r"shape \[2\] holds 2 .* has 3"),
        (_json({"inputs": [_tensor("user", [1.5, 2], [2])]}), "does not match datatype INT64"),
        (_json({"inputs": [_tensor("user", [True, False], [2])]}), "does not match datatype"),
        (_json({"inputs": [_tensor("user", ["1", "2"], [2])]}), "found string values"),
        (_json({"inputs": [_tensor("user", [[1, 2], [3]], [3])]}), "evenly nested list"),
        (
            _json({"inputs": [_tensor("user", [1, 300], [2], "INT8")]}),
            "out of range for datatype INT8",
        ),
        (_json({"inputs": [_tensor("user", [1, 0], [2], "BOOL")]}), "does not match datatype"),
        (_json({"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]}), "neither"),
        (_json({"inputs": [GOOD, GOOD]}), "given more than once"),
        (_json({"inputs": [GOOD], "id": 5}), "'id' must be a string"),
        (_json({"inputs": [GOOD], "parameters": []}), "'parameters' must be a JSON object"),
        (
            _json({"inputs": [GOOD], "parameters": {"binary_data_output": "yes"}}),
            "'binary_data_output' must be true or false",
        ),
        (_json({"inputs": [GOOD], "outputs": {"name": "x"}}), "'outputs' must be a list"),
        (
            _json({"inputs": [GOOD], "outputs": [{"name": "s"}, {"name": "s"}]}),
            "asked for more than once",
        ),
        (
            _json(
                {"inputs": [GOOD], "outputs": [{"name": "s", "parameters": {"classification": 2}}]}
            ),
            "classification is not supported",
        ),
        (
            _json({"inputs": [{**GOOD, "parameters": {"shared_memory_region": "r"}}]}),
            "shared memory is not supported",
        ),
    ],
)
def test_malformed_json_requests_are_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(body)


def test_binary_size_must_match_the_shape_and_datatype() -> None:
    users = np.arange(4, dtype=np.int64)
    header = _json(
        {
            "inputs": [
                {
                    "name": "user",
                    "shape": [4],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    )
    with pytest.raises(InvalidInput, match=r"binary_data_size is 16 bytes .* needs 32"):
        decode_infer_request(header + users.tobytes(), len(header))


def test_binary_data_running_past_the_body_is_refused() -> None:
    body, header_length = _binary_body({"user": np.arange(4, dtype=np.int64)})
    with pytest.raises(InvalidInput, match="run past the end of the body"):
        decode_infer_request(body[:-8], header_length)


def test_unclaimed_bytes_after_the_header_are_refused() -> None:
    body, header_length = _binary_body({"user": np.arange(4, dtype=np.int64)})
    with pytest.raises(InvalidInput, match="binary_data_size add up to 32"):
        decode_infer_request(body + b"\x00" * 8, header_length)


def test_binary_size_without_a_header_length_is_refused() -> None:
    body, _ = _binary_body({"user": np.arange(2, dtype=np.int64)})
    with pytest.raises(InvalidInput):
        decode_infer_request(body)


def test_data_and_binary_size_together_are_refused() -> None:
    entry = {**GOOD, "parameters": {"binary_data_size": 16}}
    header = _json({"inputs": [entry]})
    with pytest.raises(InvalidInput, match="both 'data' and binary_data_size"):
        decode_infer_request(header + bytes(16), len(header))


@pytest.mark.parametrize("size", [-8, 1.5, True, "16"])
def test_binary_size_must_be_a_non_negative_integer(size: object) -> None:
    entry = {"name": "user", "shape": [2], "datatype": "INT64", "parameters": {}}
    entry["parameters"] = {"binary_data_size": size}
    header = _json({"inputs": [entry]})
    with pytest.raises(InvalidInput, match="binary_data_size must be a non-negative integer"):
        decode_infer_request(header + bytes(16), len(header))


@pytest.mark.parametrize(
    ("value", "message"), [("x1", "non-negative integer"), ("-3", "non-negative"), ("99", "only")]
)
def test_header_length_header_is_checked(value: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_header_length(value, 50)
    assert parse_header_length(None, 50) is None
    assert parse_header_length(" 12 ", 50) == 12


def test_empty_tensors_decode_with_their_shape() -> None:
    body, header_length = _binary_body({"user": np.zeros((0,), dtype=np.int64)})
    assert decode_infer_request(body, header_length).inputs["user"].shape == (0,)
    request = decode_infer_request(_json({"inputs": [_tensor("user", [], [0, 3])]}))
    assert request.inputs["user"].shape == (0, 3)


def test_absurd_empty_shapes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="too large"):
        decode_infer_request(_json({"inputs": [_tensor("user", [], [0, 2**62])]}))


def test_json_response_echoes_id_and_holds_flat_data() -> None:
    scores = np.array([[0.25, 0.5], [0.75, 1.0]], dtype=np.float32)
    encoded = encode_infer_response(
        model_name="m", model_version="3", request_id="r9", outputs=[("score", scores, False)]
    )
    assert encoded.media_type == JSON_TYPE
    assert encoded.header_length is None
    doc = orjson.loads(encoded.body)
    assert doc["model_name"] == "m"
    assert doc["model_version"] == "3"
    assert doc["id"] == "r9"
    assert doc["outputs"] == [
        {"name": "score", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.5, 0.75, 1.0]}
    ]


def test_response_without_request_id_has_no_id() -> None:
    encoded = encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs=[("score", np.ones(1, np.float32), False)],
    )
    assert "id" not in orjson.loads(encoded.body)


def test_binary_response_parses_with_tritonclient() -> None:
    scores = np.linspace(0, 1, 7, dtype=np.float32)
    rows = np.arange(7, dtype=np.int64)
    encoded = encode_infer_response(
        model_name="m",
        model_version="2",
        request_id=None,
        outputs=[("score", scores, True), ("row", rows, False)],
    )
    assert encoded.media_type == BINARY_TYPE
    assert encoded.header_length is not None
    header = orjson.loads(encoded.body[: encoded.header_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": scores.nbytes}
    assert len(encoded.body) == encoded.header_length + scores.nbytes
    result = triton.InferenceServerClient.parse_response_body(
        encoded.body, header_length=encoded.header_length
    )
    np.testing.assert_array_equal(result.as_numpy("score"), scores)
    np.testing.assert_array_equal(result.as_numpy("row"), rows)
    assert result.get_response()["model_version"] == "2"


def test_non_contiguous_outputs_are_encoded_in_row_major_order() -> None:
    matrix = np.arange(6, dtype=np.float32).reshape(2, 3).T  # Fortran-ordered view
    encoded = encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=[("x", matrix, True)]
    )
    assert encoded.header_length is not None
    tail = np.frombuffer(encoded.body[encoded.header_length :], dtype=np.float32)
    np.testing.assert_array_equal(tail.reshape(3, 2), matrix)


def test_gzip_and_deflate_bodies_inflate() -> None:
    data = b'{"inputs": []}' * 100
    assert decompress(gzip.compress(data), GZIP_WBITS, 10_000, "gzip") == data
    assert decompress(zlib.compress(data), zlib.MAX_WBITS, 10_000, "deflate") == data


def test_inflating_stops_at_the_limit() -> None:
    bomb = gzip.compress(bytes(50_000_000))  # ~50 KB that inflates to 50 MB
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 4096 bytes"):
        decompress(bomb, GZIP_WBITS, 4096, "gzip")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"definitely not gzip", "not valid gzip data"),
        (gzip.compress(b"x" * 1000)[:-12], "truncated"),
        (gzip.compress(b"abc") + b"junk", "trailing bytes"),
    ],
)
def test_corrupt_gzip_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decompress(data, GZIP_WBITS, 10_000, "gzip")


@pytest.mark.parametrize(
    ("datatype", "data", "at"),
    [
        ("UINT64", [1, -1], 1),
        ("UINT8", [1, 256], 1),
        ("INT32", [1, -(2**31) - 1], 1),
        ("UINT16", [1, -1], 1),
        ("INT8", [1, 128], 1),
        ("INT64", [18446744073709551615], 0),
        # No one NumPy type holds both: read as floats, still reported as the integers sent.
        ("UINT64", [18446744073709551615, -1], 1),
        ("INT64", [-1, 18446744073709551615], 1),
    ],
)
def test_json_integers_outside_the_datatype_are_refused_as_sent(
    datatype: str, data: list[int], at: int
) -> None:
    body = _json({"inputs": [_tensor("user", data, [len(data)], datatype)]})
    with pytest.raises(InvalidInput) as refused:
        decode_infer_request(body)
    assert refused.value.message == (
        f"input 'user' value {data[at]} at index {at} is out of range for datatype {datatype}"
    )


def test_the_largest_uint64_is_read_as_sent() -> None:
    """18446744073709551615 stays that number (the server's range check reports it so), not the
    -1 it would wrap to as int64."""
    values = [3, 2**64 - 1]  # NumPy reads these two together as floats
    for body, header_length in (
        (_json({"inputs": [_tensor("user", values, [2], "UINT64")]}), None),
        _binary_body({"user": np.array(values, np.uint64)}, "UINT64"),
    ):
        decoded = decode_infer_request(body, header_length).inputs["user"]
        assert decoded.dtype == np.uint64 and decoded.tolist() == [3, 18446744073709551615]


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [{"name": "us\xffer", "shape": [1], "datatype": "INT64", "data": [1]}]}',
        b'{"id": "\xed\xa0\x80", "inputs": []}',  # a UTF-8-encoded surrogate
        b'{"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "data": ["a\xc3"]}]}',
    ],
)
def test_invalid_utf8_names_the_byte(body: bytes) -> None:
    for header_length in (None, len(body)):
        with pytest.raises(InvalidInput) as refused:
            decode_infer_request(body + b"\x00" * 8 if header_length else body, header_length)
        at = min(body.find(b) for b in (b"\xff", b"\xed", b"\xc3") if b in body)
        assert refused.value.message == f"request body is not valid UTF-8 at byte {at}"


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("INT64", [-(2**63), 2**63 - 1]),
        ("UINT64", [0, 2**63 - 1]),
        ("INT32", [-(2**31), 2**31 - 1]),
        ("UINT8", [0, 255]),
    ],
)
def test_json_integers_at_the_datatype_limits_are_exact(datatype: str, values: list[int]) -> None:
    decoded = decode_infer_request(_json({"inputs": [_tensor("user", values, [2], datatype)]}))
    array = decoded.inputs["user"]
    assert array.dtype == DATATYPES[datatype] and array.tolist() == values
