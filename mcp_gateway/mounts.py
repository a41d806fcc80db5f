"""A mount: one MCP server served under one URL prefix, and its paths.

Kept apart from :mod:`mcp_gateway.routing`, which imports every transport,
so that transports can name their mount without importing the router.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer

from .http import Scope
from .listening import serve_listen_streams
from .modern.state import per_request_server

# The paths below a mount's prefix.
STREAMABLE_HTTP_PATH = ""
SSE_PATH = "sse"
MESSAGES_PATH = "messages/"
TICKETS_PATH = "tickets"


class Mount:
    """One MCP server served under one URL prefix."""

    def __init__(self, prefix: str, server: str | Any) -> None:
        if not (prefix.startswith("/") and prefix.endswith("/")):
            raise ImproperlyConfigured(f"MCP mount prefix {prefix!r} must start and end with '/'.")
        if server is None:
            raise ImproperlyConfigured("Set MCP_GATEWAY_SERVER to the dotted path of your MCP server.")
        self.prefix = prefix
        self._target = server

    @cached_property
    def server(self) -> Server[Any]:
        return resolve_server(self._target)

    def url_path(self, scope: Scope, path: str) -> str:
        """The site-relative URL of ``path`` (one of the paths above) under this mount, below the root path."""
        root_path: str = scope.get("root_path", "").rstrip("/")
        return quote(root_path + self.prefix + path)

    @cached_property
    def per_request_server(self) -> Server[Any]:
        """The server as 2026-07-28 requests are served: the mount's ``requestState`` boundary, owned listen streams."""
        return serve_listen_streams(per_request_server(self.server, self.prefix))

    def messages_url(self, scope: Scope, session_id: str) -> str:
        """Where the client POSTs: relative to the site, so it stays same-origin."""
        return f"{self.url_path(scope, MESSAGES_PATH)}?session_id={session_id}"


def resolve_server(target: str | Any) -> Server[Any]:
    """The low-level ``Server`` behind ``target``: an object or a dotted path to one.

    An ``MCPServer`` is unwrapped to the low-level server it registers its
    tools on, which is what the SDK's own transports run.
    """
    obj = import_string(target) if isinstance(target, str) else target
    if isinstance(obj, MCPServer):
        obj = obj._lowlevel_server
    if not isinstance(obj, Server):
        raise ImproperlyConfigured(
            f"MCP server {target!r} is a {type(obj).__name__}, not an MCPServer or mcp.server.lowlevel.Server"
        )
    return obj
