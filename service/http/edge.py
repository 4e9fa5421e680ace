"""The protocol class uvicorn is given: the parser the settings name, with the edge's limits."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Literal

from service.http.limits import EdgeLimits
from service.http.protocol import Edge, QuietParserWarning
from service.settings import Settings


def edge_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """The protocol class uvicorn is given (``http=``): the parser ``settings.http_parser``
    names (httptools when installed, for ``auto``) with the edge's limits of ``settings``."""
    parser: Literal["auto", "httptools", "h11"] = settings.http_parser
    if parser == "auto":
        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    base: type[Edge]
    if parser == "httptools":
        from service.http.protocol_httptools import EdgeHttpToolsProtocol

        base = EdgeHttpToolsProtocol
    else:
        from service.http.protocol_h11 import EdgeH11Protocol

        base = EdgeH11Protocol
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietParserWarning) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(QuietParserWarning())
    return type(base.__name__, (base,), {"limits": EdgeLimits.from_settings(settings)})
