"""Small HTTP helpers shared by guards and consumers.

:class:`GatewayRequest` is a read-only view of an ASGI HTTP scope, built once
per connection and cached on the scope. :func:`send_error` is the one place a
:class:`~mcp_gateway.exceptions.GatewayError` becomes a response.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.core.signals import setting_changed
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp_types import RequestId

from .exceptions import BodyNotAllowed, GatewayError, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SCOPE_KEY = "mcp_gateway.request"

# Sent with every gateway response: nothing here may be cached, sniffed or
# leak its URL (which can carry a session ID) through Referer.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
)

# Headers that carry credentials or a session's secret ID; never forwarded to tools, never logged. The CSRF
# header under its configured name too (``CSRF_HEADER_NAME``). ``Last-Event-ID`` is no secret: it names a session
# only by its public reference.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-csrftoken", MCP_SESSION_ID_HEADER})


@functools.lru_cache(maxsize=1)
def _hidden_headers() -> frozenset[str]:
    """:data:`CREDENTIAL_HEADERS` and the CSRF header under its configured name; forgotten when settings change."""
    return CREDENTIAL_HEADERS | {settings.CSRF_HEADER_NAME.removeprefix("HTTP_").replace("_", "-").lower()}


def _forget_hidden_headers(**kwargs: Any) -> None:
    _hidden_headers.cache_clear()


setting_changed.connect(_forget_hidden_headers, dispatch_uid="mcp_gateway.http.forget_hidden_headers")


# The methods whose requests carry a body; the gateway's others (GET, DELETE) take none.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def body_limit(method: str, max_body_size: int) -> int:
    """The largest body a request with ``method`` may carry: ``max_body_size``, or 0 if the method takes none."""
    return max_body_size if method in BODY_METHODS else 0


def body_refusal(limit: int) -> GatewayError:
    """The refusal of a body over ``limit`` (from :func:`body_limit`): too large, or not allowed at all."""
    return PayloadTooLarge() if limit else BodyNotAllowed()


# The scope extension through which a server says whether a request's client is gone: a callable returning a bool.
CLIENT_GONE = "mcp_gateway.client_gone"


class GatewayRequest:
    """What the gateway needs to know about one HTTP request."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        # Who is calling, once the identity pipeline (or a stream's credential) has said: a refusal after that,
        # by the rate limit or CSRF check for example, is recorded as theirs.
        self.user: Any = None
        # The body, once whole and until its message is parsed; then the message's JSON-RPC id (see rpc_id).
        self.body: bytes | None = None
        self._rpc_id: RequestId | None = None
        # The URL prefix of the mount the request is for, once routed (its resource, RFC 8707, is named by it).
        self.mount_prefix: str | None = None
        # What to attach to the Django request once it is built (see on_django_request).
        self._prepare: list[Callable[[HttpRequest], None]] = []

    @property
    def rpc_id(self) -> RequestId | None:
        """The JSON-RPC id of the request the body holds, where it can be parsed: what a refusal answers with.

        Read from the body only when asked (a refusal), so an accepted request parses its body once.
        """
        if self._rpc_id is None and self.body is not None:
            self._rpc_id, self.body = request_id_of(self.body), None
        return self._rpc_id

    @rpc_id.setter
    def rpc_id(self, value: RequestId | None) -> None:
        """Set by the consumer that parsed the message; the body is not needed for it any more."""
        self._rpc_id, self.body = value, None

    @classmethod
    def from_scope(cls, scope: Scope) -> GatewayRequest:
        request = scope.get(_SCOPE_KEY)
        if request is None:
            request = scope[_SCOPE_KEY] = cls(scope)
        return request

    @cached_property
    def headers(self) -> dict[str, str]:
        """Lower-cased header names; repeated headers joined with ", "."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    @cached_property
    def query(self) -> dict[str, list[str]]:
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return parse_qs(raw, keep_blank_values=True)

    @cached_property
    def cookies(self) -> dict[str, str]:
        """The request's cookies, parsed as Django parses them (without building a Django request)."""
        return parse_cookie(self.headers.get("cookie", ""))

    @cached_property
    def django_request(self) -> HttpRequest:
        """A bodiless Django request, so Django's own Host and CSRF logic can run on it."""
        django_request = ASGIRequest(self.scope, io.BytesIO(b""))
        for prepare in self._prepare:
            prepare(django_request)
        return django_request

    def on_django_request(self, prepare: Callable[[HttpRequest], None]) -> None:
        """Have ``prepare`` run on the Django request when it is built, or now if it is.

        Building one costs more than the rest of a request's checks, and most requests need none (the Host and
        CSRF verdicts are remembered): what would be attached to it waits until something reads it.
        """
        if "django_request" in self.__dict__:
            prepare(self.__dict__["django_request"])
        else:
            self._prepare.append(prepare)

    def release(self) -> None:
        """Drop what was parsed from the request (the Django request and the login session it loaded too).

        A long-lived stream is done with them once it has started; read again, they are parsed again.
        """
        for name in ("django_request", "headers", "query", "cookies"):
            self.__dict__.pop(name, None)
        self._prepare.clear()

    def accepts(self, media_type: str) -> bool:
        """Whether the ``Accept`` header admits ``media_type``, by Django's rules (``HttpRequest.accepts``).

        Unlike a Django view, a request without ``Accept`` admits nothing: MCP clients must say what they take.
        """
        return _accepts(self.headers.get("accept", ""), media_type)

    def prefers(self, media_type: str, *, over: str) -> bool:
        """Whether ``Accept`` admits ``media_type`` and ranks it strictly above ``over``.

        Ranked by quality, then by how specifically the header names each (Django's order of
        ``HttpRequest.accepted_types``); a tie, as under ``*/*``, is no preference.
        """
        return _prefers(self.headers.get("accept", ""), media_type, over)

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        try:
            return int(self.headers["content-length"])
        except (KeyError, ValueError):
            return None

    @property
    def client_ip(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    @property
    def user_agent(self) -> str:
        return self.headers.get("user-agent", "")

    def client_gone(self) -> bool:
        """Whether the client has closed its connection already, where the server can tell (else False).

        The gateway's launcher says so in the scope (:data:`CLIENT_GONE`), from any thread: work queued for a
        request whose client gave up waiting is then skipped rather than done for nobody.
        """
        gone = self.scope.get("extensions", {}).get(CLIENT_GONE)
        return bool(gone is not None and gone())

    def forwardable_headers(self) -> dict[str, str]:
        """The request's headers without credentials or session IDs, for tools to read."""
        hidden = _hidden_headers()
        return {k: v for k, v in self.headers.items() if k not in hidden}


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def request_id_of(body: bytes) -> RequestId | None:
    """The ``id`` of the one JSON-RPC request ``body`` holds, if it parses as one; else None.

    The MCP specification (2026-07-28) asks error responses for the request's id wherever it could be parsed.
    """
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = decoded.get("id") if isinstance(decoded, dict) else None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def error_body(exc: GatewayError, request_id: RequestId | None = None) -> dict[str, Any]:
    """A JSON-RPC error object answering the request ``request_id`` (null when it could not be parsed)."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": exc.jsonrpc_code, "message": exc.message, "data": exc.error_data()},
    }


async def send_response(
    send: Send,
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes | None = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete, non-streaming response."""
    all_headers = response_headers(body, content_type=content_type, headers=headers)
    await send({"type": "http.response.start", "status": int(status), "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def response_headers(
    body: bytes,
    *,
    content_type: bytes | None = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes]]:
    """The headers of a complete response carrying ``body``: the security headers, ``headers``, type and length."""
    all_headers = [*SECURITY_HEADERS, *headers]
    if content_type is not None:
        all_headers.append((b"content-type", content_type))
    all_headers.append((b"content-length", str(len(body)).encode()))
    return all_headers


async def send_error(send: Send, exc: GatewayError, request_id: RequestId | None = None) -> None:
    """Turn a refusal of the request ``request_id`` (if known) into its HTTP response."""
    await send_response(send, exc.status, json_bytes(error_body(exc, request_id)), headers=exc.headers)


# How many verdicts a memo of request checks keeps before it starts again (keys may vary without bound).
MEMO_SIZE = 256


def remember(memo: dict[tuple[object, ...], None], key: tuple[object, ...]) -> None:
    """Remember that ``key`` passed a check; a full memo is cleared first, so it stays bounded."""
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = None


@functools.lru_cache(maxsize=256)
def _accepts(accept: str, media_type: str) -> bool:
    # Django's own parsing and matching (wildcards, q=0), on a bare request; a client sends the same Accept
    # every time, so the answer is kept.
    request = HttpRequest()
    request.META["HTTP_ACCEPT"] = accept
    return request.accepts(media_type)


@functools.lru_cache(maxsize=256)
def _prefers(accept: str, media_type: str, over: str) -> bool:
    # Django's own parsing and matching again: the entry of Accept that each type falls under, compared by
    # the key Django sorts those entries with.
    request = HttpRequest()
    request.META["HTTP_ACCEPT"] = accept
    wanted, other = request.accepted_type(media_type), request.accepted_type(over)
    if wanted is None:
        return False
    return other is None or (wanted.quality, wanted.specificity) > (other.quality, other.specificity)
