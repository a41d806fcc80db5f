"""What a request's :class:`~mcp_gateway.context.GatewayRequestContext` says of its credential, made in one place.

Both ways the gateway runs a mount's server (a handshake-era session's actor, a 2026-07-28 request) build their
contexts from the request's :class:`~mcp_gateway.auth.Credential` with :func:`credential_fields`. A session's
messages each carry the credential their request presented (:func:`caller_fields`), which the actor puts in that
message's context (:func:`context_overrides`): scopes and records follow the request, not the session's opener.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .auth import Credential
from .modern.state import credential_fingerprint
from .usage import credential_ref
from .wire import CallerFields


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


def caller_fields(credential: Credential) -> CallerFields:
    """What a client message carries to its session of the credential it came with (it may cross the layer)."""
    kind, ref = credential_ref(credential)
    return {
        "credential_kind": str(kind),
        "credential_ref": ref,
        "token_id": credential.token_id,
        "client_id": credential.client_id,
        "scopes": None if credential.scopes is None else sorted(credential.scopes),
    }


def context_overrides(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """A session's context fields for one message, from its :class:`~mcp_gateway.wire.CallerFields` (if any)."""
    if not fields:
        return {}
    scopes = fields.get("scopes")
    token_id = fields.get("token_id")
    return {
        "credential_kind": str(fields.get("credential_kind", "")),
        "credential_ref": str(fields.get("credential_ref", "")),
        "token_id": token_id if isinstance(token_id, int) else None,
        "client_id": str(fields.get("client_id", "")),
        "scopes": frozenset(str(scope) for scope in scopes) if isinstance(scopes, list | tuple) else None,
    }
