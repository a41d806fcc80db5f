"""A multi-round-trip request's ``requestState`` (2026-07-28, SEP-2322), bound to the user and credential it was for.

A tool that needs input from the client (elicitation, sampling) answers with an
input-required result carrying an opaque ``requestState``; the client repeats
the request with the inputs and that state. The state is the client's to echo,
so the SDK's :class:`~mcp.server.request_state.RequestStateBoundary` seals it
on the way out and verifies it on the way back (expiry, the request it belongs
to, the audience) through a :class:`~mcp.server.request_state.RequestStateCodec`,
and answers a refused one with its JSON-RPC error (-32602, "Invalid or expired
requestState").

:class:`SignedRequestStateCodec` is the gateway's codec, on Django's signing
(``SECRET_KEY``, so every worker of the site accepts what another sealed, which
the SDK's default ephemeral key does not). It binds the state to:

- the **mount** (a salt of its own per mount: one mount's state is another's forgery);
- the **user** (pk) and the **credential** (a keyed digest of its fingerprint: this token,
  this login) of the request that sealed it, compared with the request that
  presents it. The presenting request was authenticated just now (the credential
  cache and the pin are revoked at once with the credential), so a state sealed
  for a credential since revoked can only come back with another credential,
  and is refused: no database query;
- ``MCP_GATEWAY_REQUEST_STATE_MAX_AGE`` seconds (Django's signed timestamp).

A refusal (another user's state, another credential's, another mount's,
expired, tampered, garbage) raises :class:`~mcp.server.request_state.InvalidRequestState`,
which the boundary answers as the spec says, and records an audit event
(``request_state_refused``), the reason in its detail. Django's signing only
signs: the client can read the state (compressed, base64), so a tool must not
put secrets in it.

The seam: a codec has no request (``seal``/``unseal`` take bytes), so the
boundary runs inside :class:`GatewayRequestStateBoundary`, a server middleware
that holds the message's :class:`~mcp_gateway.context.GatewayRequestContext`
(``ctx.request``, which the gateway attaches to every message it hands the
server) in a context variable while the boundary runs. Whatever runs a mount's
server calls :func:`install_request_state` once with the server and the mount's
prefix: it replaces the boundary an ``MCPServer`` installed for itself (under an
ephemeral key) or adds one to a low-level ``Server``. Each message's context must
carry ``credential_fingerprint``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, NoReturn

from django.core import signing
from django.utils.crypto import salted_hmac
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.request_state import InvalidRequestState, RequestStateBoundary, RequestStateSecurity

from mcp_sessions import audit
from mcp_sessions.models import AuditKind

from .conf import gateway_settings
from .context import GatewayRequestContext, get_request_context

# The gateway's context of the message whose state the boundary is sealing or verifying.
_current: contextvars.ContextVar[GatewayRequestContext | None] = contextvars.ContextVar(
    "mcp_gateway_request_state_context", default=None
)

_CREDENTIAL_SALT = "mcp_gateway.request_state.credential"


@contextlib.contextmanager
def serving(context: GatewayRequestContext | None) -> Iterator[None]:
    """The codecs seal and verify states for the request of ``context`` meanwhile (what the middleware does)."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def _credential_digest(fingerprint: str) -> str:
    """A keyed digest of the credential's fingerprint: the state names the credential without showing its hash."""
    return salted_hmac(_CREDENTIAL_SALT, fingerprint, algorithm="sha256").hexdigest()[:32]


class SignedRequestStateCodec:
    """The SDK's ``RequestStateCodec`` on Django's signing, bound to a mount, a user and a credential."""

    def __init__(self, mount: str) -> None:
        self.mount = mount
        self.salt = f"mcp_gateway.request_state:{mount}"

    def seal(self, payload: bytes) -> str:
        context = _current.get()
        if context is None or not context.credential_fingerprint:
            raise InvalidRequestState("no gateway request to bind the state to")  # the boundary answers 500
        claims = {
            # latin-1 maps every byte to one character and back: the payload round-trips exactly.
            "s": payload.decode("latin-1"),
            "u": str(context.user.pk),
            "c": _credential_digest(context.credential_fingerprint),
        }
        return signing.dumps(claims, salt=self.salt, compress=True)

    def unseal(self, token: str) -> bytes:
        context = _current.get()
        try:
            max_age = timedelta(seconds=gateway_settings.REQUEST_STATE_MAX_AGE)
            claims = signing.loads(token, salt=self.salt, max_age=max_age)
        except signing.SignatureExpired:
            self._refuse(context, "expired")
        except signing.BadSignature:
            self._refuse(context, "bad signature")
        if not (isinstance(claims, dict) and all(isinstance(claims.get(key), str) for key in ("s", "u", "c"))):
            self._refuse(context, "malformed")
        if context is None or not context.credential_fingerprint:
            self._refuse(context, "no gateway request")
        if not hmac.compare_digest(claims["u"], str(context.user.pk)):
            self._refuse(context, f"sealed for user {claims['u']}")
        if not hmac.compare_digest(claims["c"], _credential_digest(context.credential_fingerprint)):
            self._refuse(context, "sealed for another credential")
        payload: str = claims["s"]
        return payload.encode("latin-1")

    def _refuse(self, context: GatewayRequestContext | None, reason: str) -> NoReturn:
        audit.record(
            AuditKind.REQUEST_STATE_REFUSED,
            user=None if context is None else context.user,
            session_ref="" if context is None else context.session_ref,
            detail=f"{self.mount} {reason}",
        )
        raise InvalidRequestState(reason)


class GatewayRequestStateBoundary:
    """Server middleware: the SDK's boundary under our codec, with the message's gateway context at hand."""

    def __init__(self, mount: str) -> None:
        self.codec = SignedRequestStateCodec(mount)
        security = RequestStateSecurity(
            codec=self.codec,
            ttl=gateway_settings.REQUEST_STATE_MAX_AGE,
            bind_principal=None,  # the codec binds user and credential itself, and audits a mismatch
            audience=mount,
        )
        self.boundary = RequestStateBoundary(security, default_audience=mount)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        try:
            context: GatewayRequestContext | None = get_request_context(ctx)
        except LookupError:
            context = None  # not through the gateway: the codec refuses to seal or unseal
        with serving(context):
            return await self.boundary(ctx, call_next)


def install_request_state(server: Server[Any], mount: str) -> GatewayRequestStateBoundary:
    """Have ``server`` seal and verify ``requestState`` with the gateway's codec for ``mount`` (idempotent).

    Replaces any :class:`~mcp.server.request_state.RequestStateBoundary` (an ``MCPServer`` installs one under an
    ephemeral, per-process key) and any earlier one of ours, in the same place at the end of ``server.middleware``.
    """
    ours = GatewayRequestStateBoundary(mount)
    kept = [m for m in server.middleware if not isinstance(m, RequestStateBoundary | GatewayRequestStateBoundary)]
    server.middleware[:] = [*kept, ours]
    return ours
