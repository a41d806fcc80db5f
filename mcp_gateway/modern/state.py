"""The ``requestState`` protection of each mount (multi-round-trip requests, 2026-07-28).

A server answering ``input_required`` hands the client an opaque ``requestState`` that the client echoes on
its next round, which another worker may serve. The SDK's ``RequestStateBoundary`` middleware seals and
verifies it; ``MCPServer`` installs one under a key of this process only, which fails every round served by
another worker. The gateway serves each mount's 2026-07-28 requests with a copy of the mount's server whose
boundary uses:

- the gateway's own boundary, ``mcp_gateway.request_state.install_request_state(server, prefix)`` (a
  Django-signing codec bound to user, credential and mount), when that module exists: **the one seam**,
  :func:`per_request_server`;
- until then, the SDK's AES-GCM codec under a key derived from ``SECRET_KEY`` and the mount (shared by every
  worker of the site, distinct per mount), :func:`gateway_principal` (user and credential) as the principal,
  and the mount's prefix as the audience.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from django.utils.crypto import salted_hmac
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.request_state import (
    AESGCMRequestStateCodec,
    RequestStateBoundary,
    RequestStateCodec,
    RequestStateSecurity,
)

from ..context import GatewayRequestContext

# The module that provides the gateway's own requestState boundary, once merged (install_request_state).
GATEWAY_MODULE = "mcp_gateway.request_state"


def credential_fingerprint(credential: Any) -> str:
    """What a request's context names its credential by: the authenticator's fingerprint, or the login's hash."""
    return str(credential.fingerprint or credential.login_session_hash or f"{credential.scheme}:{credential.user.pk}")


def _gateway_module() -> Any:
    """The gateway's request-state module if this package has one (not a copy another checkout's install exposes)."""
    spec = importlib.util.find_spec(GATEWAY_MODULE)
    if spec is None or spec.origin is None or Path(spec.origin).parent != Path(__file__).resolve().parent.parent:
        return None
    return importlib.import_module(GATEWAY_MODULE)


def fallback_codec(prefix: str) -> RequestStateCodec:
    """Until the gateway's codec is there: the SDK's AES-GCM under a key from ``SECRET_KEY`` and the mount."""
    return AESGCMRequestStateCodec([salted_hmac("mcp_gateway.modern.state", prefix, algorithm="sha256").digest()])


def gateway_principal(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """Who a round's state belongs to (fallback boundary): the user and credential of the request serving it."""
    request = ctx.request
    if not isinstance(request, GatewayRequestContext) or not request.credential_fingerprint:
        return None
    return f"{request.user.pk}:{request.credential_fingerprint}"


def per_request_server(server: Server[Any], prefix: str) -> Server[Any]:
    """A shallow copy of ``server`` whose ``requestState`` boundary is the mount's (its other middleware kept).

    The one seam: ``mcp_gateway.request_state.install_request_state(server, prefix)`` when that module exists,
    else the SDK's boundary with :func:`fallback_codec` and :func:`gateway_principal`. The copy shares the
    server's handlers, so tools and subscriptions are the same; the mount's server object itself, which
    handshake-era sessions run, is left as it is.
    """
    clone = copy.copy(server)
    clone.middleware = list(server.middleware)
    module = _gateway_module()
    if module is not None:
        module.install_request_state(clone, prefix)
        return clone
    security = RequestStateSecurity(codec=fallback_codec(prefix), bind_principal=gateway_principal, audience=prefix)
    clone.middleware = [m for m in clone.middleware if not isinstance(m, RequestStateBoundary)]
    clone.middleware.append(RequestStateBoundary(security, default_audience=prefix))
    return clone
