"""Parked sessions (mcp_gateway/sessions/parking.py): an idle session's server loop stops, its state stays.

Every test runs a server of its own that parks a session as soon as it is idle (``MCP_GATEWAY_PARK_AFTER``
tiny), and waits for it to have parked through the test-only ``/_test/parked`` probe before going on.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from mcp import Client
from mcp_types import TextContent

from mcp_sessions.models import CloseReason, McpSession
from mcp_sessions.revocation import revoke

from .clients import BOUND, INITIALIZED, TRANSPORTS, RawStream, jsonrpc, poll, raw_stream, transport_streams

pytestmark = pytest.mark.django_db(transaction=True)

PARKING = {"MCP_GATEWAY_PARK_AFTER": 0.05}
CAPABILITIES = {"roots": {"listChanged": True}, "sampling": {}}


async def parked(http: httpx2.AsyncClient, server: Any) -> int:
    count: int = (await http.get(f"{server.url}/_test/parked")).json()["parked"]
    return count


async def until_parked(http: httpx2.AsyncClient, server: Any, count: int = 1) -> None:
    seen = await poll(lambda: parked(http, server), lambda seen: seen >= count)
    assert seen >= count, f"{seen} sessions parked, not {count}"


async def post(http: httpx2.AsyncClient, server: Any, stream: RawStream, headers: dict[str, str], message: Any) -> None:
    response = await http.post(server.url + stream.endpoint, json=message, headers=headers)
    assert response.status_code == 202, response.text


async def ask(
    http: httpx2.AsyncClient, server: Any, stream: RawStream, headers: dict[str, str], message: dict[str, Any]
) -> dict[str, Any]:
    await post(http, server, stream, headers, message)
    reply = await stream.next_message()
    assert reply.get("id") == message["id"], reply
    return reply


async def open_initialized(http: httpx2.AsyncClient, server: Any, stream: RawStream, headers: dict[str, str]) -> None:
    initialize = jsonrpc(
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": CAPABILITIES, "clientInfo": {"name": "p", "version": "1"}},
        id=0,
    )
    assert "result" in await ask(http, server, stream, headers, initialize)
    await post(http, server, stream, headers, INITIALIZED)


def session_state(reply: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(reply["result"]["content"][0]["text"])
    return state


async def test_a_parked_session_resumes_with_its_state(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=PARKING)
    async with raw_stream(http, f"{server.url}/mcp-test/sse", alice_headers) as stream:
        await open_initialized(http, server, stream, alice_headers)
        await until_parked(http, server)
        await ask(http, server, stream, alice_headers, jsonrpc("logging/setLevel", {"level": "warning"}, id=1))
        await until_parked(http, server)
        await ask(http, server, stream, alice_headers, jsonrpc("resources/subscribe", {"uri": "notes://1"}, id=2))
        await until_parked(http, server)
        call = jsonrpc("tools/call", {"name": "session", "arguments": {}}, id=3)
        state = session_state(await ask(http, server, stream, alice_headers, call))
    assert state == {
        "capabilities": CAPABILITIES,
        "level": "warning",
        "subscriptions": ["notes://1"],
        "protocol": "2025-11-25",
    }


async def test_a_request_before_initialize_is_still_refused_after_a_park(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    """Parking keeps the state the SDK gates on: an uninitialized session stays uninitialized."""
    server = start_daphne(overrides=PARKING)
    async with raw_stream(http, f"{server.url}/mcp-test/sse", alice_headers) as stream:
        await ask(http, server, stream, alice_headers, jsonrpc("ping", id=1))
        await until_parked(http, server)
        reply = await ask(http, server, stream, alice_headers, jsonrpc("tools/list", id=2))
    assert "error" in reply, reply


async def test_messages_keep_their_order_across_parks(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    """Requests racing the park (it may come between any two) are all answered, and subscriptions all kept."""
    server = start_daphne(overrides={"MCP_GATEWAY_PARK_AFTER": 0.001})
    uris = [f"notes://{n}" for n in range(20)]
    async with raw_stream(http, f"{server.url}/mcp-test/sse", alice_headers) as stream:
        await open_initialized(http, server, stream, alice_headers)
        for n, uri in enumerate(uris, start=1):
            await ask(http, server, stream, alice_headers, jsonrpc("resources/subscribe", {"uri": uri}, id=n))
            await anyio.sleep(0.002 * (n % 3))
        await until_parked(http, server)
        call = jsonrpc("tools/call", {"name": "session", "arguments": {}}, id=100)
        state = session_state(await ask(http, server, stream, alice_headers, call))
    assert state["subscriptions"] == sorted(uris)


async def test_a_server_notification_reaches_a_parked_session(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=PARKING)
    async with (
        raw_stream(http, f"{server.url}/mcp-test/sse", alice_headers) as listener,
        raw_stream(http, f"{server.url}/mcp-test/sse", alice_headers) as toucher,
    ):
        await open_initialized(http, server, listener, alice_headers)
        await ask(http, server, listener, alice_headers, jsonrpc("resources/subscribe", {"uri": "notes://7"}, id=1))
        await open_initialized(http, server, toucher, alice_headers)
        await until_parked(http, server, 2)
        call = jsonrpc("tools/call", {"name": "touch", "arguments": {"uri": "notes://7"}}, id=2)
        await ask(http, server, toucher, alice_headers, call)
        notification = await listener.next_message()
        # And the resumed session still answers, and parks again.
        await until_parked(http, server, 2)
        reply = await ask(http, server, listener, alice_headers, jsonrpc("ping", id=3))
    assert notification == {
        "jsonrpc": "2.0",
        "method": "notifications/resources/updated",
        "params": {"uri": "notes://7"},
    }
    assert reply["result"] == {}


async def test_revoking_a_parked_session_ends_its_stream(
    start_daphne: Any,
    redis_settings: dict[str, Any],
    http: httpx2.AsyncClient,
    alice: Any,
    alice_headers: dict[str, str],
) -> None:
    """From this process, through the channel layer both share (Redis), as the admin's revocation does."""
    server = start_daphne(overrides={**redis_settings, **PARKING})
    async with raw_stream(http, f"{server.url}/mcp-test/sse", alice_headers) as stream:
        await open_initialized(http, server, stream, alice_headers)
        await until_parked(http, server)
        await sync_to_async(revoke)(McpSession.objects.filter(user=alice).open())
        with anyio.fail_after(BOUND), pytest.raises(EOFError):
            while True:
                await stream.next_event(timeout=BOUND)
    record = await McpSession.objects.aget(user=alice)
    assert record.close_reason == CloseReason.REVOKED


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_official_client_goes_on_after_its_session_parked(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], transport: str
) -> None:
    """HTTP+SSE: the client opens a 2026-07-28 session (``server/discover``); Streamable HTTP: a handshake one."""
    server = start_daphne(overrides=PARKING)
    mode = "auto" if transport == "sse" else "legacy"  # auto on Streamable HTTP would open no session at all
    async with Client(transport_streams(server.url, alice_headers, "/mcp-test/", transport), mode=mode) as client:
        first = await client.call_tool("whoami", {})
        await until_parked(http, server)
        second = await client.call_tool("whoami", {})
        await until_parked(http, server)
        state = await client.call_tool("session", {})
    assert [c.text for r in (first, second) for c in r.content if isinstance(c, TextContent)] == ["alice", "alice"]
    [content] = state.content
    era = "2026-07-28" if transport == "sse" else "2025-11-25"
    assert isinstance(content, TextContent) and json.loads(content.text)["protocol"] == era
    closed = McpSession.objects.filter(server="/mcp-test/").exclude(close_reason="")
    record = await poll(closed.afirst, lambda record: record is not None)
    assert record is not None and record.messages_in >= 4, "the activity of every loop is counted"


async def test_a_connection_holds_no_exit_stack_until_used_and_a_settled_one_shares_its_set_event() -> None:
    from contextlib import AsyncExitStack

    from mcp.server.runner import aclose_shielded

    from mcp_gateway.sessions import parking

    unused, used = parking.new_connection(), parking.new_connection()
    assert not isinstance(unused.exit_stack, AsyncExitStack)
    ran: list[str] = []

    async def callback() -> None:
        ran.append("unwound")

    used.exit_stack.push_async_callback(callback)
    assert isinstance(used.exit_stack, AsyncExitStack)
    await aclose_shielded(used)
    await aclose_shielded(unused)
    assert ran == ["unwound"]

    first, second = parking.new_connection(), parking.new_connection()
    parking.settle(first)
    assert not first.initialized.is_set()  # not initialized: its own event stays
    first.initialized.set()
    second.initialized.set()
    parking.settle(first)
    parking.settle(second)
    assert first.initialized is second.initialized and first.initialized.is_set()
