"""The ``requestState`` protection of each mount (multi-round-trip requests, 2026-07-28).

A server answering ``input_required`` hands the client an opaque ``requestState`` that the client echoes on
its next round, which another worker may serve. The SDK's ``RequestStateBoundary`` middleware seals and
verifies it; ``MCPServer`` installs one under a key of this process only, which fails every round served by
another worker. The gateway serves each mount's 2026-07-28 requests with a copy of the mount's server whose
boundary is the gateway's own (:func:`mcp_gateway.request_state.install_request_state`: a Django-signing
codec bound to user, credential and mount): **the one seam**, :func:`per_request_server`.
"""

from __future__ import annotations

import copy
from typing import Any

from mcp.server.lowlevel import Server

from ..request_state import install_request_state


def credential_fingerprint(credential: Any) -> str:
    """What a request's context names its credential by: the authenticator's fingerprint, or the login's hash."""
    return str(credential.fingerprint or credential.login_session_hash or f"{credential.scheme}:{credential.user.pk}")


def per_request_server(server: Server[Any], prefix: str) -> Server[Any]:
    """A shallow copy of ``server`` whose ``requestState`` boundary is the mount's (its other middleware kept).

    The copy shares the server's handlers, so tools and subscriptions are the same; the mount's server object
    itself, which handshake-era sessions run, is left as it is.
    """
    clone = copy.copy(server)
    clone.middleware = list(server.middleware)
    install_request_state(clone, prefix)
    return clone
