"""The MCP server both sides of the benchmark serve: one async tool, no I/O."""

import asyncio
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer

from bench import floor

# WARNING: the SDK logs every request at INFO through a ``rich`` handler it installs on the root logger when no
# handler is there (MCPServer calls ``logging.basicConfig``); rendering those lines was a large share of a call on
# every side of the comparison, and a deployment logs at WARNING.
mcp = MCPServer("bench", log_level="WARNING")


@mcp.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


# The SDK's own HTTP+SSE server, unauthenticated: the reference.
reference_app = mcp.sse_app()


def with_lifespan(build: Callable[[], Any]) -> Any:
    """The ASGI app ``build()`` returns, its lifespan entered on the first request and held for the process's life.

    Daphne does not run the ASGI lifespan (NOTES pitfall 11), and the SDK's ``streamable_http_app()`` answers
    every request 500 without it: its session manager's ``run()`` is what starts the task group and enters the
    server's lifespan. ``build`` is called on that first request, so that a process that only imports this
    module (the gateway's, for ``mcp``) never creates the SDK's session manager.
    """
    state: dict[str, Any] = {}

    async def hold(app: Any, ready: asyncio.Future[None]) -> None:
        async with app.router.lifespan_context(app):
            ready.set_result(None)
            await asyncio.Event().wait()  # until the process ends

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if "ready" not in state:
            state["app"] = build()
            state["ready"] = asyncio.get_running_loop().create_future()
            state["task"] = asyncio.get_running_loop().create_task(hold(state["app"], state["ready"]))
        await asyncio.shield(state["ready"])
        await state["app"](scope, receive, send)

    return application


# The SDK's own Streamable HTTP app at /mcp/, unauthenticated: the reference for protocol 2026-07-28, which its
# session manager serves per request (a non-handshake MCP-Protocol-Version goes to its single-exchange entry).
modern_reference_app = with_lifespan(lambda: mcp.streamable_http_app(streamable_http_path="/mcp/"))


# The floor: a bare ASGI app speaking just enough MCP (bench/floor.py); it also holds idle event streams, which
# shows how much of a stream's memory is the ASGI server's before any MCP code runs.
floor_app = floor.application
