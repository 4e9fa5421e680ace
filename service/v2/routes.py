"""KServe V2 (Open Inference Protocol) REST handlers, as Triton serves them.

Thin handlers: find the version through the shared admission step (service.http.admission),
decode, infer, encode. Their paths, names and OpenAPI are declared once, in the endpoint table
(service.endpoints). Errors are raised as :class:`service.errors.ServingError` and answered in
one place (service.http.answers). Request bodies are read raw (never parsed by FastAPI):
tritonclient sends binary tensors with no Content-Type. The tensors a version takes and returns
are read from its signature (:attr:`ServedVersion.inputs`, :attr:`ServedVersion.outputs`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ServingError
from service.http.admission import admitted, resolve
from service.http.answers import error_response
from service.http.request_body import while_connected
from service.http.state import app_state, get_registry
from service.models.state import State
from service.v2.codec import (
    HEADER_LENGTH,
    JSON_TYPE,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    select_outputs,
)

if TYPE_CHECKING:
    from modelrepo import Manifest, Signature
    from service.models.served import ServedVersion
    from service.runtime.session import TensorSpec

SERVER_NAME = "recserve"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration", "statistics")


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON_TYPE)


@functools.cache
def server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "0.0.0"


def triton_config(served: ServedVersion) -> dict[str, Any]:
    """The version's configuration in Triton's model-config JSON form."""
    config = served.config
    batching = config.batching
    specs = (*served.inputs, *served.outputs)
    batched = all(spec.shape[:1] == (-1,) for spec in specs)

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = list(spec.shape[1:] if batched else spec.shape)
        data_type = "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"
        return {"name": spec.name, "data_type": data_type, "dims": dims}

    on_gpu = served.provider.startswith("CUDA")
    return {
        "name": served.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": config.version_policy.to_triton(),
        "max_batch_size": batching.max_batch_rows if batched else 0,
        "input": [tensor(spec) for spec in served.inputs],
        "output": [tensor(spec) for spec in served.outputs],
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
                "name": f"{served.name}_0",
                "kind": "KIND_GPU" if on_gpu else "KIND_CPU",
                "count": batching.concurrent_runs,
            }
        ],
        "parameters": {
            "queue_capacity_rows": {"string_value": str(batching.queue_capacity_rows)},
            "execution_provider": {"string_value": served.provider},
            "intra_op_threads": {"string_value": str(config.intra_op_threads)},
            **{
                f"input.{name}.{key}": {"string_value": value}
                for name, described in feature_parameters(served.signature).items()
                for key, value in described.items()
            },
        },
    }


def _tensor_metadata(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [spec.to_dict() for spec in specs]


def _input_metadata(served: ServedVersion) -> list[dict[str, Any]]:
    """The input tensors; a feature input's also carries ``parameters`` (see
    :func:`feature_parameters`). The two id inputs stay as Triton describes them."""
    described = feature_parameters(served.signature)
    return [
        {**spec.to_dict(), "parameters": described[spec.name]}
        if spec.name in described
        else spec.to_dict()
        for spec in served.inputs
    ]


def feature_parameters(signature: Signature) -> dict[str, dict[str, str]]:
    """What a V2 caller needs to build each feature input's tensor, by input name: its ``role``
    (``id``, ``multi_hot``: rows of its vocabulary, 0 = unknown or padding; ``dense``:
    standardised numbers), where ``/v1`` takes it from (``source``, ``feature``, ``caller``) and,
    for a standardised one, the ``mean`` and ``std`` of each column (comma-separated)."""
    described: dict[str, dict[str, str]] = {}
    for spec in signature.inputs:
        if spec.feature is None:
            continue
        described[spec.name] = {
            "role": spec.role.value,
            "source": spec.source.value,
            "feature": spec.feature,
            "caller": spec.caller,
        }
        if spec.mean is not None and spec.std is not None:
            described[spec.name]["mean"] = ",".join(map(repr, spec.mean))
            described[spec.name]["std"] = ",".join(map(repr, spec.std))
    return described


_TEST_FIGURES = re.compile(r"(hr|ndcg)@\d+|auc")


def _figures(value: Any, prefix: str = "") -> dict[str, float]:
    """The ranking figures of one metrics record (``hr@10``, ``ndcg@10``, ``auc``), finite ones."""
    if not isinstance(value, dict):
        return {}
    return {
        prefix + key: float(figure)
        for key, figure in value.items()
        if _TEST_FIGURES.fullmatch(key)
        and isinstance(figure, int | float)
        and not isinstance(figure, bool)
        and math.isfinite(figure)
    }


def _text(record: Any, key: str) -> str | None:
    value = record.get(key) if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def metadata_parameters(manifest: Manifest) -> dict[str, str | float]:
    """What a dashboard or a deploy script compares versions by, flat: the kind, the creation
    time, the dataset, what the published model was trained on (``trained_on``: a refit saw every
    interaction, its figures are those of the model its run evaluated), and the test figures the
    run recorded with the popularity baseline's on the same candidates (``popularity_hr@10``...).
    A key the manifest does not record is left out: an imported version has no figures."""
    records = manifest.records()
    metrics = records.get("metrics")
    test = metrics.get("test") if isinstance(metrics, dict) else None
    test = test if isinstance(test, dict) else {}
    described: dict[str, Any] = {
        "kind": manifest.kind,
        "created_at": manifest.created_at,
        "dataset": _text(records.get("dataset"), "name"),
        "trained_on": _text(records.get("published_model"), "trained_on"),
    }
    return {
        **{key: value for key, value in described.items() if isinstance(value, str)},
        **_figures(test.get("model")),
        **_figures(test.get("popularity"), "popularity_"),
    }


# -- health and server ---------------------------------------------------------------------------


async def health_live(request: Request) -> Response:
    return json_response({"live": True})


async def health_ready(request: Request) -> Response:
    state = app_state(request)
    if state.lifecycle.draining:
        return error_response(request.scope, 503, "the server is shutting down")
    if state.reconciler is None or not state.reconciler.registry.ready:
        return error_response(request.scope, 503, "the server is not ready")
    return json_response({"ready": True})


async def server_metadata(request: Request) -> Response:
    return json_response(
        {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}
    )


# -- per model -------------------------------------------------------------------------------------


async def model_metadata(request: Request) -> Response:
    served = resolve(request)
    versions = get_registry(request).versions(served.name)
    return json_response(
        {
            "name": served.name,
            "versions": [str(v) for v in versions],
            "platform": PLATFORM,
            "inputs": _input_metadata(served),
            "outputs": _tensor_metadata(served.outputs),
            "parameters": metadata_parameters(served.manifest),
        }
    )


async def model_ready(request: Request) -> Response:
    resolve(request)
    return json_response({"ready": True})


async def model_config(request: Request) -> Response:
    return json_response(triton_config(resolve(request)))


async def model_stats(request: Request) -> Response:
    registry = get_registry(request)
    served = resolve(request)
    if "version" in request.path_params:
        entries = [served.stats.to_triton()]
    else:
        versions = registry.versions(served.name)
        entries = [registry.get(served.name, v).stats.to_triton() for v in versions]
    return json_response({"model_stats": entries})


async def all_model_stats(request: Request) -> Response:
    registry = get_registry(request)
    entries: list[dict[str, Any]] = []
    for entry in registry.index():
        if entry.state != State.READY:
            continue
        try:
            entries.append(registry.get(entry.name, int(entry.version)).stats.to_triton())
        except ServingError:
            continue  # unloaded between the index and the lookup
    return json_response({"model_stats": entries})


async def infer(request: Request) -> Response:
    async def handle(body: bytes, served: ServedVersion) -> Response:
        header_length = parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
        decoded = decode_infer_request(body, header_length)
        chosen = select_outputs(
            decoded.outputs, [s.name for s in served.outputs], decoded.binary_data_output
        )
        results = await while_connected(request, served.infer(decoded.inputs))
        encoded = encode_infer_response(
            model_name=served.name,
            model_version=str(served.version),
            request_id=decoded.id,
            outputs=[(name, results[name], binary) for name, binary in chosen],
        )
        headers = {}
        if encoded.header_length is not None:
            headers[HEADER_LENGTH] = str(encoded.header_length)
        return Response(encoded.body, media_type=encoded.media_type, headers=headers)

    return await admitted(request, handle)
