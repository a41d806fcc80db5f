"""The ``requestState`` protection of each mount (multi-round-trip requests, 2026-07-28).

A server answering ``input_required`` hands the client an opaque ``requestState`` that the client echoes on
its next round, which another worker may serve. The SDK's ``RequestStateBoundary`` middleware seals and
verifies it; ``MCPServer`` installs one under a key of this process only, which fails every round served by
another worker. The gateway serves each mount's 2026-07-28 requests with a copy of the mount's server whose
boundary uses:

- the mount's codec, from :func:`codec_for`, **the one seam** for the codec: a Django-signing
  ``mcp_gateway.request_state.SignedRequestStateCodec(mount_prefix)`` when that module exists, else the SDK's
  AES-GCM codec under a key derived from ``SECRET_KEY`` and the mount (shared by every worker of the site,
  distinct per mount);
- :func:`gateway_principal` as the principal: the state is bound to the user and the credential of the
  request that received it, so another user, or the same user with another credential, cannot replay it;
- the mount's prefix as the audience.
"""

from __future__ import annotations

import copy
import importlib
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

# The module another piece of the gateway provides the mount codec from, once merged.
CODEC_MODULE = "mcp_gateway.request_state"


def codec_for(prefix: str) -> RequestStateCodec:
    """The codec sealing ``requestState`` for the mount at ``prefix`` (see the module docstring)."""
    try:
        module = importlib.import_module(CODEC_MODULE)
    except ModuleNotFoundError as missing:
        if missing.name != CODEC_MODULE:
            raise
    else:
        codec: RequestStateCodec = module.SignedRequestStateCodec(prefix)
        return codec
    key = salted_hmac("mcp_gateway.modern.state", prefix, algorithm="sha256").digest()
    return AESGCMRequestStateCodec([key])


def gateway_principal(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """Who a round's state belongs to: the gateway's caller (user and credential) of the request serving it."""
    request = ctx.request
    if not isinstance(request, GatewayRequestContext):
        return None
    return request.principal or None


def per_request_server(server: Server[Any], prefix: str) -> Server[Any]:
    """A shallow copy of ``server`` whose ``requestState`` boundary is the mount's (its other middleware kept).

    The copy shares the server's handlers, so tools and subscriptions are the same; the mount's server object
    itself, which handshake-era sessions run, is left as it is.
    """
    security = RequestStateSecurity(codec=codec_for(prefix), bind_principal=gateway_principal, audience=prefix)
    clone = copy.copy(server)
    clone.middleware = [m for m in server.middleware if not isinstance(m, RequestStateBoundary)]
    clone.middleware.append(RequestStateBoundary(security, default_audience=prefix))
    return clone
