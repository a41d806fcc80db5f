"""The page a browser gets when it opens an MCP endpoint: what the endpoint is, and how to connect to it.

A person who pastes ``<prefix>`` or ``<prefix>sse`` into a browser would
otherwise get a JSON-RPC 401 or 406. :func:`wants_page` decides by content
negotiation, and only for the GET of those two paths: ``text/html`` must rank
strictly above ``text/event-stream`` in ``Accept``, as a browser's navigation
ranks it (``text/html,…,*/*;q=0.8``). What MCP clients send
(``text/event-stream``, ``application/json, text/event-stream``) and ``*/*``
keep the transports' answers.

The page is rendered from the template ``mcp_gateway/endpoint.html``
(overridable like any app template, autoescaped) without the request, so no
context processor adds a CSRF token or anything else of the visitor's; it names
the visitor's login by username only. It runs behind the guards (a refused
``Host`` is still 421) but takes no credential: nobody is authenticated,
rate-limited or recorded in the audit trail, and no session is opened.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.template.loader import render_to_string

from .auth import site_login
from .exceptions import ServiceUnavailable
from .http import GatewayRequest, Receive, Scope, Send, send_error, send_response
from .mounts import SSE_PATH, STREAMABLE_HTTP_PATH

if TYPE_CHECKING:
    from .mounts import Mount

logger = logging.getLogger("mcp_gateway")

TEMPLATE = "mcp_gateway/endpoint.html"
# The mount's paths a browser may open, each with the name of its transport.
PAGE_PATHS = {STREAMABLE_HTTP_PATH: "Streamable HTTP", SSE_PATH: "HTTP+SSE"}
# Besides the gateway's own (no-store, nosniff, no-referrer): the page runs nothing, loads nothing and is never
# framed; it differs by Accept (the endpoint's other answers) and by Cookie (who is logged in).
PAGE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"vary", b"Accept, Cookie"),
)


def wants_page(request: GatewayRequest) -> bool:
    """Whether this request to one of :data:`PAGE_PATHS` is a browser's navigation rather than an MCP client's."""
    return request.method == "GET" and request.prefers("text/html", over="text/event-stream")


class EndpointPage:
    """Answer a browser that opened ``path`` under ``mount`` with the page; an ASGI application."""

    def __init__(self, mount: Mount, path: str) -> None:
        self.mount = mount
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = GatewayRequest.from_scope(scope)
        try:
            user = await site_login(request)
        except DatabaseError:
            logger.exception("Database unavailable")
            await send_error(send, ServiceUnavailable("Database unavailable, retry later"))
            return
        body = await sync_to_async(render_to_string)(TEMPLATE, self.context(request, user))
        await send_response(
            send, HTTPStatus.OK, body.encode(), content_type=b"text/html; charset=utf-8", headers=PAGE_HEADERS
        )

    def context(self, request: GatewayRequest, user: Any) -> dict[str, Any]:
        """What the template is given: nothing secret, nothing of the visitor's but their username."""
        django_request = request.django_request
        urls = {
            path: django_request.build_absolute_uri(self.mount.url_path(request.scope, path)) for path in PAGE_PATHS
        }
        return {
            "server_name": self.mount.server.name,
            "endpoints": [
                {"transport": transport, "url": urls[path], "current": path == self.path}
                for path, transport in PAGE_PATHS.items()
            ],
            "streamable_http_url": urls[STREAMABLE_HTTP_PATH],
            "sse_url": urls[SSE_PATH],
            "username": user.get_username() if user is not None else None,
        }
