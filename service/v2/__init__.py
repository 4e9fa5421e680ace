"""The KServe V2 / Open Inference Protocol REST API (the protocol Triton speaks).

Handlers in :mod:`service.v2.routes` and :mod:`service.v2.repository`; their paths and OpenAPI in
the endpoint table, service.endpoints.
"""
