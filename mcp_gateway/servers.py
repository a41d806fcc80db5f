"""Finding the MCP server object a mount serves."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer


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
