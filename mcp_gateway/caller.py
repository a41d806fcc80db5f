"""What a request's :class:`~mcp_gateway.context.GatewayRequestContext` says of its credential, made in one place.

Both ways the gateway runs a mount's server (a handshake-era session's actor, a 2026-07-28 request) build their
contexts from the request's :class:`~mcp_gateway.auth.Credential` with :func:`credential_fields`.
"""

from __future__ import annotations

from typing import Any

from .auth import Credential
from .modern.state import credential_fingerprint
from .usage import credential_ref


def credential_fields(credential: Credential) -> dict[str, Any]:
    """The context's fields naming ``credential``: fingerprint, kind and reference, token, OAuth client, scopes."""
    kind, ref = credential_ref(credential)
    return {
        "user": credential.user,
        "credential_fingerprint": credential_fingerprint(credential),
        "credential_kind": str(kind),
        "credential_ref": ref,
        "token_id": credential.token_id,
        "client_id": credential.client_id,
        "scopes": credential.scopes,
    }
