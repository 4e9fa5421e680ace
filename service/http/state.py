"""What every route reaches through ``request.app.state``: settings, metrics, lifecycle, models.

Handlers find served versions through the read-only :class:`Registry`; only the repository API
asks the :class:`Reconciler` to load or unload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from service.errors import ModelNotReady
from service.http.lifecycle import Lifecycle
from service.metrics.families import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.models.reconciler import Reconciler
    from service.models.registry import Registry

STATE_KEY = "recserve"


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    lifecycle: Lifecycle
    reconciler: Reconciler | None = None  # set once the lifespan has started it


def app_state(request: Request) -> AppState:
    state: AppState = getattr(request.app.state, STATE_KEY)
    return state


def get_reconciler(request: Request) -> Reconciler:
    reconciler = app_state(request).reconciler
    if reconciler is None:
        raise ModelNotReady("the server is starting; models are not loaded yet")
    return reconciler


def get_registry(request: Request) -> Registry:
    return get_reconciler(request).registry
