"""Stream lifecycle against real daphne processes: disconnects, shutdown, stalled readers, leftovers."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async

from mcp_gateway.exceptions import TOO_MANY_REQUESTS
from mcp_sessions.models import CloseReason, McpSession

from .clients import closed_session, handshake, jsonrpc, mcp_client, poll, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


async def test_client_disconnect_closes_the_session(
    daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, daphne.url, stream, alice_headers)
        endpoint = stream.endpoint
    record = await closed_session(user=alice)
    assert record.close_reason == CloseReason.CLIENT_DISCONNECT
    response = await http.post(daphne.url + endpoint, json=jsonrpc("ping"), headers=alice_headers)
    assert response.status_code == 404


async def test_sigterm_closes_open_sessions(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne()
    async with (
        raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as first,
        raw_stream(http, f"{server.url}/mcp/sse", alice_headers),
    ):
        await handshake(http, server.url, first, alice_headers)
        assert await McpSession.objects.open().filter(user=alice).acount() == 2
        await asyncio.to_thread(server.stop, signal.SIGTERM)
    assert await McpSession.objects.open().acount() == 0
    reasons = [r async for r in McpSession.objects.filter(user=alice).values_list("close_reason", flat=True)]
    assert reasons == [CloseReason.SERVER_SHUTDOWN] * 2


async def test_sigterm_under_plain_daphne_closes_the_sessions_of_its_streams(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    """Plain ``daphne`` cancels each connection's consumer at shutdown: a stream's session closes with it."""
    server = start_daphne(module="daphne")
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)
        await asyncio.to_thread(server.stop, signal.SIGTERM)
    reasons = [r async for r in McpSession.objects.filter(user=alice).values_list("close_reason", flat=True)]
    assert reasons == [CloseReason.SERVER_SHUTDOWN]


STALL_SETTINGS = {
    "MCP_GATEWAY_STALL_TIMEOUT": 1.0,
    "MCP_GATEWAY_OUTBOUND_QUEUE_SIZE": 4,
    "MCP_GATEWAY_MAX_REQUESTS_IN_FLIGHT": 4,
    # POSTs are answered fast enough to pass 600 a minute before the stall is detected; a 429 (counted before
    # binding) would then hide the 404 these tests wait for.
    "MCP_GATEWAY_RATE_LIMIT": (100_000, 60),
}


def open_unread_stream(port: int, headers: dict[str, str]) -> tuple[socket.socket, str]:
    """Open an SSE stream on a socket with a tiny receive buffer, read its endpoint, then never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    lines = ["GET /mcp-test/sse HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    received = b""
    while (match := re.search(rb"data: (/mcp-test/messages/\?session_id=[A-Za-z0-9_-]{43})", received)) is None:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return sock, match.group(1).decode()


async def test_stalled_reader_is_disconnected_and_memory_stays_bounded(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=STALL_SETTINGS)
    sock, endpoint = await asyncio.to_thread(open_unread_stream, server.port, alice_headers)
    try:
        rss_before = server.rss_bytes()
        url = server.url + endpoint
        for message in (
            jsonrpc(
                "initialize",
                {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "stall", "version": "0"}},
                id=0,
            ),
            jsonrpc("notifications/initialized", id=None),
        ):
            assert (await http.post(url, json=message, headers=alice_headers)).status_code == 202
        statuses = []
        offered = 0
        with anyio.fail_after(60):
            for n in range(1, 5000):
                call = jsonrpc("tools/call", {"name": "blob", "arguments": {"size": 2 * MiB}}, id=n)
                status = (await http.post(url, json=call, headers=alice_headers)).status_code
                statuses.append(status)
                offered += 2 * MiB if status == 202 else 0
                if status == 404:
                    break
        record = await closed_session(user=alice)
        growth = server.rss_bytes() - rss_before
    finally:
        sock.close()
    assert record.close_reason == CloseReason.STALLED
    assert statuses[-1] == 404, "POSTs to a closed session must be refused"
    assert set(statuses) <= {202, 404, 503}
    # Unbounded, every accepted call's 2 MiB result would sit in daphne's buffer.
    assert offered > 100 * MiB
    print(f"stalled stream: {len(statuses)} POSTs, {offered / MiB:.0f} MiB offered, server grew {growth / MiB:.1f} MiB")
    assert growth < 64 * MiB, f"server grew by {growth / MiB:.0f} MiB for {offered / MiB:.0f} MiB offered"
    # The worker still serves everyone else.
    async with mcp_client(server.url, alice_headers) as client:
        assert (await client.call_tool("echo", {"text": "still here"})).structured_content == {"result": "still here"}


async def test_requests_beyond_the_in_flight_limit_are_answered_with_an_error(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=STALL_SETTINGS)
    async with raw_stream(http, f"{server.url}/mcp-test/sse", alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)
        for n in range(1, 6):
            call = jsonrpc("tools/call", {"name": "sleep", "arguments": {"seconds": 0.5}}, id=n)
            assert (await http.post(server.url + stream.endpoint, json=call, headers=alice_headers)).status_code == 202
        replies = {}
        for _ in range(5):
            reply = await stream.next_message()
            replies[reply["id"]] = reply
    assert replies[5]["error"]["code"] == TOO_MANY_REQUESTS  # the gateway's own code, not the SDK's -32001
    assert all(replies[n]["result"]["content"][0]["text"] == "slept" for n in range(1, 5))


async def test_no_task_is_left_behind_after_disconnects(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], alice: Any
) -> None:
    async def tasks() -> int:
        return json.loads((await http.get(f"{daphne.url}/_test/tasks")).content)["tasks"]

    async def sessions_open() -> bool:
        return await McpSession.objects.open().aexists()

    # One session first, so the worker's lease heartbeat (one task per process, for good) is already running;
    # then wait for sessions of earlier tests to finish closing before taking the baseline.
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers):
        pass
    assert not await poll(sessions_open, lambda left: not left), "sessions of earlier tests are still open"
    baseline = await tasks()

    async def session(n: int) -> None:
        async with mcp_client(daphne.url, alice_headers) as client:
            await client.call_tool("echo", {"text": str(n)})

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(session, n)
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers):
        pass  # and one that leaves before it ever initializes

    assert not await poll(sessions_open, lambda left: not left), "sessions still open after their clients left"
    count = await poll(tasks, lambda count: count <= baseline)
    if count > baseline:
        stacks = (await http.get(f"{daphne.url}/_test/tasks?stacks=1")).json()["stacks"]
        pytest.fail(f"{count - baseline} tasks left behind ({count}, baseline {baseline}); where they wait: {stacks}")


async def test_idle_stream_gets_keepalive_pings_and_activity_is_saved(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_PING_INTERVAL": 0.2})
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)
        pings = 0
        with anyio.fail_after(5):
            async for line in stream._lines:
                pings += line == ": ping"
                if pings == 2:
                    break
        # Counters reach the record with the pings, before the session closes.
        record = await McpSession.objects.aget(user=alice)
        assert record.closed_at is None
        assert record.messages_in == 2 and record.messages_out == 1
        assert record.client_name == "raw-test" and record.protocol_version == "2025-11-25"
        assert record.last_seen_at > record.created_at


async def test_workers_recover_when_the_database_drops_their_connections(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_ENGINE=postgresql), where connections can be terminated")
    database = dict(settings.DATABASES["default"])
    database["OPTIONS"] = {**database.get("OPTIONS", {}), "application_name": "mcp-recovery-test"}
    server = start_daphne(overrides={"DATABASES": {"default": database}})
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)

        def terminate_other_backends() -> int:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'mcp-recovery-test'"
                )
                return cursor.fetchone()[0]

        assert await sync_to_async(terminate_other_backends)() >= 1
        statuses = []
        for n in range(5):
            response = await http.post(server.url + stream.endpoint, json=jsonrpc("ping", id=n), headers=alice_headers)
            statuses.append(response.status_code)
            if response.status_code == 202:
                assert (await stream.next_message())["id"] == n
                break
        assert statuses[-1] == 202, statuses
        assert set(statuses) <= {202, 503}, "a dropped connection must never surface as a 500"


@pytest.mark.parametrize("failure", [ConnectionError("Redis went away"), TimeoutError()], ids=["connection", "timeout"])
async def test_a_message_the_channel_layer_fails_to_take_is_refused_503_on_both_transports(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """Either transport's POST says "retry later" (503), never 500, when the layer cannot take the message."""
    from channels.layers import get_channel_layer
    from mcp_types import JSONRPCNotification

    from mcp_gateway.auth import Credential
    from mcp_gateway.binding import BoundSession
    from mcp_gateway.exceptions import ServiceUnavailable
    from mcp_gateway.http import GatewayRequest
    from mcp_gateway.mounts import Mount
    from mcp_gateway.transports.sse import MessagesConsumer
    from mcp_gateway.transports.streamable import StreamableHTTPConsumer
    from mcp_gateway.worker import worker

    from .asgi_helpers import http_scope

    async def failing(*args: Any, **kwargs: Any) -> None:
        raise failure

    monkeypatch.setattr(worker, "send_to_session", failing)
    message = JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")
    for consumer_class in (MessagesConsumer, StreamableHTTPConsumer):
        consumer = consumer_class(Mount("/mcp/", "tests.servers.lowlevel"))
        consumer.request = GatewayRequest(http_scope(method="POST", path="/mcp/"))
        consumer.channel_layer = get_channel_layer()
        with pytest.raises(ServiceUnavailable):
            session = BoundSession(pk=1, ref="0" * 12, channel_name="c")
            credential = Credential(user=None, scheme="bearer", ambient=False)
            await consumer.send_to_session(session, b"{}", message, credential=credential)
