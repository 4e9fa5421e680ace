"""The KServe V2 / Open Inference Protocol REST API (the protocol Triton speaks)."""

from service.v2.routes import create_router

__all__ = ["create_router"]
