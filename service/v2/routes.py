"""KServe V2 (Open Inference Protocol) REST endpoints, as Triton serves them.

Thin handlers: validate path parameters, look the model up in the manager, decode, infer, encode.
Errors are raised as :class:`service.errors.ServingError` and answered in one place (service.app).
Request bodies are read raw (never parsed by FastAPI): tritonclient sends binary tensors with no
Content-Type.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from service.errors import InvalidInput, ServingError, ShuttingDown, Unauthorized
from service.http.request_body import read_body, while_connected
from service.http.state import app_state, get_manager, set_labels
from service.models.repository import is_model_name, parse_version
from service.v2.codec import (
    HEADER_LENGTH,
    JSON_TYPE,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    select_outputs,
)
from service.v2.openapi import operation_extra

if TYPE_CHECKING:
    from prometheus_client import Gauge

    from service.models.manager import LoadedVersion, TensorSpec

SERVER_NAME = "recserve"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration", "statistics")
_MAX_VERSION_DIGITS = 18


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON_TYPE)


def check_model_name(name: str) -> str:
    """The path's model name if it can name a model in the repository, else 400."""
    if not is_model_name(name):
        raise InvalidInput(
            "invalid model name: expected 1 to 64 of a-z 0-9 _ . - starting with a letter or digit"
        )
    return name


def check_version(raw: str | None) -> int | None:
    """The path's version as a positive integer (None when the path has none), else 400."""
    if raw is None:
        return None
    version = parse_version(raw) if len(raw) <= _MAX_VERSION_DIGITS else None
    if version is None:
        raise InvalidInput(f"invalid model version {raw[:32]!r}: expected a positive integer")
    return version


def resolve(request: Request) -> LoadedVersion:
    """The served version the path's model (and version) names; sets the metric labels."""
    name = check_model_name(request.path_params["model"])
    version = check_version(request.path_params.get("version"))
    loaded = get_manager(request).get(name, version)
    set_labels(request, loaded.name, str(loaded.version))
    return loaded


async def admit(request: Request, endpoint: str) -> tuple[bytes, LoadedVersion, Gauge]:
    """The common start of every inference endpoint (V2 infer, /v1 score and recommend).

    Refuses while draining, reads the body within the limit, then resolves the version (after the
    upload, so a version retired meanwhile is not used); returns the endpoint's in-flight gauge,
    already incremented: the caller decrements it when done.
    """
    state = app_state(request)
    if state.lifecycle.draining:
        raise ShuttingDown("the server is shutting down; send the request elsewhere")
    body = await read_body(request, state.settings.max_request_bytes)
    loaded = resolve(request)
    inflight = state.metrics.inflight_by_endpoint[endpoint]
    inflight.inc()
    return body, loaded, inflight


def check_admin(request: Request) -> None:
    """The repository API needs ``Authorization: Bearer <admin token>``; 403 otherwise."""
    token = app_state(request).settings.admin_token
    if token is None or not token.get_secret_value():
        raise Unauthorized("the repository API is disabled: no admin token is configured")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("a valid admin token is required: Authorization: Bearer <token>")


def server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "0.0.0"


def triton_config(loaded: LoadedVersion) -> dict[str, Any]:
    """The version's configuration in Triton's model-config JSON form."""
    config = loaded.config
    batching = config.batching
    specs = (*loaded.inputs, *loaded.outputs)
    batched = all(spec.shape[:1] == (-1,) for spec in specs)

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = list(spec.shape[1:] if batched else spec.shape)
        data_type = "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"
        return {"name": spec.name, "data_type": data_type, "dims": dims}

    on_gpu = loaded.provider.startswith("CUDA")
    return {
        "name": loaded.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": config.version_policy.to_triton(),
        "max_batch_size": batching.max_batch_rows if batched else 0,
        "input": [tensor(spec) for spec in loaded.inputs],
        "output": [tensor(spec) for spec in loaded.outputs],
        "dynamic_batching": {
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(batching.request_timeout_s * 1e6),
                "allow_timeout_override": False,
                "max_queue_size": 0,
            },
        },
        "instance_group": [
            {
                "name": f"{loaded.name}_0",
                "kind": "KIND_GPU" if on_gpu else "KIND_CPU",
                "count": batching.concurrent_runs,
            }
        ],
        "parameters": {
            "queue_capacity_rows": {"string_value": str(batching.queue_capacity_rows)},
            "execution_provider": {"string_value": loaded.provider},
            "intra_op_threads": {"string_value": str(config.intra_op_threads)},
        },
    }


def _tensor_metadata(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]


def create_router() -> APIRouter:
    """The V2 endpoints; fixed route names double as the ``endpoint`` metric label."""
    router = APIRouter()
    version = server_version()

    async def health_live(request: Request) -> Response:
        return json_response({"live": True})

    async def health_ready(request: Request) -> Response:
        state = app_state(request)
        if state.lifecycle.draining:
            return json_response({"error": "the server is shutting down"}, 503)
        if state.manager is None or not state.manager.ready:
            return json_response({"error": "the server is not ready"}, 503)
        return json_response({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return json_response(
            {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}
        )

    async def model_metadata(request: Request) -> Response:
        loaded = resolve(request)
        versions = get_manager(request).model_versions(loaded.name)
        return json_response(
            {
                "name": loaded.name,
                "versions": [str(v) for v in versions],
                "platform": PLATFORM,
                "inputs": _tensor_metadata(loaded.inputs),
                "outputs": _tensor_metadata(loaded.outputs),
            }
        )

    async def model_ready(request: Request) -> Response:
        resolve(request)
        return json_response({"ready": True})

    async def model_config(request: Request) -> Response:
        return json_response(triton_config(resolve(request)))

    async def model_stats(request: Request) -> Response:
        manager = get_manager(request)
        loaded = resolve(request)
        if "version" in request.path_params:
            entries = [loaded.stats.to_triton()]
        else:
            versions = manager.model_versions(loaded.name)
            entries = [manager.get(loaded.name, v).stats.to_triton() for v in versions]
        return json_response({"model_stats": entries})

    async def all_model_stats(request: Request) -> Response:
        manager = get_manager(request)
        entries: list[dict[str, Any]] = []
        for entry in manager.index():
            if entry.state != "READY":
                continue
            try:
                entries.append(manager.get(entry.name, int(entry.version)).stats.to_triton())
            except ServingError:
                continue  # unloaded between the index and the lookup
        return json_response({"model_stats": entries})

    async def infer(request: Request) -> Response:
        body, loaded, inflight = await admit(request, "infer")
        try:
            header_length = parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
            decoded = decode_infer_request(body, header_length)
            chosen = select_outputs(
                decoded.outputs, [s.name for s in loaded.outputs], decoded.binary_data_output
            )
            results = await while_connected(request, loaded.infer(decoded.inputs))
            encoded = encode_infer_response(
                model_name=loaded.name,
                model_version=str(loaded.version),
                request_id=decoded.id,
                outputs=[(name, results[name], binary) for name, binary in chosen],
            )
        finally:
            inflight.dec()
        headers = {}
        if encoded.header_length is not None:
            headers[HEADER_LENGTH] = str(encoded.header_length)
        return Response(encoded.body, media_type=encoded.media_type, headers=headers)

    async def repository_index(request: Request) -> Response:
        check_admin(request)
        options = await _json_body(request)
        ready_only = options.get("ready") is True
        entries = [
            {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
            for e in get_manager(request).index()
            if not ready_only or e.state == "READY"
        ]
        return json_response(entries)

    async def repository_load(request: Request) -> Response:
        check_admin(request)
        name = check_model_name(request.path_params["model"])
        parameters = (await _json_body(request)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        if "config" in parameters or any(key.startswith("file:") for key in parameters):
            raise InvalidInput(
                "loading with a config or files in the request is not supported; "
                "publish a version into the model repository instead"
            )
        await get_manager(request).load(name)
        return json_response({})

    async def repository_unload(request: Request) -> Response:
        check_admin(request)
        name = check_model_name(request.path_params["model"])
        await _json_body(request)
        await get_manager(request).unload(name)
        return json_response({})

    get, post = ["GET"], ["POST"]
    routes: list[tuple[str, Any, list[str], str]] = [
        ("/v2/health/live", health_live, get, "health_live"),
        ("/v2/health/ready", health_ready, get, "health_ready"),
        ("/v2", server_metadata, get, "server_metadata"),
        ("/v2/models/stats", all_model_stats, get, "model_stats"),
        ("/v2/repository/index", repository_index, post, "repository_index"),
        ("/v2/repository/models/{model}/load", repository_load, post, "repository_load"),
        ("/v2/repository/models/{model}/unload", repository_unload, post, "repository_unload"),
    ]
    per_model = [
        ("", model_metadata, get, "model_metadata"),
        ("/ready", model_ready, get, "model_ready"),
        ("/config", model_config, get, "model_config"),
        ("/stats", model_stats, get, "model_stats"),
        ("/infer", infer, post, "infer"),
    ]
    for suffix, endpoint, methods, name in per_model:
        routes.append((f"/v2/models/{{model}}{suffix}", endpoint, methods, name))
        routes.append(
            (f"/v2/models/{{model}}/versions/{{version}}{suffix}", endpoint, methods, name)
        )
    for path, endpoint, methods, name in routes:
        router.add_api_route(
            path,
            endpoint,
            methods=methods,
            name=name,
            response_class=Response,
            openapi_extra=operation_extra(path, name) or None,
        )
    return router


async def _json_body(request: Request) -> dict[str, Any]:
    """An optional small JSON object body (repository API); empty means ``{}``."""
    body = await read_body(request, app_state(request).settings.max_request_bytes)
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object")
    return doc
