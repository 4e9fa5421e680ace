"""OpenAPI descriptions of what the handlers read themselves: path parameters and raw bodies.

The handlers take the bare request (bodies are read raw, see :mod:`service.v2.routes`), so FastAPI
cannot derive these parts of the schema; they are declared here, for ``/docs`` and for tools that
generate requests from the schema.
"""

from __future__ import annotations

from typing import Any

from service.v2.codec import DATATYPES, HEADER_LENGTH

_MODEL = {
    "name": "model",
    "in": "path",
    "required": True,
    "description": "Model name: 1 to 64 of a-z 0-9 _ . - starting with a letter or digit.",
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"},
}
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "description": "Model version: a positive integer.",
    "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
}
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
                {"name": "user", "shape": [2], "datatype": "INT64", "data": [1, 1]},
                {"name": "item", "shape": [2], "datatype": "INT64", "data": [3, 7]},
            ]
        }
    ],
}
_REPOSITORY_BODIES = {
    "repository_index": {
        "type": "object",
        "properties": {"ready": {"type": "boolean", "description": "Only READY entries."}},
    },
    "repository_load": {"type": "object", "properties": {"parameters": {"type": "object"}}},
    "repository_unload": {"type": "object", "properties": {"parameters": {"type": "object"}}},
}


def path_parameters(path: str) -> list[dict[str, Any]]:
    """The ``model`` and ``version`` parameters a route path holds."""
    return [p for p in (_MODEL, _VERSION) if "{" + str(p["name"]) + "}" in path]


def operation_extra(path: str, name: str) -> dict[str, Any]:
    """What to add to the generated OpenAPI operation of route ``name`` at ``path``."""
    extra: dict[str, Any] = {}
    parameters = path_parameters(path)
    if name == "infer":
        parameters = [*parameters, _HEADER_LENGTH, _ENCODING]
        extra["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": INFER_REQUEST},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": f"JSON header of {HEADER_LENGTH} bytes, then tensor data.",
                },
            },
        }
    elif name in _REPOSITORY_BODIES:
        extra["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": _REPOSITORY_BODIES[name]}},
        }
    if parameters:
        extra["parameters"] = parameters
    return extra
