"""OpenAPI descriptions of the V2 operations: what the handlers read themselves (raw bodies and
headers), what they answer, and the statuses each can refuse with.

The handlers take the bare request (bodies are read raw, see :mod:`service.v2.routes`), so FastAPI
cannot derive these parts of the schema; they are declared here, for ``/docs`` and for tools that
generate requests from the schema (the path's parameters and the edge's refusals:
service.http.routing). The request schemas say what the decoder (:mod:`service.v2.codec`)
accepts: a document they call valid is refused only for what a schema cannot know (the model's
tensor names, shapes and id ranges, the element count a shape needs).
"""

from __future__ import annotations

from typing import Any

from modelrepo import two_id_signature
from service.http.routing import OpenApi, json_body, json_content, refusal
from service.v2.codec import BINARY_TYPE, DATATYPES, HEADER_LENGTH, JSON_TYPE

HEALTH = ("health",)
SERVER = ("server",)
MODELS = ("models",)
STATISTICS = ("statistics",)
INFERENCE = ("inference",)
REPOSITORY = ("repository",)

_HEADER_LENGTH = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "description": "Binary tensor extension: bytes of JSON before the binary tensor data.",
    "schema": {"type": "integer", "minimum": 0},
}
_NULLABLE_BOOL = {"type": ["boolean", "null"]}
_PARAMETERS = "Parameters of the extension; null is the same as absent."


def _parameters(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": ["object", "null"],
        "description": _PARAMETERS,
        "properties": properties,
        "additionalProperties": False,
    }


_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "One of the model's inputs."},
        "shape": {
            "type": "array",
            "maxItems": 8,
            "items": {"type": "integer", "minimum": 0},
            "description": "Sizes; their product is the number of values in `data`.",
        },
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "parameters": _parameters({}),
        "data": {
            "type": ["array", "number", "boolean"],
            "description": "Row-major values, flat or nested (one value for shape []).",
        },
    },
}
_REQUESTED_OUTPUT = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "description": "One of the model's outputs."},
        "parameters": _parameters({"binary_data": _NULLABLE_BOOL}),
    },
}


# The example request is one for the collaborative-filtering models' signature.
_EXAMPLE = two_id_signature(n_user_rows=2, n_item_rows=8)
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": ["string", "null"], "description": "Echoed in the answer."},
        "parameters": _parameters({"binary_data_output": _NULLABLE_BOOL}),
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {"type": ["array", "null"], "items": _REQUESTED_OUTPUT},
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
_TENSOR_FIELDS: dict[str, Any] = {
    "name": {"type": "string"},
    "datatype": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer"}},
}
_TENSOR_METADATA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": _TENSOR_FIELDS,
}
_INPUT_METADATA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        **_TENSOR_FIELDS,
        "parameters": {
            "type": "object",
            "description": "A feature input only: its role (id, multi_hot, dense), where /v1 "
            "takes it from (source, feature, caller) and, for a standardised number, the mean "
            "and std of each column, comma-separated.",
            "additionalProperties": {"type": "string"},
        },
    },
}
_OUTPUT_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        **_TENSOR_FIELDS,
        "data": {"type": "array"},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
    },
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _OUTPUT_TENSOR},
    },
}
INFER = OpenApi(
    summary="Run the model on the request's tensors (KServe V2, binary tensor extension).",
    tags=INFERENCE,
    request_body={
        "required": True,
        "description": "JSON, or with the binary tensor extension a JSON header of "
        f"`{HEADER_LENGTH}` bytes followed by the tensors' bytes. The body may be compressed, "
        "with `Content-Encoding: gzip` or `deflate`.",
        "content": {
            JSON_TYPE: {"schema": INFER_REQUEST},
            BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    parameters=(_HEADER_LENGTH,),
    ok={
        "description": "The outputs: JSON, or a JSON header followed by the outputs asked for in "
        f"binary (`{HEADER_LENGTH}` gives the header's length).",
        "headers": {
            HEADER_LENGTH: {
                "description": "Present when outputs follow in binary.",
                "schema": {"type": "integer", "minimum": 0},
            }
        },
        "content": {
            JSON_TYPE: {"schema": INFER_RESPONSE},
            BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    refusals=(400, 404, 500, 503),
)

_READY = {"type": "object", "required": ["ready"], "properties": {"ready": {"const": True}}}
LIVE = OpenApi(
    summary="Liveness: the process answers.",
    tags=HEALTH,
    ok=json_content(
        {"type": "object", "required": ["live"], "properties": {"live": {"const": True}}},
        "The server is live.",
    ),
)
READY = OpenApi(
    summary="Readiness: every model the repository holds was tried, and the server is not "
    "draining.",
    tags=HEALTH,
    ok=json_content(_READY, "The server is ready."),
    responses={503: refusal(503, "The server is not ready yet, or is shutting down.", retry=False)},
)
SERVER_METADATA = OpenApi(
    summary="The server's name, version and protocol extensions.",
    tags=SERVER,
    ok=json_content(
        {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Server metadata.",
    ),
)
_STATS = json_content(
    {
        "type": "object",
        "required": ["model_stats"],
        "properties": {"model_stats": {"type": "array", "items": {"type": "object"}}},
    },
    "Triton's statistics, one entry per version.",
)
ALL_STATS = OpenApi(summary="Statistics of every ready version.", tags=STATISTICS, ok=_STATS)
# Per model, with or without a version: 400 for a name or version that cannot exist, 404 for one
# the server does not hold, 503 while the version is not ready.
_PER_MODEL = (400, 404, 503)
MODEL_STATS = OpenApi(
    summary="Statistics of the model's versions (or of one).",
    tags=STATISTICS,
    ok=_STATS,
    refusals=_PER_MODEL,
)
MODEL_METADATA = OpenApi(
    summary="The model's versions, inputs and outputs, and the version's recorded metrics.",
    tags=MODELS,
    ok=json_content(
        {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _INPUT_METADATA},
                "outputs": {"type": "array", "items": _TENSOR_METADATA},
                "parameters": {
                    "type": "object",
                    "description": "The version's kind, created_at, dataset and the test figures "
                    "its run recorded (hr@10, ndcg@10, auc, popularity_hr@10, ...); a key the "
                    "version does not record is absent.",
                    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                },
            },
        },
        "Model metadata.",
    ),
    refusals=_PER_MODEL,
)
MODEL_READY = OpenApi(
    summary="Whether the model (or the version) is ready; 503 while it is not.",
    tags=MODELS,
    ok=json_content(_READY, "The version is ready."),
    refusals=_PER_MODEL,
)
MODEL_CONFIG = OpenApi(
    summary="The version's configuration, as Triton's model configuration.",
    tags=MODELS,
    ok=json_content({"type": "object"}, "Model configuration."),
    refusals=_PER_MODEL,
)

_INDEX = json_content(
    {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "version", "state"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string"},
                "reason": {"type": "string"},
            },
        },
    },
    "The index. Without credentials each reason is worded by the server (e.g. `failed to load`); "
    "with the admin token, the full reason.",
)
_INDEX_SUMMARY = "Every model and version the repository holds, with its state (read-only)."

REPOSITORY_INDEX = OpenApi(
    summary=_INDEX_SUMMARY,
    tags=REPOSITORY,
    request_body=json_body(
        {
            "type": "object",
            "properties": {
                "ready": {"type": ["boolean", "null"], "description": "Only READY entries."}
            },
        },
        required=False,
    ),
    ok=_INDEX,
    refusals=(400, 403),
)
MODEL_INDEX = OpenApi(summary=_INDEX_SUMMARY, tags=REPOSITORY, ok=_INDEX, refusals=(403,))


_NO_OVERRIDES = {
    "type": ["object", "null"],
    "description": "Loading with a configuration or files in the request is not supported.",
    "not": {"required": ["config"]},
    "propertyNames": {"not": {"pattern": "^file:"}},
}


def _repository_action(summary: str, body: dict[str, Any]) -> OpenApi:
    return OpenApi(
        summary=summary,
        tags=REPOSITORY,
        request_body=json_body(body, required=False),
        ok=json_content({"type": "object", "maxProperties": 0}, "Done."),
        refusals=(400, 401, 403, 404),
        admin_token=True,
    )


REPOSITORY_LOAD = _repository_action(
    "Load (or reload) the model's versions now.",
    {"type": "object", "properties": {"parameters": _NO_OVERRIDES}},
)
REPOSITORY_UNLOAD = _repository_action(
    "Stop serving the model until it is loaded again.", {"type": "object"}
)
