"""The recommendation API's endpoints: ``/v1/models/{m}[/versions/{v}]/recommend`` and ``/score``.

Bodies are read raw and validated by pydantic from JSON bytes in one step (no intermediate dicts);
the models are still declared in the OpenAPI schema, with examples, for ``/docs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.errors import InvalidInput
from service.http.request_body import while_connected
from service.models.manager import LoadedVersion
from service.v1.recommend import recommend, score
from service.v1.schemas import RecommendRequest, RecommendResponse, ScoreRequest, ScoreResponse
from service.v2.openapi import path_parameters
from service.v2.routes import admit

_Model = TypeVar("_Model", bound=BaseModel)
_ERROR_SCHEMA = {
    "description": "Invalid request, unknown model, or the server is overloaded",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
        }
    },
}


def validation_message(exc: ValidationError) -> str:
    """One line naming each offending field, e.g. ``k: Input should be less than ...``."""
    problems = []
    for error in exc.errors(include_url=False)[:10]:
        field = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{field}: {error['msg']}")
    return "invalid request: " + "; ".join(problems)


def parse(model: type[_Model], body: bytes) -> _Model:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from None


def _openapi(path: str, model: type[BaseModel], response: type[BaseModel]) -> dict[str, Any]:
    return {
        "openapi_extra": {
            "parameters": path_parameters(path),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": model.model_json_schema()}},
            },
        },
        "responses": {
            200: {"model": response, "description": "Success"},
            400: _ERROR_SCHEMA,
            404: _ERROR_SCHEMA,
            413: _ERROR_SCHEMA,
            503: _ERROR_SCHEMA,
        },
    }


Handler = Callable[[LoadedVersion, bytes], Awaitable[dict[str, Any]]]


def _endpoint(name: str, handle: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        body, loaded, inflight = await admit(request, name)
        try:
            content = await while_connected(request, handle(loaded, body))
        finally:
            inflight.dec()
        return Response(orjson.dumps(content), media_type="application/json")

    return endpoint


async def _recommend(loaded: LoadedVersion, body: bytes) -> dict[str, Any]:
    request = parse(RecommendRequest, body)
    result = await recommend(loaded, request)
    return {
        "model_name": loaded.name,
        "model_version": str(loaded.version),
        "user_id": request.user_id,
        "items": [
            {"item_id": item, "score": value}
            for item, value in zip(result.item_ids, result.scores, strict=True)
        ],
        "unknown": {"user_id": result.unknown_user, "item_ids": result.unknown_items},
    }


async def _score(loaded: LoadedVersion, body: bytes) -> dict[str, Any]:
    request = parse(ScoreRequest, body)
    scores, unknown_user, unknown_items = await score(loaded, request)
    return {
        "model_name": loaded.name,
        "model_version": str(loaded.version),
        "user_id": request.user_id,
        "scores": scores,
        "unknown": {"user_id": unknown_user, "item_ids": unknown_items},
    }


def create_router() -> APIRouter:
    router = APIRouter(tags=["recommendation"])
    endpoints: list[tuple[str, Handler, type[BaseModel], type[BaseModel], str]] = [
        ("recommend", _recommend, RecommendRequest, RecommendResponse,
         "Top-k items for a user, best first (ties broken by item id)."),
        ("score", _score, ScoreRequest, ScoreResponse,
         "One score per item, in the order given."),
    ]  # fmt: skip
    for name, handle, request_model, response_model, summary in endpoints:
        for prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
            path = f"{prefix}/{name}"
            router.add_api_route(
                path,
                _endpoint(name, handle),
                methods=["POST"],
                name=name,
                summary=summary,
                response_class=Response,
                **_openapi(path, request_model, response_model),
            )
    return router
