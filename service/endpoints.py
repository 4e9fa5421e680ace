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
from service.v2 import repository
from service.v2 import routes as v2
from service.v2.openapi import INFER, REPOSITORY_ACTION, REPOSITORY_INDEX

_V2_MODEL = "/v2/models/{model}"
_V1_MODEL = "/v1/models/{model}"
_REPOSITORY = "/v2/repository"


def _inference(name: str, model_path: str, handler: Handler, openapi: OpenApi) -> Endpoint:
    """A ``POST`` to ``<model_path>[/versions/{version}]/<name>`` that runs inference."""
    return Endpoint(name, per_version(model_path, f"/{name}"), handler, "POST", True, openapi)


def _repository(name: str, path: str, handler: Handler, openapi: OpenApi) -> Endpoint:
    return Endpoint(f"repository_{name}", (_REPOSITORY + path,), handler, "POST", openapi=openapi)


ENDPOINTS: tuple[Endpoint, ...] = (
    # KServe V2: health, server, repository
    Endpoint("health_live", ("/v2/health/live",), v2.health_live),
    Endpoint("health_ready", ("/v2/health/ready",), v2.health_ready),
    Endpoint("server_metadata", ("/v2",), v2.server_metadata),
    Endpoint("model_stats", ("/v2/models/stats",), v2.all_model_stats),
    _repository("index", "/index", repository.index, REPOSITORY_INDEX),
    _repository("load", "/models/{model}/load", repository.load, REPOSITORY_ACTION),
    _repository("unload", "/models/{model}/unload", repository.unload, REPOSITORY_ACTION),
    # KServe V2: per model, with or without a version
    Endpoint("model_metadata", per_version(_V2_MODEL), v2.model_metadata),
    Endpoint("model_ready", per_version(_V2_MODEL, "/ready"), v2.model_ready),
    Endpoint("model_config", per_version(_V2_MODEL, "/config"), v2.model_config),
    Endpoint("model_stats", per_version(_V2_MODEL, "/stats"), v2.model_stats),
    _inference("infer", _V2_MODEL, v2.infer, INFER),
    # The recommendation API
    _inference("recommend", _V1_MODEL, v1.recommend_endpoint, v1.RECOMMEND),
    _inference("score", _V1_MODEL, v1.score_endpoint, v1.SCORE),
)

__all__ = ["ENDPOINTS", "build_routes"]
