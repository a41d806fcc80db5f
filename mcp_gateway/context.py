"""What a tool knows about its caller.

Every client message the gateway hands to the MCP server carries a
:class:`GatewayRequestContext`; the SDK exposes it to handlers as
``ctx.request_context.request``. :func:`get_user` reads the Django user from
there, for ``MCPServer`` tools (their ``Context`` argument) and low-level
handlers (their ``ctx``) alike::

    @mcp.tool()
    async def whoami(ctx: Context) -> str:
        return get_user(ctx).get_username()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class GatewayRequestContext:
    """Per-message facts about the caller; ``headers`` never carry credentials."""

    user: Any
    session_ref: str
    transport: str
    server: str
    headers: Mapping[str, str] = field(default_factory=dict)
    # The fingerprint of the credential the request presented (:class:`~mcp_gateway.auth.Credential`): a digest,
    # never the secret. What a multi-round-trip request's state is bound to (:mod:`mcp_gateway.request_state`).
    credential_fingerprint: str = field(default="", repr=False)
    # What call records name the credential by (:func:`mcp_gateway.usage.credential_ref`: never a secret), the
    # access token's pk and the OAuth client's id when it is one of those.
    credential_kind: str = ""
    credential_ref: str = ""
    token_id: int | None = None
    client_id: str = ""
    # What the credential may reach (:mod:`mcp_gateway.scopes`); None: what its user may use, unnarrowed.
    scopes: frozenset[str] | None = None


def get_request_context(ctx: Any) -> GatewayRequestContext:
    """The gateway's context for the message a handler is serving.

    Raises ``LookupError`` when the handler was not called through the gateway
    (for example in-process in a unit test), so a tool never mistakes "no
    user" for some default user.
    """
    request_context = getattr(ctx, "request_context", ctx)
    request = getattr(request_context, "request", None)
    if not isinstance(request, GatewayRequestContext):
        raise LookupError("This MCP request did not come through mcp_gateway; no Django user is known.")
    return request


def get_user(ctx: Any) -> Any:
    """The Django user who opened the session this call belongs to."""
    return get_request_context(ctx).user
