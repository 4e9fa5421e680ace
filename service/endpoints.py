"""Every endpoint of the server, declared once: name, paths, method, handler, OpenAPI, inference.

The FastAPI routes, the fast path's routes and the metrics' list of inference endpoints (in-flight
gauges, latency histograms) are all derived from this table (service.http.routing.build_routes),
so a new endpoint is added here and nowhere else. Order matters: routes are matched in it
(``/v2/models/stats`` before ``/v2/models/{model}``) and the OpenAPI document lists them in it.

An *inference* endpoint is admitted through service.http.admission, answered by the fast path
(service.http.fastpath), timed in ``recserve_request_duration_seconds`` and counted in
``recserve_inflight_requests``.
"""

from __future__ import annotations

from service.http.routing import Endpoint, Handler, OpenApi, build_routes, per_version
from service.v1 import routes as v1
from service.v2 import openapi as doc
from service.v2 import repository
from service.v2 import routes as v2

_V2_MODEL = "/v2/models/{model}"
_V1_MODEL = "/v1/models/{model}"
_REPOSITORY = "/v2/repository"


def _inference(name: str, model_path: str, handler: Handler, openapi: OpenApi) -> Endpoint:
    """A ``POST`` to ``<model_path>[/versions/{version}]/<name>`` that runs inference."""
    return Endpoint(name, per_version(model_path, f"/{name}"), handler, "POST", True, openapi)


def _per_model(name: str, suffix: str, handler: Handler, openapi: OpenApi) -> Endpoint:
    """A ``GET`` of ``/v2/models/{model}[/versions/{version}]<suffix>``."""
    return Endpoint(name, per_version(_V2_MODEL, suffix), handler, openapi=openapi)


def _repository(name: str, path: str, handler: Handler, openapi: OpenApi) -> Endpoint:
    return Endpoint(f"repository_{name}", (_REPOSITORY + path,), handler, "POST", openapi=openapi)


ENDPOINTS: tuple[Endpoint, ...] = (
    # KServe V2: health, server, repository
    Endpoint("health_live", ("/v2/health/live",), v2.health_live, openapi=doc.LIVE),
    Endpoint("health_ready", ("/v2/health/ready",), v2.health_ready, openapi=doc.READY),
    Endpoint("server_metadata", ("/v2",), v2.server_metadata, openapi=doc.SERVER_METADATA),
    Endpoint("model_stats", ("/v2/models/stats",), v2.all_model_stats, openapi=doc.ALL_STATS),
    Endpoint("model_index", ("/v2/models",), repository.models, openapi=doc.MODEL_INDEX),
    _repository("index", "/index", repository.index, doc.REPOSITORY_INDEX),
    _repository("load", "/models/{model}/load", repository.load, doc.REPOSITORY_LOAD),
    _repository("unload", "/models/{model}/unload", repository.unload, doc.REPOSITORY_UNLOAD),
    # KServe V2: per model, with or without a version
    _per_model("model_metadata", "", v2.model_metadata, doc.MODEL_METADATA),
    _per_model("model_ready", "/ready", v2.model_ready, doc.MODEL_READY),
    _per_model("model_config", "/config", v2.model_config, doc.MODEL_CONFIG),
    _per_model("model_stats", "/stats", v2.model_stats, doc.MODEL_STATS),
    _inference("infer", _V2_MODEL, v2.infer, doc.INFER),
    # The recommendation API
    _inference("recommend", _V1_MODEL, v1.recommend_endpoint, v1.RECOMMEND),
    _inference("score", _V1_MODEL, v1.score_endpoint, v1.SCORE),
)

# The groups of /docs, in order, with what each holds.
TAGS: tuple[dict[str, str], ...] = (
    {"name": "health", "description": "Liveness and readiness probes (KServe V2)."},
    {"name": "server", "description": "Server metadata (KServe V2)."},
    {"name": "models", "description": "A model's metadata, readiness and configuration."},
    {"name": "inference", "description": "Inference on tensors (KServe V2)."},
    {"name": "recommendation", "description": "Top-k items and scores by raw ids (/v1)."},
    {"name": "statistics", "description": "Triton's per-version statistics."},
    {
        "name": "repository",
        "description": "The model repository: what it holds, and load or unload with the admin "
        "token (Authorize).",
    },
)

__all__ = ["ENDPOINTS", "TAGS", "build_routes"]
