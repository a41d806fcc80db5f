"""The demo's MCP server: tools that know which Django user is calling."""

from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from mcp_gateway.context import get_user

from .models import Note

mcp = MCPServer("Demo notes", instructions="Read and write the signed-in user's private notes.")


@mcp.tool()
async def whoami(ctx: Context) -> dict[str, Any]:
    """The Django user this session belongs to."""
    user = get_user(ctx)
    return {"username": user.get_username(), "email": user.email, "is_staff": user.is_staff}


@mcp.tool()
async def list_notes(ctx: Context) -> list[dict[str, Any]]:
    """The caller's notes, newest first. Nobody else's are ever returned."""
    notes = Note.objects.for_user(get_user(ctx)).values("id", "title", "body")
    return [note async for note in notes]


@mcp.tool()
async def add_note(ctx: Context, title: str, body: str = "") -> dict[str, Any]:
    """Add a note for the caller."""
    note = await Note.objects.acreate(owner=get_user(ctx), title=title, body=body)
    return {"id": note.pk, "title": note.title, "body": note.body}


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text
