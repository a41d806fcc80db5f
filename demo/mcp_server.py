"""The demo's MCP server: tools that know which Django user is calling."""

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from mcp_gateway.context import get_user
from mcp_gateway.permissions import require

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


@mcp.tool()
@require(lambda user: user.is_staff)
async def note_stats(ctx: Context) -> dict[str, Any]:
    """Staff only: how many notes there are, all users together."""
    return {"notes": await Note.objects.acount()}


@mcp.tool()
@require("demo.delete_note")
async def delete_note(ctx: Context, note_id: int) -> dict[str, Any]:
    """Delete one of the caller's notes. Needs demo.delete_note, which the group "Note editors" grants."""
    deleted, _ = await Note.objects.for_user(get_user(ctx)).filter(pk=note_id).adelete()
    return {"deleted": deleted}


@mcp.resource("notes://{username}/notes", mime_type="text/plain")
@require("demo.view_note")
async def user_notes(ctx: Context, username: str) -> str:
    """A user's notes as text, for that user alone (a resource per user). Needs demo.view_note."""
    user = get_user(ctx)
    if username != user.get_username():
        raise ResourceError(f"Unknown resource: notes://{username}/notes")
    notes = Note.objects.for_user(user).values_list("title", "body")
    return "\n".join([f"{title}: {body}" async for title, body in notes])
