"""The fixtures the official MCP conformance suite's server scenarios call, as an ``MCPServer``.

``@modelcontextprotocol/conformance`` (``conformance server --url URL``) connects
to a server and calls tools, resources and prompts by fixed names (``test_*``,
``test://...``); its SERVER_REQUIREMENTS.md and each scenario's description say
what they must return. This module implements exactly those, for version
0.1.16 of the suite (see ``tests/interop/package.json``). It is a test fixture:
mount it (``"/mcp-conformance/": "tests.conformance_server.conformance"``) and
point the suite at the mount.

Server-to-client requests (sampling, elicitation) and notifications (logging,
progress) go through the session's typed ``send_request``/``send_notification``
rather than the SDK's deprecated convenience wrappers, so importing or running
this module emits no deprecation warnings.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.message import ServerMessageMetadata

from .conformance_input_required import register as register_input_required

# A 1x1 PNG and a minimal WAV header, as the requirements suggest.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

JSON_SCHEMA_2020_12_TOOL = "json_schema_2020_12_tool"
JSON_SCHEMA_2020_12_INPUT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

conformance = MCPServer("mcp-conformance-test-server", version="1.0.0")

# URIs clients subscribed to (per process; the suite only checks the replies).
subscriptions: set[str] = set()


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")


async def _log(ctx: Context, data: str) -> None:
    await ctx.session.send_notification(
        types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams(level="info", logger="conformance-test-server", data=data)
        ),
        related_request_id=ctx.request_id,
    )


async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
    return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)


def _elicited(prefix: str, result: types.ElicitResult) -> types.CallToolResult:
    return _text(f"{prefix}: action={result.action}, content={json.dumps(result.content or {})}")


# Tools


@conformance.tool(description="Tests simple text content response")
def test_simple_text() -> types.CallToolResult:
    return _text("This is a simple text response for testing.")


@conformance.tool(description="Tests image content response")
def test_image_content() -> types.CallToolResult:
    return types.CallToolResult(content=[_image()])


@conformance.tool(description="Tests audio content response")
def test_audio_content() -> types.CallToolResult:
    return types.CallToolResult(content=[types.AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")])


@conformance.tool(description="Tests embedded resource content response")
def test_embedded_resource() -> types.CallToolResult:
    resource = types.TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=resource)])


@conformance.tool(description="Tests response with multiple content types (text, image, resource)")
def test_multiple_content_types() -> types.CallToolResult:
    resource = types.TextResourceContents(
        uri="test://mixed-content-resource",
        mime_type="application/json",
        text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
    )
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text="Multiple content types test:"),
            _image(),
            types.EmbeddedResource(type="resource", resource=resource),
        ]
    )


@conformance.tool(description="Tests tool that emits log messages during execution")
async def test_tool_with_logging(ctx: Context) -> types.CallToolResult:
    await _log(ctx, "Tool execution started")
    await asyncio.sleep(0.05)
    await _log(ctx, "Tool processing data")
    await asyncio.sleep(0.05)
    await _log(ctx, "Tool execution completed")
    return _text("Tool with logging executed successfully")


@conformance.tool(description="Tests tool that reports progress notifications")
async def test_tool_with_progress(ctx: Context) -> types.CallToolResult:
    for step in (0, 50, 100):
        if step:
            await asyncio.sleep(0.05)
        await ctx.report_progress(step, 100, f"Completed step {step} of 100")
    return _text("Tool with progress executed successfully")


@conformance.tool(description="Tests error response handling")
def test_error_handling() -> str:
    raise ToolError("This tool intentionally returns an error for testing")


@conformance.tool(description="Tests server-initiated sampling (LLM completion request)")
async def test_sampling(prompt: str, ctx: Context) -> types.CallToolResult:
    request = types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
            max_tokens=100,
        )
    )
    result = await ctx.session.send_request(
        request, types.CreateMessageResult, metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
    )
    content = result.content
    text = content.text if isinstance(content, types.TextContent) else "No response"
    return _text(f"LLM response: {text}")


@conformance.tool(description="Tests server-initiated elicitation (user input request)")
async def test_elicitation(message: str, ctx: Context) -> types.CallToolResult:
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    return _elicited("User response", await _elicit(ctx, message, schema))


@conformance.tool(description="Tests elicitation with default values for all primitive types (SEP-1034)")
async def test_elicitation_sep1034_defaults(ctx: Context) -> types.CallToolResult:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verification status", "default": True},
        },
    }
    return _elicited("Elicitation completed", await _elicit(ctx, "Please provide user information", schema))


@conformance.tool(description="Tests elicitation with enum schema variations (SEP-1330)")
async def test_elicitation_sep1330_enums(ctx: Context) -> types.CallToolResult:
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
    }
    message = "Please select values using different enum schema types"
    return _elicited("Elicitation completed", await _elicit(ctx, message, schema))


@conformance.tool(description="Tests SSE polling by closing the stream mid-call (SEP-1699)")
async def test_reconnection(ctx: Context) -> types.CallToolResult:
    await _log(ctx, "Before disconnect")
    await ctx.close_sse_stream()
    await asyncio.sleep(0.2)
    await _log(ctx, "After reconnect")
    return _text("Reconnection test completed")


@conformance.tool(name=JSON_SCHEMA_2020_12_TOOL, description="Tool with JSON Schema 2020-12 features")
def json_schema_2020_12_tool(name: str = "", address: dict[str, Any] | None = None) -> types.CallToolResult:
    return _text(json.dumps({"name": name, "address": address}))


# The advertised schema is the suite's, verbatim ($schema, $defs, additionalProperties survive listing).
conformance._tool_manager.get_tool(JSON_SCHEMA_2020_12_TOOL).parameters = JSON_SCHEMA_2020_12_INPUT


# Resources


@conformance.resource(
    "test://static-text",
    name="Static Text Resource",
    description="A static text resource for testing",
    mime_type="text/plain",
)
def static_text() -> str:
    return "This is the content of the static text resource."


@conformance.resource(
    "test://static-binary",
    name="Static Binary Resource",
    description="A static binary resource (image) for testing",
    mime_type="image/png",
)
def static_binary() -> bytes:
    return base64.b64decode(PNG_BASE64)


@conformance.resource(
    "test://template/{id}/data",
    name="Resource Template",
    description="A resource template with parameter substitution",
    mime_type="application/json",
)
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))


@conformance.resource(
    "test://watched-resource",
    name="Watched Resource",
    description="A resource that can be subscribed to",
    mime_type="text/plain",
)
def watched_resource() -> str:
    return "Watched resource content"


async def _subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscriptions.add(str(params.uri))
    return types.EmptyResult()


async def _unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscriptions.discard(str(params.uri))
    return types.EmptyResult()


async def _set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


# Registered directly on the low-level server: MCPServer has no public hook for these,
# and Server(on_set_logging_level=...) would warn that logging is deprecated in 2026-07-28.
conformance._lowlevel_server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, _subscribe)
conformance._lowlevel_server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, _unsubscribe)
conformance._lowlevel_server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, _set_level)


# Prompts


@conformance.prompt(description="A simple prompt without arguments")
def test_simple_prompt() -> list[UserMessage]:
    return [UserMessage(types.TextContent(type="text", text="This is a simple prompt for testing."))]


@conformance.prompt(description="A prompt with required arguments")
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
    return [UserMessage(types.TextContent(type="text", text=text))]


@conformance.prompt(description="A prompt that includes an embedded resource")
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
    resource = types.TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
    )
    return [
        UserMessage(types.EmbeddedResource(type="resource", resource=resource)),
        UserMessage(types.TextContent(type="text", text="Please process the embedded resource above.")),
    ]


@conformance.prompt(description="A prompt that includes image content")
def test_prompt_with_image() -> list[UserMessage]:
    return [
        UserMessage(_image()),
        UserMessage(types.TextContent(type="text", text="Please analyze the image above.")),
    ]


# Completion: the suite only needs the capability and a well-formed (possibly empty) answer.


@conformance.completion()
async def complete(ref: Any, argument: types.CompletionArgument, context: Any) -> types.Completion:
    return types.Completion(values=[], total=0, has_more=False)


# The 0.2 prerelease's multi-round-trip fixtures (protocol 2026-07-28).
register_input_required(conformance)
