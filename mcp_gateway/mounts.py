"""A mount: one MCP server served under one URL prefix, and its paths.

Kept apart from :mod:`mcp_gateway.routing`, which imports every transport,
so that transports can name their mount without importing the router.
"""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer

from .gatekeeper import Gatekeeper, guard_schemas, install
from .http import Scope
from .listening import serve_listen_streams
from .modern.state import per_request_server
from .permissions import Rules, rules_for

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
    def site_server(self) -> Any:
        """The server object the site gave: an ``MCPServer`` or a low-level ``Server``."""
        return import_string(self._target) if isinstance(self._target, str) else self._target

    @cached_property
    def server(self) -> Server[Any]:
        """The low-level server behind :attr:`site_server`, as the site made it."""
        return resolve_server(self.site_server)

    @cached_property
    def rules(self) -> Rules:
        """Who may use what on this mount (:mod:`mcp_gateway.permissions`), read once, when first served."""
        return rules_for(self.site_server)

    @cached_property
    def session_server(self) -> Server[Any]:
        """The server as handshake-era sessions run it: a shallow copy with the mount's :class:`Gatekeeper`.

        The one place the gateway's permission and call-record middleware is installed; :attr:`per_request_server`
        is made from this copy, so both eras have it.
        """
        clone = copy.copy(self.server)
        clone.middleware = list(self.server.middleware)
        install(clone, Gatekeeper(self.prefix, self.rules))
        return clone

    def url_path(self, scope: Scope, path: str) -> str:
        """The site-relative URL of ``path`` (one of the paths above) under this mount, below the root path."""
        root_path: str = scope.get("root_path", "").rstrip("/")
        return quote(root_path + self.prefix + path)

    @cached_property
    def per_request_server(self) -> Server[Any]:
        """The server as 2026-07-28 requests are served: the session server's handlers and gatekeeper, the mount's
        ``requestState`` boundary, owned listen streams."""
        clone = per_request_server(self.session_server, self.prefix)
        guard_schemas(clone, self.rules)
        return serve_listen_streams(clone)

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
