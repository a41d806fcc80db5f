"""Every private piece of the ``mcp`` SDK the gateway uses, imported here and nowhere else.

The 2026-07-28 single-exchange entry of mcp 2.3 (``mcp.server._streamable_http_modern``) is private: its
dispatch context and its ``Mcp-Param-*`` check are reused as they are rather than rewritten, which is why
``pyproject.toml`` bounds the SDK to ``mcp>=2.3,<2.4``. A new SDK minor release is adopted by checking
these names first.

An ``MCPServer`` keeps its tools, resources and prompts in private managers; :func:`registered_functions` reads
them (the functions a site marked with :func:`mcp_gateway.permissions.require`), here with the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server._streamable_http_modern import (
    _is_notification_shaped as is_notification_shaped,
)
from mcp.server._streamable_http_modern import (
    _mcp_param_rejection as mcp_param_rejection,
)
from mcp.server._streamable_http_modern import (
    _SingleExchangeDispatchContext as SingleExchangeDispatchContext,
)
from mcp.server.lowlevel import Server
from mcp.server.runner import _has_modern_envelope as has_modern_envelope
from mcp.server.runner import _serve_modern_stream as serve_modern_stream
from mcp.server.runner import modern_error_data
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher


def registered_functions(server: Any) -> dict[str, list[tuple[str, Callable[..., Any] | None]]]:
    """An ``MCPServer``'s registrations by kind: ``(name, function)`` of each tool, resource, template and prompt.

    Tools and prompts by name, resources by URI, templates by URI template; a resource made from a value rather
    than a function has ``None``.
    """
    return {
        "tools": [(tool.name, tool.fn) for tool in server._tool_manager.list_tools()],
        "resources": [(str(r.uri), getattr(r, "fn", None)) for r in server._resource_manager.list_resources()],
        "resource_templates": [(t.uri_template, t.fn) for t in server._resource_manager.list_templates()],
        "prompts": [(prompt.name, prompt.fn) for prompt in server._prompt_manager.list_prompts()],
    }


__all__ = [
    "SingleExchangeDispatchContext",
    "awaits_answers",
    "continue_request_ids",
    "has_modern_envelope",
    "is_notification_shaped",
    "mcp_param_rejection",
    "modern_error_data",
    "own_request_handlers",
    "registered_functions",
    "request_ids_used",
    "serve_modern_stream",
]


def awaits_answers(dispatcher: JSONRPCDispatcher[Any]) -> bool:
    """Whether a server-to-client request sent through ``dispatcher`` still waits for its answer (a session
    with one is not parked)."""
    return bool(dispatcher._pending)


def request_ids_used(dispatcher: JSONRPCDispatcher[Any]) -> int:
    """How many server-to-client request IDs ``dispatcher`` has allocated (a resumed session's next one follows).

    The spec has a requestor never reuse an ID within a session; the dispatcher counts them in private.
    """
    return dispatcher._next_id


def continue_request_ids(dispatcher: JSONRPCDispatcher[Any], used: int) -> None:
    """Have ``dispatcher`` allocate server-to-client request IDs after the ``used`` first ones."""
    dispatcher._next_id = used


def own_request_handlers(server: Server[Any]) -> None:
    """Give a copied server a request-handler table of its own, so that replacing a handler leaves the original's.

    ``Server._request_handlers`` is private; ``add_request_handler`` is public but writes to the shared table.
    """
    server._request_handlers = dict(server._request_handlers)
