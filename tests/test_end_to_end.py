"""The official mcp client against a real daphne, both transports: connect, list, call, tools knowing their user."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import ClientSession

from demo.models import Note

from .clients import TRANSPORTS, closed_session, mcp_client, transport_streams

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_whoami_names_the_logged_in_user(daphne: Any, alice_headers: dict[str, str], transport: str) -> None:
    async with mcp_client(daphne.url, alice_headers, transport=transport) as client:
        tools = await client.list_tools()
        assert {"whoami", "list_notes", "add_note", "echo"} <= {tool.name for tool in tools.tools}
        result = await client.call_tool("whoami", {})
    assert not result.is_error
    assert result.structured_content == {"username": "alice", "email": "alice@example.com", "is_staff": False}


async def test_orm_tool_returns_only_the_callers_rows(
    daphne: Any, alice: Any, bob: Any, alice_headers: dict[str, str], bob_headers: dict[str, str], transport: str
) -> None:
    await Note.objects.acreate(owner=alice, title="alice's")
    await Note.objects.acreate(owner=bob, title="bob's")
    async with mcp_client(daphne.url, alice_headers, transport=transport) as client:
        await client.call_tool("add_note", {"title": "alice's second"})
        result = await client.call_tool("list_notes", {})
    titles = sorted(note["title"] for note in result.structured_content["result"])
    assert titles == ["alice's", "alice's second"]
    assert await Note.objects.filter(owner=bob).acount() == 1


async def test_classic_initialize_handshake(daphne: Any, alice_headers: dict[str, str], transport: str) -> None:
    """A client that skips server/discover and goes straight to initialize also works."""
    async with transport_streams(daphne.url, alice_headers, transport=transport) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.protocol_version == "2025-11-25"
            result = await session.call_tool("echo", {"text": "classic"})
    assert result.structured_content == {"result": "classic"}


async def test_session_record_learns_client_and_protocol(
    daphne: Any, alice: Any, alice_headers: dict[str, str], transport: str
) -> None:
    async with transport_streams(daphne.url, alice_headers, transport=transport) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool("echo", {"text": "x"})
    record = await closed_session(user=alice)
    assert record.client_name == "mcp"
    assert record.protocol_version == "2025-11-25"
    assert record.messages_in >= 3 and record.messages_out >= 2
    assert record.user_agent and str(record.remote_addr) == "127.0.0.1"
    assert record.transport == transport


async def test_lowlevel_server_under_second_prefix_knows_its_user(
    daphne: Any, bob_headers: dict[str, str], transport: str
) -> None:
    async with mcp_client(daphne.url, bob_headers, prefix="/mcp-test/", transport=transport) as client:
        result = await client.call_tool("whoami", {})
    assert result.content[0].text == "bob"
