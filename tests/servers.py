"""A low-level MCP server for the tests: knows its user, and can flood a slow client."""

import json
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


lowlevel = Server("test-lowlevel", on_list_tools=list_tools, on_call_tool=call_tool)
