"""The conformance suite's protocol 2026-07-28 fixtures (0.2.0-alpha.12): multi-round-trip (SEP-2322) and capability.

Registered on :data:`tests.conformance_server.conformance`. Each tool answers its first round with an
``InputRequiredResult`` (what the scenario's description in the suite asks for, word for word) and completes
once the client retries with the responses; ``requestState`` is sealed and verified by the gateway's
per-mount boundary (:mod:`mcp_gateway.modern.state`), never by the tools.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.exceptions import MCPError


def _elicit(message: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def _sample(text: str, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": {"type": "text", "text": text}}]
    return {"method": "sampling/createMessage", "params": {"messages": messages, "maxTokens": max_tokens}}


ROOTS = {"method": "roots/list", "params": {}}
USER_NAME = _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])


def _input_required(requests: dict[str, Any], state: str | None = None) -> types.InputRequiredResult:
    wire: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        wire["requestState"] = state
    return types.InputRequiredResult.model_validate(wire)


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def _answers(ctx: Context, *keys: str) -> dict[str, Any] | None:
    """The responses to ``keys``, as wire dicts, if the client sent them all; else None (ask again)."""
    responses = ctx.input_responses or {}
    if not all(key in responses for key in keys):
        return None
    return {key: responses[key].model_dump(mode="json", by_alias=True, exclude_none=True) for key in keys}


def _sampled_text(answer: dict[str, Any]) -> str:
    content = answer.get("content")
    return str(content.get("text", "")) if isinstance(content, dict) else json.dumps(content)


def register(server: MCPServer) -> None:
    """Add the multi-round-trip tools and prompt to ``server``."""

    @server.tool(description="Asks for the user's name with one elicitation input request (SEP-2322)")
    def test_input_required_result_elicitation(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        answers = _answers(ctx, "user_name")
        if answers is None:
            return _input_required({"user_name": USER_NAME})
        return _text(f"Hello, {(answers['user_name'].get('content') or {}).get('name', '')}!")

    @server.tool(description="Asks a sampling question with one input request (SEP-2322)")
    def test_input_required_result_sampling(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        answers = _answers(ctx, "capital_question")
        if answers is None:
            return _input_required({"capital_question": _sample("What is the capital of France?", 100)})
        return _text(f"Sampling said: {_sampled_text(answers['capital_question'])}")

    @server.tool(description="Asks for the client's roots with one input request (SEP-2322)")
    def test_input_required_result_list_roots(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        answers = _answers(ctx, "client_roots")
        if answers is None:
            return _input_required({"client_roots": ROOTS})
        roots = [root.get("uri", "") for root in answers["client_roots"].get("roots", [])]
        return _text(f"Roots: {', '.join(roots)}")

    @server.tool(description="Round-trips requestState with one elicitation (SEP-2322)")
    def test_input_required_result_request_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        confirm = _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
        if _answers(ctx, "confirm") is None or ctx.request_state != "awaiting-confirm":
            return _input_required({"confirm": confirm}, "awaiting-confirm")
        return _text("state-ok: the confirmation arrived with its state")

    @server.tool(description="Asks for elicitation, sampling and roots at once (SEP-2322)")
    def test_input_required_result_multiple_inputs(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        keys = ("user_name", "greeting", "client_roots")
        if _answers(ctx, *keys) is None or ctx.request_state != "awaiting-three":
            requests = {"user_name": USER_NAME, "greeting": _sample("Generate a greeting", 50), "client_roots": ROOTS}
            return _input_required(requests, "awaiting-three")
        return _text("All three inputs received")

    @server.tool(description="Two rounds of elicitation with evolving requestState (SEP-2322)")
    def test_input_required_result_multi_round(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        if ctx.request_state == "round-2" and _answers(ctx, "step2") is not None:
            return _text("Both steps complete")
        if ctx.request_state == "round-1" and _answers(ctx, "step1") is not None:
            step2 = _elicit("Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"])
            return _input_required({"step2": step2}, "round-2")
        step1 = _elicit("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])
        return _input_required({"step1": step1}, "round-1")

    @server.tool(description="Issues integrity-protected requestState (SEP-2322)")
    def test_input_required_result_tampered_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        if ctx.request_state == "protected" and _answers(ctx, "confirm") is not None:
            return _text("Confirmed with intact state")
        confirm = _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
        return _input_required({"confirm": confirm}, "protected")

    @server.tool(description="Asks only for what the client's capabilities allow (SEP-2322)")
    def test_input_required_result_capabilities(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        capabilities = ctx.client_capabilities or types.ClientCapabilities()
        requests: dict[str, Any] = {}
        if capabilities.sampling is not None:
            requests["question"] = _sample("What is the capital of France?", 100)
        if capabilities.elicitation is not None:
            requests["user_name"] = USER_NAME
        if capabilities.roots is not None:
            requests["client_roots"] = ROOTS
        if not requests or _answers(ctx, *requests) is not None:
            return _text("Nothing more to ask")
        return _input_required(requests)

    @server.tool(description="Needs the sampling capability: refused with -32021 when the client lacks it (SEP-2575)")
    def test_missing_capability(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            required = types.ClientCapabilities(sampling=types.SamplingCapability())
            data = types.MissingRequiredClientCapabilityErrorData(required_capabilities=required)
            raise MCPError(
                code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="This tool needs the client's sampling capability",
                data=data.model_dump(by_alias=True, mode="json", exclude_none=True),
            )
        answers = _answers(ctx, "question")
        if answers is None:
            return _input_required({"question": _sample("Say something", 20)})
        return _text(f"Sampling said: {_sampled_text(answers['question'])}")

    @server.prompt(description="A prompt that needs elicited context first (SEP-2322)")
    def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | types.InputRequiredResult:
        answers = _answers(ctx, "user_context")
        if answers is None:
            context = _elicit("What context should the prompt use?", {"context": {"type": "string"}}, ["context"])
            return _input_required({"user_context": context})
        given = (answers["user_context"].get("content") or {}).get("context", "")
        return [UserMessage(f"Use this context: {given}")]
