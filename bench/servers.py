"""The MCP server both sides of the benchmark serve: one async tool, no I/O."""

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("bench")


@mcp.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


# The SDK's own HTTP+SSE server, unauthenticated: the reference.
reference_app = mcp.sse_app()
