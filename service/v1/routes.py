"""The recommendation API's handlers: ``/v1/models/{m}[/versions/{v}]/recommend`` and ``/score``.

Bodies are read raw and validated by pydantic from JSON bytes in one step (no intermediate dicts);
the models are still declared in the OpenAPI schema (:data:`RECOMMEND`, :data:`SCORE`, used by
the endpoint table in service.endpoints), with examples, for ``/docs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.errors import InvalidInput, describe_problems
from service.http.admission import admitted
from service.http.request_body import while_connected
from service.http.routing import OpenApi, json_body
from service.v1.recommend import recommend, score
from service.v1.schemas import RecommendRequest, RecommendResponse, ScoreRequest, ScoreResponse

if TYPE_CHECKING:
    from service.models.served import ServedVersion

_Model = TypeVar("_Model", bound=BaseModel)


def _openapi(summary: str, body: type[BaseModel], response: type[BaseModel]) -> OpenApi:
    return OpenApi(
        summary=summary,
        tags=("recommendation",),
        request_body=json_body(body.model_json_schema()),
        ok={"model": response, "description": "Success."},
        refusals=(400, 404, 500, 503),
    )


RECOMMEND = _openapi(
    "Top-k items for a user, best first (ties broken by item id).",
    RecommendRequest,
    RecommendResponse,
)
SCORE = _openapi("One score per item, in the order given.", ScoreRequest, ScoreResponse)


def parse(model: type[_Model], body: bytes) -> _Model:
    """The body as ``model``; 400 naming each offending field (at most ten)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = describe_problems(exc.errors(include_url=False), limit=10, whole="body")
        raise InvalidInput(f"invalid request: {problems}") from None


Handle = Callable[["ServedVersion", bytes], Awaitable[dict[str, Any]]]


async def _answer(request: Request, handle: Handle) -> Response:
    async def run(body: bytes, served: ServedVersion) -> dict[str, Any]:
        return await while_connected(request, handle(served, body))

    content = await admitted(request, run)
    return Response(orjson.dumps(content), media_type="application/json")


async def _recommend(served: ServedVersion, body: bytes) -> dict[str, Any]:
    request = parse(RecommendRequest, body)
    result = await recommend(served, request)
    return {
        "model_name": served.name,
        "model_version": str(served.version),
        "user_id": request.user_id,
        "items": [
            {"item_id": item, "score": value}
            for item, value in zip(result.item_ids, result.scores, strict=True)
        ],
        "unknown": {"user_id": result.unknown_user, "item_ids": result.unknown_items},
        "mode": result.mode.value,
    }


async def _score(served: ServedVersion, body: bytes) -> dict[str, Any]:
    request = parse(ScoreRequest, body)
    scores, unknown_user, unknown_items = await score(served, request)
    return {
        "model_name": served.name,
        "model_version": str(served.version),
        "user_id": request.user_id,
        "scores": scores,
        "unknown": {"user_id": unknown_user, "item_ids": unknown_items},
    }


async def recommend_endpoint(request: Request) -> Response:
    return await _answer(request, _recommend)


async def score_endpoint(request: Request) -> Response:
    return await _answer(request, _score)
