"""Protocol 2026-07-28: self-contained requests, served per request in the worker that receives them.

The transport is :mod:`mcp_gateway.transports.modern`; this package holds what it needs besides HTTP: the
SDK's private pieces in one place (:mod:`.sdk`), the mounts' server lifespans entered once per worker
(:mod:`.lifespan`) and the ``requestState`` protection of each mount (:mod:`.state`).
"""
