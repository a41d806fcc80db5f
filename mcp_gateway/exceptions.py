"""The gateway's refusals.

Every way a request can be refused is one of these exceptions; consumers and
guards raise them and :func:`mcp_gateway.http.send_error` turns them into an
HTTP response in one place. ``reason`` is a stable, machine-readable code that
also names the refusal in logs.

Where a refusal means what one of Django's exceptions means, it is one too
(``isinstance(exc, PermissionDenied)`` holds for a CSRF failure, as in a
view): 400s are :class:`django.core.exceptions.BadRequest`, 403s
:class:`~django.core.exceptions.PermissionDenied`, 404s
:class:`~django.http.Http404`, the refused ``Host``
:class:`~django.core.exceptions.DisallowedHost` and an oversize body
:class:`~django.core.exceptions.RequestDataTooBig` (both
:class:`~django.core.exceptions.SuspiciousOperation`). The gateway's own
``status`` still decides the answer (421 and 413, where Django would say 400).
A refusal worth an audit row logs on ``mcp_gateway.security.<ClassName>``
(:func:`mcp_sessions.audit.refusal_logger`), as Django's security events log on
``django.security.<ClassName>``.

JSON-RPC codes are the SDK's (:mod:`mcp_types`), but for
:data:`TOO_MANY_REQUESTS`, the gateway's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Self

from django.core.exceptions import BadRequest as DjangoBadRequest
from django.core.exceptions import DisallowedHost, PermissionDenied, RequestDataTooBig
from django.http import Http404
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR

# A session has too many requests in progress (MCP_GATEWAY_MAX_REQUESTS_IN_FLIGHT): the gateway's own code, in
# the implementation-defined part of JSON-RPC's server-error range (-32000..-32019 by the MCP spec's allocation)
# that the SDK leaves free: it uses -32000 (CONNECTION_CLOSED) and -32001 (REQUEST_TIMEOUT), and -32002 is retired.
TOO_MANY_REQUESTS = -32010
# A resuming stream's missed events are no longer buffered (the session closes): the gateway's own code too. It was
# -32002, which the 2026-07-28 specification retired, never to be reused.
EVENTS_LOST = -32011


class GatewayError(Exception):
    """Base class: a request the gateway refuses with an HTTP status."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    reason: str = "bad_request"
    message: str = "Bad request"
    jsonrpc_code: int = INVALID_REQUEST
    # The audit event kind this refusal records (mcp_sessions.models.AuditKind), if any, and what the event says
    # besides the request's own details (``session_ref``, ``detail``): recorded once the refusal is answered.
    audit_kind: str | None = None
    audit_fields: Mapping[str, str] = {}

    def __init__(
        self,
        message: str | None = None,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.message = message or type(self).message
        self.headers = list(headers)
        super().__init__(self.message)

    def error_data(self) -> Any:
        """The JSON-RPC error's ``data``: the stable reason, unless the refusal carries the protocol's own."""
        return {"reason": self.reason}

    def audited(self, kind: str, **fields: str) -> Self:
        """This refusal, to be recorded as ``kind`` with ``fields`` after it is answered (not before: see binding)."""
        self.audit_kind, self.audit_fields = kind, fields
        return self


class BadRequest(GatewayError, DjangoBadRequest):
    """400: the request itself is malformed."""


class ParseError(BadRequest):
    reason = "parse_error"
    message = "Body is not valid JSON"
    jsonrpc_code = PARSE_ERROR


class InvalidMessage(BadRequest):
    reason = "invalid_message"
    message = "Body is not a valid JSON-RPC message"


class MissingSessionId(BadRequest):
    reason = "missing_session_id"
    message = "session_id is required"


class MalformedSessionId(BadRequest):
    reason = "malformed_session_id"
    message = "session_id is malformed"


class InvalidEventId(BadRequest):
    reason = "invalid_event_id"
    message = "Last-Event-ID does not name an event of this session"


class BatchNotSupported(BadRequest):
    reason = "batch_not_supported"
    message = "JSON-RPC batches are not supported; send one message per request"


class InitializeRequired(BadRequest):
    reason = "initialize_required"
    message = "No Mcp-Session-Id: send an initialize request to open a session (stateless requests are not served)"


class ProtocolRejection(BadRequest):
    """A 2026-07-28 request the SDK's inbound classification refused: its JSON-RPC code, message and data as the
    SDK states them, and the HTTP status the SDK's table gives that code (``mcp.shared.inbound``)."""

    reason = "protocol_rejected"

    def __init__(self, code: int, message: str, data: Any = None, *, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.jsonrpc_code = code
        self.status = HTTPStatus(status)
        self._data = data

    def error_data(self) -> Any:
        return self._data if self._data is not None else {"reason": self.reason}


class UnsupportedProtocolVersion(BadRequest):
    reason = "unsupported_protocol_version"
    message = "Unsupported MCP-Protocol-Version"


class BodyNotAllowed(BadRequest):
    """A body on a method that takes none (GET, DELETE): refused before it is read, not buffered and ignored."""

    reason = "body_not_allowed"
    message = "This method takes no request body"


class AuthenticationRequired(GatewayError):
    status = HTTPStatus.UNAUTHORIZED
    reason = "authentication_required"
    message = "Authentication required"


class InvalidToken(AuthenticationRequired):
    """A bearer token was presented but is unknown, expired, revoked, or its owner inactive."""

    audit_kind = "invalid_token"
    reason = "invalid_token"
    message = "Invalid bearer token"


class InvalidTicket(AuthenticationRequired):
    """A stream ticket that is unknown, used, expired, or asked for from another origin."""

    audit_kind = "invalid_ticket"
    reason = "invalid_ticket"
    message = "Invalid stream ticket"


class TicketRequired(AuthenticationRequired):
    reason = "ticket_required"
    message = "Browsers must open streams with a ticket (POST tickets first)"


class Forbidden(GatewayError, PermissionDenied):
    status = HTTPStatus.FORBIDDEN
    reason = "forbidden"
    message = "Forbidden"


class InsufficientScope(Forbidden):
    """A step-up credential (an OAuth grant) whose scopes miss what the request uses: RFC 6750's insufficient_scope.

    The challenge names the scope that would do (:mod:`mcp_gateway.scopes`), so the client can ask for it.
    """

    audit_kind = "insufficient_scope"
    reason = "insufficient_scope"
    message = "The credential's scope does not cover this request"

    def __init__(self, scope: str, *, resource_metadata: str = "") -> None:
        self.scope = scope
        # A scope is a name of the server's own (the vocabulary's); a quote in it could not be escaped in the header.
        quoted = scope.replace("\\", "").replace('"', "")
        challenge = f'Bearer realm="mcp", error="insufficient_scope", scope="{quoted}"'
        if resource_metadata:
            challenge += f', resource_metadata="{resource_metadata}"'
        super().__init__(headers=[(b"www-authenticate", challenge.encode("utf-8", "replace"))])

    def naming_metadata(self, url: str) -> InsufficientScope:
        """The same refusal, its challenge naming the resource's metadata too (the MCP spec's scope challenge)."""
        return InsufficientScope(self.scope, resource_metadata=url)


class OriginNotAllowed(Forbidden):
    audit_kind = "origin_refused"
    reason = "origin_not_allowed"
    message = "Origin not allowed"


class CsrfFailed(Forbidden):
    audit_kind = "csrf_failed"
    reason = "csrf_failed"
    message = "CSRF verification failed"


class SessionNotFound(GatewayError, Http404):
    """Unknown, closed and foreign sessions alike: the bodies must not differ."""

    status = HTTPStatus.NOT_FOUND
    reason = "session_not_found"
    message = "Session not found"


class NotFound(GatewayError, Http404):
    status = HTTPStatus.NOT_FOUND
    reason = "not_found"
    message = "Not found"


class MethodNotAllowed(GatewayError):
    status = HTTPStatus.METHOD_NOT_ALLOWED
    reason = "method_not_allowed"
    message = "Method not allowed"

    def __init__(self, allowed: Sequence[str]) -> None:
        super().__init__(headers=[(b"allow", ", ".join(allowed).encode())])


class NotAcceptable(GatewayError):
    status = HTTPStatus.NOT_ACCEPTABLE
    reason = "not_acceptable"
    message = "Accept must include application/json and text/event-stream"


class StreamConflict(GatewayError):
    status = HTTPStatus.CONFLICT
    reason = "stream_conflict"
    message = "This session already has a GET stream"


class RequestTimeout(GatewayError):
    """A request (headers and body) that did not arrive whole within ``MCP_GATEWAY_BODY_TIMEOUT``."""

    status = HTTPStatus.REQUEST_TIMEOUT
    reason = "request_timeout"
    message = "The request did not arrive in time"


class PayloadTooLarge(GatewayError, RequestDataTooBig):
    audit_kind = "payload_too_large"
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    reason = "payload_too_large"
    message = "Request body too large"


class UnsupportedMediaType(GatewayError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    reason = "unsupported_media_type"
    message = "Content-Type must be application/json"


class MisdirectedRequest(GatewayError, DisallowedHost):
    """The ``Host`` is not in ``ALLOWED_HOSTS``: Django's DisallowedHost, answered 421 as the MCP SDK does."""

    audit_kind = "host_refused"
    status = HTTPStatus.MISDIRECTED_REQUEST
    reason = "host_not_allowed"
    message = "Host not allowed"


class TooManyRequests(GatewayError):
    audit_kind = "rate_limited"
    status = HTTPStatus.TOO_MANY_REQUESTS
    reason = "rate_limited"
    message = "Too many requests, retry later"

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        headers = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
        super().__init__(message, headers=headers)


class TooManySessions(TooManyRequests):
    audit_kind = "session_limit"
    reason = "session_limit"
    message = "Too many open sessions, every one of them in use; close one first"


class ServiceUnavailable(GatewayError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    reason = "unavailable"
    message = "Session is busy, retry later"
    jsonrpc_code = INTERNAL_ERROR

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, headers=[(b"retry-after", str(retry_after).encode())])
