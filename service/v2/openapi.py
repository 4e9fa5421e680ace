"""OpenAPI descriptions of what the V2 handlers read themselves: raw bodies and headers.

The handlers take the bare request (bodies are read raw, see :mod:`service.v2.routes`), so FastAPI
cannot derive these parts of the schema; they are declared here, for ``/docs`` and for tools that
generate requests from the schema (the path's parameters: service.http.routing).
"""

from __future__ import annotations

from modelrepo import two_id_signature
from service.http.routing import OpenApi, json_body
from service.v2.codec import DATATYPES, HEADER_LENGTH

_ENCODING = {
    "name": "Content-Encoding",
    "in": "header",
    "required": False,
    "description": "The body's compression.",
    "schema": {"type": "string", "enum": ["identity", "gzip", "deflate"]},
}
_HEADER_LENGTH = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "description": "Binary tensor extension: bytes of JSON before the binary tensor data.",
    "schema": {"type": "integer", "minimum": 0},
}

# The example request is one for the collaborative-filtering models' signature.
_EXAMPLE = two_id_signature(n_user_rows=2, n_item_rows=8)
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": [*DATATYPES, "BYTES"]},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
        "data": {"type": "array", "description": "Row-major values, flat or nested."},
    },
}
_REQUESTED_OUTPUT = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_output": {"type": "boolean"}},
        },
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {"type": "array", "items": _REQUESTED_OUTPUT},
    },
    "examples": [
        {
            "inputs": [
                {"name": spec.name, "shape": [2], "datatype": spec.dtype, "data": data}
                for spec, data in zip(_EXAMPLE.inputs, ([1, 1], [3, 7]), strict=True)
            ]
        }
    ],
}
INFER = OpenApi(
    request_body={
        "required": True,
        "content": {
            "application/json": {"schema": INFER_REQUEST},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"JSON header of {HEADER_LENGTH} bytes, then tensor data.",
            },
        },
    },
    parameters=(_HEADER_LENGTH, _ENCODING),
)
REPOSITORY_INDEX = OpenApi(
    request_body=json_body(
        {
            "type": "object",
            "properties": {"ready": {"type": "boolean", "description": "Only READY entries."}},
        },
        required=False,
    )
)
REPOSITORY_ACTION = OpenApi(
    request_body=json_body(
        {"type": "object", "properties": {"parameters": {"type": "object"}}}, required=False
    )
)
