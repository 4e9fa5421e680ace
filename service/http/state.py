"""What every route reaches through ``request.app.state``: settings, metrics, lifecycle, manager."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from service.errors import ModelNotReady
from service.http.lifecycle import Lifecycle
from service.metrics.families import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.models.manager import ModelManager

STATE_KEY = "recserve"


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    lifecycle: Lifecycle
    manager: ModelManager | None = None  # set once the lifespan has started it


def app_state(request: Request) -> AppState:
    state: AppState = getattr(request.app.state, STATE_KEY)
    return state


def get_manager(request: Request) -> ModelManager:
    manager = app_state(request).manager
    if manager is None:
        raise ModelNotReady("the server is starting; models are not loaded yet")
    return manager


def set_labels(request: Request, model: str, version: str) -> None:
    """Model and version labels of the request's metrics; only for a model that was found."""
    request.state.metric_model = model
    request.state.metric_version = version
