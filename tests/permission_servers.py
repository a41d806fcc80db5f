"""MCP servers whose tools, resources and prompts need permissions, for tests/test_permissions.py.

The same things twice: an ``MCPServer`` marked with ``@require``, and a low-level ``Server`` guarded with
``protect()``. ``public`` needs nothing, ``staff_only`` a check, ``notes`` the permission ``demo.view_note``,
``editor`` the permission ``demo.delete_note`` (the tests grant it through a group), ``boom`` fails.
"""

from typing import Annotated, Any

import mcp_types as types
from django.contrib.auth.backends import BaseBackend
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from pydantic import Field

from mcp_gateway.context import get_user
from mcp_gateway.permissions import protect, require


def is_staff(user: Any) -> bool:
    return bool(user.is_staff)


async def is_staff_async(user: Any) -> bool:
    return bool(user.is_staff)


guarded = MCPServer("Guarded")


@guarded.tool()
def public(text: str = "") -> str:
    """Anyone may call it."""
    return f"public {text}"


@guarded.tool()
@require(is_staff)
def staff_only() -> str:
    """Staff only (a sync check)."""
    return "staff"


@guarded.tool()
@require("demo.view_note")
def notes(text: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Text"})] = "") -> str:
    """Users with demo.view_note; ``text`` is mirrored in an ``Mcp-Param-Text`` header (2026-07-28)."""
    return f"notes {text}"


@guarded.tool()
@require("demo.delete_note", is_staff_async)
def editor() -> str:
    """Staff with demo.delete_note (an async check and a permission)."""
    return "editor"


@guarded.tool()
def boom() -> str:
    """Always fails."""
    raise ValueError("boom")


@guarded.resource("notes://mine")
@require("demo.view_note")
def my_notes() -> str:
    return "my notes"


@guarded.resource("notes://public")
def public_notes() -> str:
    return "public notes"


@guarded.resource("notes://by-id/{pk}")
@require("demo.view_note")
def note_by_id(pk: str) -> str:
    return f"note {pk}"


@guarded.prompt()
@require("demo.view_note")
def summarize(topic: str) -> str:
    return f"Summarize {topic}"


@guarded.prompt()
def greet(name: str) -> str:
    return f"Hello {name}"


HEADER_SCHEMA = {"type": "object", "properties": {"text": {"type": "string", "x-mcp-header": "Text"}}}


@guarded.completion()
async def complete(ref: Any, argument: Any, context: Any) -> types.Completion:
    """Completions for the prompts' arguments; another name is unknown."""
    if isinstance(ref, types.PromptReference) and ref.name in {"summarize", "greet"}:
        return types.Completion(values=[f"{argument.value}-1"])
    raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {getattr(ref, 'name', '?')}")


LOW_TOOLS = [
    types.Tool(name=name, description=name, input_schema=HEADER_SCHEMA if name == "notes" else {"type": "object"})
    for name in ("public", "staff_only", "notes", "editor", "boom")
]


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=LOW_TOOLS)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    if params.name == "boom":
        raise MCPError(types.INTERNAL_ERROR, "boom")
    if params.name not in {tool.name for tool in LOW_TOOLS}:
        raise MCPError(types.INVALID_PARAMS, f"No tool named {params.name}", {"name": params.name})
    text = f"{params.name} for {get_user(ctx).get_username()}"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


lowlevel = Server("guarded-lowlevel", on_list_tools=list_tools, on_call_tool=call_tool)
protect(
    lowlevel,
    tools={"staff_only": is_staff, "notes": "demo.view_note", "editor": ["demo.delete_note", is_staff_async]},
)


def keep_text(*, method: str, name: str, arguments: dict[str, Any], user: Any) -> dict[str, Any] | None:
    """A redaction hook (MCP_GATEWAY_CALL_ARGUMENTS): keeps only the argument ``text``."""
    return {"text": arguments["text"]} if "text" in arguments else None


class ScopedGrantAuthenticator:
    """A stand-in for an OAuth resource server: ``Authorization: Grant <user pk> <scope> ...``, a step-up credential.

    Tests only: it trusts what the header says.
    """

    scheme = "grant"
    ambient = False

    def challenge(self) -> str:
        return 'Bearer realm="mcp"'

    async def authenticate(self, request: Any) -> Any:
        from django.contrib.auth import get_user_model

        from mcp_gateway.auth import Credential

        kind, _, rest = request.headers.get("authorization", "").partition(" ")
        if kind != "Grant":
            return None
        pk, *scopes = rest.split()
        user = await get_user_model().objects.aget(pk=pk)
        return Credential(
            user=user,
            scheme=self.scheme,
            ambient=False,
            fingerprint=f"grant:{rest}",
            scopes=frozenset(scopes),
            step_up=True,
            client_id="test-client",
        )


class ReaderBackend(BaseBackend):
    """A custom authentication backend granting ``demo.view_note`` to users whose username starts with "reader"."""

    def get_user_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        # BaseBackend derives has_perm and the async ahas_perm (what the gateway asks) from this.
        return {"demo.view_note"} if user_obj.is_active and user_obj.username.startswith("reader") else set()
