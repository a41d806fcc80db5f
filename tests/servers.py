"""A low-level MCP server for the tests: knows its user, and can flood a slow client."""

import json
import weakref
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

from mcp_gateway.context import get_request_context, get_user

TOOLS = [
    types.Tool(name="whoami", description="The calling user's username.", input_schema={"type": "object"}),
    types.Tool(
        name="blob",
        description="Return SIZE bytes of text.",
        input_schema={"type": "object", "properties": {"size": {"type": "integer"}}, "required": ["size"]},
    ),
    types.Tool(
        name="chatty",
        description="Send STEPS progress notifications about this call, then answer.",
        input_schema={"type": "object", "properties": {"steps": {"type": "integer"}}, "required": ["steps"]},
    ),
    types.Tool(name="headers", description="The request headers it sees, as JSON.", input_schema={"type": "object"}),
    types.Tool(
        name="session",
        description="What the session's connection holds: the client's capabilities, its log level, subscriptions.",
        input_schema={"type": "object"},
    ),
    types.Tool(
        name="touch",
        description="Tell every session subscribed to URI that it changed.",
        input_schema={"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]},
    ),
    types.Tool(
        name="sleep",
        description="Wait SECONDS (with NOTIFY, after a progress notification saying it began), then answer.",
        input_schema={
            "type": "object",
            "properties": {"seconds": {"type": "number"}, "notify": {"type": "boolean"}},
            "required": ["seconds"],
        },
    ),
]


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    if params.name == "whoami":
        text = get_user(ctx).get_username()
    elif params.name == "blob":
        text = "x" * int((params.arguments or {})["size"])
    elif params.name == "chatty":
        steps = int((params.arguments or {})["steps"])
        for step in range(steps):
            await ctx.session.send_progress_notification(
                "chatty", step, steps, message=f"step {step}", related_request_id=ctx.request_id
            )
        text = f"{steps} steps"
    elif params.name == "headers":
        text = json.dumps(dict(get_request_context(ctx).headers))
    elif params.name == "session":
        connection = ctx.session._connection  # a low-level server's handlers reach the connection only so
        capabilities = connection.client_capabilities
        state = {
            "capabilities": capabilities.model_dump(mode="json", by_alias=True, exclude_none=True)
            if capabilities
            else None,
            "level": connection.state.get("level"),
            "subscriptions": sorted(connection.state.get("subscriptions", ())),
            "protocol": connection.protocol_version,
        }
        text = json.dumps(state)
    elif params.name == "touch":
        uri = str((params.arguments or {})["uri"])
        for connection in list(SUBSCRIBERS.get(uri, ())):
            await connection.send_resource_updated(uri)
        text = "touched"
    elif params.name == "sleep":
        if (params.arguments or {}).get("notify"):
            await ctx.session.send_progress_notification(
                "sleep", 0, 1, message="sleeping", related_request_id=ctx.request_id
            )
        await anyio.sleep(float((params.arguments or {})["seconds"]))
        text = "slept"
    else:
        raise ValueError(f"Unknown tool {params.name}")
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


# The connections subscribed to each URI (weakly: a closed session's connection is dropped).
SUBSCRIBERS: dict[str, weakref.WeakSet[Any]] = {}


async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    connection = ctx.session._connection
    connection.state.setdefault("subscriptions", set()).add(str(params.uri))
    SUBSCRIBERS.setdefault(str(params.uri), weakref.WeakSet()).add(connection)
    return types.EmptyResult()


async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    ctx.session._connection.state["level"] = params.level
    return types.EmptyResult()


lowlevel = Server("test-lowlevel", on_list_tools=list_tools, on_call_tool=call_tool, on_subscribe_resource=subscribe)
lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
