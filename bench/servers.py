"""The MCP server both sides of the benchmark serve: one async tool, no I/O."""

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("bench")


@mcp.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


# The SDK's own HTTP+SSE server, unauthenticated: the reference.
reference_app = mcp.sse_app()


async def floor_app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Daphne's own cost per stream: an ASGI app that opens an event stream, sends one event, and waits.

    Not an MCP server; the benchmark subtracts nothing with it, it only shows
    how much of a stream's memory is the ASGI server's (its connection,
    request and application task) before any MCP code runs.
    """
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    body = b"event: endpoint\ndata: /floor?session_id=0\n\n"
    await send({"type": "http.response.body", "body": body, "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass
