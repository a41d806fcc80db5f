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

from .exceptions import GatewayError

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
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-csrftoken", "mcp-session-id"})


@functools.lru_cache(maxsize=1)
def _hidden_headers() -> frozenset[str]:
    """:data:`CREDENTIAL_HEADERS` and the CSRF header under its configured name; forgotten when settings change."""
    return CREDENTIAL_HEADERS | {settings.CSRF_HEADER_NAME.removeprefix("HTTP_").replace("_", "-").lower()}


def _forget_hidden_headers(**kwargs: Any) -> None:
    _hidden_headers.cache_clear()


setting_changed.connect(_forget_hidden_headers, dispatch_uid="mcp_gateway.http.forget_hidden_headers")


class GatewayRequest:
    """What the gateway needs to know about one HTTP request."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]

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
        return ASGIRequest(self.scope, io.BytesIO(b""))

    def release(self) -> None:
        """Drop what was parsed from the request (the Django request and the login session it loaded too).

        A long-lived stream is done with them once it has started; read again, they are parsed again.
        """
        for name in ("django_request", "headers", "query", "cookies"):
            self.__dict__.pop(name, None)

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

    def forwardable_headers(self) -> dict[str, str]:
        """The request's headers without credentials or session IDs, for tools to read."""
        hidden = _hidden_headers()
        return {k: v for k, v in self.headers.items() if k not in hidden}


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def error_body(exc: GatewayError) -> dict[str, Any]:
    """A JSON-RPC error object with no request id: readable by any MCP client."""
    return {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": exc.jsonrpc_code, "message": exc.message, "data": {"reason": exc.reason}},
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
    all_headers = [*SECURITY_HEADERS, *headers]
    if content_type is not None:
        all_headers.append((b"content-type", content_type))
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: GatewayError) -> None:
    """Turn a refusal into its HTTP response."""
    await send_response(send, exc.status, json_bytes(error_body(exc)), headers=exc.headers)
