"""Session binding: the seed PR's six cases, and hijack attempts by another user."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from demo.models import Note
from mcp_sessions.ids import is_well_formed
from mcp_sessions.models import McpSession

from .clients import handshake, jsonrpc, mcp_client, raw_stream
from .conftest import login_headers

pytestmark = pytest.mark.django_db(transaction=True)


# The seed PR's six


async def test_session_id_is_the_records_key_and_stored_only_hashed(
    daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
        session_id = stream.session_id
        record = await McpSession.objects.aget(user=alice)
        assert record.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
        assert await McpSession.objects.with_session_id(session_id).acount() == 1

        def stored_anywhere() -> bool:
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM mcp_sessions_mcpsession")
                return any(session_id in str(value) for row in cursor.fetchall() for value in row)

        assert not await sync_to_async(stored_anywhere)()


async def test_concurrent_connections_get_unique_random_ids(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    ids: list[str] = []

    async def connect() -> None:
        async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
            ids.append(stream.session_id)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(connect)
    assert len(set(ids)) == 20
    assert all(is_well_formed(session_id) for session_id in ids)
    # 43 url-safe base64 characters: 256 random bits, sharing no common prefix.
    assert len({session_id[:8] for session_id in ids}) == 20


async def test_missing_session_id_is_400(daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]) -> None:
    response = await http.post(f"{daphne.url}/mcp/messages/", json=jsonrpc("ping"), headers=alice_headers)
    assert response.status_code == 400


async def test_bogus_session_id_is_404(daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]) -> None:
    response = await http.post(
        f"{daphne.url}/mcp/messages/?session_id={'A' * 43}", json=jsonrpc("ping"), headers=alice_headers
    )
    assert response.status_code == 404


async def test_each_post_reaches_the_session_it_names(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    async with (
        raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as first,
        raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as second,
    ):
        for stream in (first, second):
            await handshake(http, daphne.url, stream, alice_headers)
        for stream, text in ((first, "to-first"), (second, "to-second")):
            call = jsonrpc("tools/call", {"name": "echo", "arguments": {"text": text}}, id=1)
            response = await http.post(daphne.url + stream.endpoint, json=call, headers=alice_headers)
            assert response.status_code == 202
        assert (await first.next_message())["result"]["structuredContent"] == {"result": "to-first"}
        assert (await second.next_message())["result"]["structuredContent"] == {"result": "to-second"}


async def test_fifty_concurrent_clients_with_identical_request_ids_get_only_their_own_results(
    daphne: Any, make_user: Any
) -> None:
    users = [await sync_to_async(make_user)(f"user{i}") for i in range(5)]
    headers = [await sync_to_async(login_headers)(user) for user in users]
    results: dict[int, list[tuple[str, str]]] = {}

    async def run(client_no: int) -> None:
        # Every client numbers its requests from the same start, so JSON-RPC ids collide across sessions.
        user_no = client_no % len(users)
        async with mcp_client(daphne.url, headers[user_no]) as client:
            mine = []
            for call_no in range(3):
                text = f"client{client_no}-call{call_no}"
                echoed = await client.call_tool("echo", {"text": text})
                who = await client.call_tool("whoami", {})
                mine.append((echoed.structured_content["result"], who.structured_content["username"]))
            results[client_no] = mine

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for client_no in range(50):
                tg.start_soon(run, client_no)

    assert len(results) == 50
    for client_no, mine in results.items():
        assert mine == [(f"client{client_no}-call{n}", f"user{client_no % len(users)}") for n in range(3)]


# Hijack attempts


async def test_other_user_cannot_inject_a_tool_call(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], bob_headers: dict[str, str]
) -> None:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, daphne.url, stream, alice_headers)
        call = jsonrpc("tools/call", {"name": "add_note", "arguments": {"title": "from bob"}}, id=99)
        response = await http.post(daphne.url + stream.endpoint, json=call, headers=bob_headers)
        assert response.status_code == 404
        # Alice's stream carries nothing for Bob's request; her next reply is her own.
        ping = await http.post(daphne.url + stream.endpoint, json=jsonrpc("ping", id=5), headers=alice_headers)
        assert ping.status_code == 202
        assert (await stream.next_message())["id"] == 5
    assert await Note.objects.acount() == 0


async def test_stream_opened_with_anothers_session_id_gets_nothing_of_theirs(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], bob_headers: dict[str, str]
) -> None:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as alices:
        await handshake(http, daphne.url, alices, alice_headers)
        url = f"{daphne.url}/mcp/sse?session_id={alices.session_id}"
        async with raw_stream(http, url, bob_headers) as bobs:
            assert bobs.session_id != alices.session_id  # the parameter is ignored: Bob gets a session of his own
            call = jsonrpc("tools/call", {"name": "whoami", "arguments": {}}, id=1)
            assert (await http.post(daphne.url + alices.endpoint, json=call, headers=alice_headers)).status_code == 202
            assert (await alices.next_message())["result"]["structuredContent"]["username"] == "alice"
            with pytest.raises(TimeoutError):
                await bobs.next_event(timeout=0.5)


async def test_no_cookie_gets_401(daphne: Any, http: httpx2.AsyncClient) -> None:
    response = await http.get(f"{daphne.url}/mcp/sse")
    assert response.status_code == 401
    assert json.loads(response.content)["error"]["data"]["reason"] == "authentication_required"
