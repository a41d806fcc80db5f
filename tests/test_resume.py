"""Resumable HTTP+SSE streams: Last-Event-ID picks a dropped session up, on any worker, for its owner only."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from mcp_sessions.models import CloseReason, McpSession

from .clients import RawStream, closed_session, handshake, jsonrpc, poll, raw_stream, resumed_stream
from .test_tickets import get_ticket

pytestmark = pytest.mark.django_db(transaction=True)

RESUMABLE = {"MCP_GATEWAY_RESUME_TIMEOUT": 30.0}
# The sweep saves each session's counts this often, so a test can see the server has answered while no stream
# was there (the keepalive comments this also sends are skipped by the readers).
SWEPT = {"MCP_GATEWAY_PING_INTERVAL": 0.1}
SSE = "/mcp-test/sse"


def blob(request_id: int, size: int = 16) -> dict[str, Any]:
    return jsonrpc("tools/call", {"name": "blob", "arguments": {"size": size}}, id=request_id)


def nap(request_id: int, seconds: float) -> dict[str, Any]:
    return jsonrpc("tools/call", {"name": "sleep", "arguments": {"seconds": seconds}}, id=request_id)


async def post(http: httpx2.AsyncClient, url: str, stream: RawStream, message: Any, headers: dict[str, str]) -> None:
    response = await http.post(url + stream.endpoint, json=message, headers=headers)
    assert response.status_code == 202, response.text


async def replies(stream: RawStream, count: int) -> list[tuple[int, str]]:
    """The next ``count`` messages as (JSON-RPC id, event id), failing on anything else."""
    received = []
    for _ in range(count):
        message = await stream.next_message()
        assert "result" in message, message
        received.append((message["id"], stream.last_id))
    return received


async def answered(messages_out: int) -> McpSession:
    """The session's record once the sweep has saved ``messages_out`` messages from the server (waits at most BOUND)."""

    async def record() -> McpSession:
        return await McpSession.objects.aget()

    found = await poll(record, lambda r: r.messages_out >= messages_out)
    assert found.messages_out == messages_out, f"{found.messages_out} server messages, {messages_out} expected"
    return found


def seq(event_id: str | None) -> int:
    assert event_id is not None
    return int(event_id.rsplit(".", 1)[1])


async def test_every_event_has_an_id_naming_the_session_not_its_secret(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=RESUMABLE)
    async with raw_stream(http, server.url + SSE, alice_headers) as stream:
        endpoint_id = stream.last_id
        await handshake(http, server.url, stream, alice_headers)
        record = await McpSession.objects.aget()
        assert endpoint_id == f"{record.ref}.0.1"
        assert stream.last_id == f"{record.ref}.0.2"
        assert stream.session_id not in (stream.last_id or "")


async def test_a_dropped_stream_resumes_with_every_missed_event_once_and_in_order(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={**RESUMABLE, **SWEPT})
    async with raw_stream(http, server.url + SSE, alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)
        for request_id in (1, 2, 3):
            await post(http, server.url, stream, blob(request_id), alice_headers)
        assert [i for i, _ in await replies(stream, 3)] == [1, 2, 3]
        seen = stream.last_id
        # In flight when the connection drops: answered while no stream is there.
        for request_id in (4, 5, 6):
            await post(http, server.url, stream, nap(request_id, 0.2 * (request_id - 3)), alice_headers)
        endpoint = stream.endpoint

    # Sent while the stream is down: still accepted, answered into the buffer.
    for request_id in (7, 8):
        response = await http.post(server.url + endpoint, json=blob(request_id), headers=alice_headers)
        assert response.status_code == 202, response.text
    await answered(1 + 8)  # every call answered into the buffer (and the initialize before them)

    async with resumed_stream(http, server.url + SSE, seen, alice_headers) as resumed:
        resumed.endpoint = endpoint
        got = await replies(resumed, 5)
        assert sorted(i for i, _ in got) == [4, 5, 6, 7, 8]
        assert [seq(e) for _, e in got] == list(range(seq(seen) + 1, seq(seen) + 6))
        # Nothing is replayed twice: the next event is the answer to a new request.
        await post(http, server.url, resumed, blob(9), alice_headers)
        assert [i for i, _ in await replies(resumed, 1)] == [9]
    # One record served throughout, and it counted everything: initialize, initialized and nine calls in, their
    # ten answers out.
    assert await McpSession.objects.acount() == 1
    assert (await answered(10)).messages_in == 11


async def test_a_browser_resumes_with_a_fresh_ticket_never_the_old_one(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=RESUMABLE)
    first = await get_ticket(http, server.url, alice_headers)
    async with raw_stream(http, f"{server.url}{SSE}?ticket={first}") as stream:
        await handshake(http, server.url, stream, alice_headers)
        seen, endpoint = stream.last_id, stream.endpoint
    await http.post(server.url + endpoint, json=blob(1), headers=alice_headers)

    reused = await http.get(f"{server.url}{SSE}?ticket={first}&last_event_id={seen}")
    assert reused.status_code == 401
    assert reused.json()["error"]["data"]["reason"] == "invalid_ticket"

    fresh = await get_ticket(http, server.url, alice_headers)
    async with resumed_stream(http, f"{server.url}{SSE}?ticket={fresh}&last_event_id={seen}", None) as resumed:
        assert [i for i, _ in await replies(resumed, 1)] == [1]


async def _seen(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> tuple[str, str]:
    async with raw_stream(http, url + SSE, headers) as stream:
        await handshake(http, url, stream, headers)
        return str(stream.last_id), stream.endpoint


REFUSALS = [
    # (id, whose credential, how the Last-Event-ID is mangled, status, reason)
    ("foreign-user", "bob", lambda seen: seen, 404, "session_not_found"),
    ("no-credential", None, lambda seen: seen, 401, "authentication_required"),
    ("malformed", "alice", lambda seen: seen + "x", 400, "invalid_event_id"),
    ("never-sent", "alice", lambda seen: seen.rsplit(".", 1)[0] + ".99", 400, "invalid_event_id"),
    ("other-stream", "alice", lambda seen: seen.replace(".0.", ".3."), 400, "invalid_event_id"),
    ("unknown-session", "alice", lambda seen: "0" * 12 + seen[12:], 404, "session_not_found"),
]


@pytest.mark.parametrize(
    ("whose", "mangle", "status", "reason"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
async def test_resuming_is_for_the_owner_and_real_events_only(
    start_daphne: Any,
    http: httpx2.AsyncClient,
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
    whose: str | None,
    mangle: Any,
    status: int,
    reason: str,
) -> None:
    server = start_daphne(overrides=RESUMABLE)
    seen, endpoint = await _seen(http, server.url, alice_headers)
    await http.post(server.url + endpoint, json=blob(1), headers=alice_headers)  # something to replay
    headers = {"alice": alice_headers, "bob": bob_headers, None: {}}[whose]
    response = await http.get(server.url + SSE, headers={**headers, "Last-Event-ID": mangle(seen)})
    assert response.status_code == status, response.text
    assert response.json()["error"]["data"]["reason"] == reason
    # The refusal took nothing away from the owner, who still gets the reply.
    async with resumed_stream(http, server.url + SSE, seen, alice_headers) as resumed:
        assert [i for i, _ in await replies(resumed, 1)] == [1]


async def test_a_gap_larger_than_the_buffer_is_an_error_event_and_ends_the_session(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={**RESUMABLE, **SWEPT, "MCP_GATEWAY_EVENT_BUFFER_SIZE": 4})
    seen, endpoint = await _seen(http, server.url, alice_headers)
    for request_id in range(1, 7):
        response = await http.post(server.url + endpoint, json=blob(request_id), headers=alice_headers)
        assert response.status_code == 202
    await answered(1 + 6)  # six answers for a buffer of four
    async with resumed_stream(http, server.url + SSE, seen, alice_headers) as resumed:
        name, data = await resumed.next_event()
        assert name == "error"
        assert json.loads(data)["data"]["reason"] == "events_lost"
        with pytest.raises(EOFError):
            await resumed.next_event()
    record = await closed_session()
    assert record.close_reason == CloseReason.EVENTS_LOST
    assert (await http.post(server.url + endpoint, json=blob(9), headers=alice_headers)).status_code == 404


async def test_a_session_not_resumed_in_time_is_closed(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_RESUME_TIMEOUT": 0.5})
    seen, endpoint = await _seen(http, server.url, alice_headers)
    assert (await McpSession.objects.aget()).closed_at is None  # still waiting for its stream
    record = await closed_session()
    assert record.close_reason == CloseReason.CLIENT_DISCONNECT
    response = await http.get(server.url + SSE, headers={**alice_headers, "Last-Event-ID": seen})
    assert response.status_code == 404
    assert (await http.post(server.url + endpoint, json=blob(1), headers=alice_headers)).status_code == 404


async def test_resuming_replaces_a_stream_the_server_still_holds(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=RESUMABLE)
    async with raw_stream(http, server.url + SSE, alice_headers) as old:
        await handshake(http, server.url, old, alice_headers)
        async with resumed_stream(http, server.url + SSE, old.last_id, alice_headers) as new:
            new.endpoint = old.endpoint
            with pytest.raises(EOFError):
                await old.next_event()
            await post(http, server.url, new, blob(1), alice_headers)
            assert [i for i, _ in await replies(new, 1)] == [1]


async def test_a_stream_resumes_on_another_worker(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], redis_settings: dict[str, Any]
) -> None:
    home = start_daphne(overrides={**redis_settings, **RESUMABLE})
    other = start_daphne(overrides={**redis_settings, **RESUMABLE})
    async with raw_stream(http, home.url + SSE, alice_headers) as stream:
        await handshake(http, home.url, stream, alice_headers)
        seen, endpoint = stream.last_id, stream.endpoint
    await http.post(other.url + endpoint, json=blob(1), headers=alice_headers)
    async with resumed_stream(http, other.url + SSE, seen, alice_headers) as resumed:
        resumed.endpoint = endpoint
        assert [i for i, _ in await replies(resumed, 1)] == [1]
        # Live events keep coming through the other worker, whichever worker takes the POST.
        await post(http, home.url, resumed, blob(2), alice_headers)
        await post(http, other.url, resumed, blob(3), alice_headers)
        assert sorted(i for i, _ in await replies(resumed, 2)) == [2, 3]
    record = await McpSession.objects.aget()
    assert record.closed_at is None or record.close_reason == CloseReason.CLIENT_DISCONNECT


MiB = 1024 * 1024


async def test_the_buffer_keeps_at_most_its_byte_budget_of_large_replies(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    """80 replies of 1 MiB cost the server about its 2 MiB budget, not 80 MiB; resuming past what it dropped fails."""
    server = start_daphne(overrides={**RESUMABLE, "MCP_GATEWAY_EVENT_BUFFER_BYTES": 2 * MiB})
    async with raw_stream(http, server.url + SSE, alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)
        first = stream.last_id
        for request_id in range(1, 6):  # the allocator's working set for replies this large
            await post(http, server.url, stream, blob(request_id, MiB), alice_headers)
            await replies(stream, 1)
        rss_before = server.rss_bytes()
        for request_id in range(6, 86):
            await post(http, server.url, stream, blob(request_id, MiB), alice_headers)
            penultimate = stream.last_id
            assert [i for i, _ in await replies(stream, 1)] == [request_id]
        growth = server.rss_bytes() - rss_before
        endpoint = stream.endpoint
    assert growth < 24 * MiB, f"the server grew by {growth / MiB:.0f} MiB for 80 replies of 1 MiB"
    async with resumed_stream(http, server.url + SSE, penultimate, alice_headers) as resumed:
        resumed.endpoint = endpoint
        assert [i for i, _ in await replies(resumed, 1)] == [85]  # the newest reply is still there
    async with resumed_stream(http, server.url + SSE, first, alice_headers) as resumed:
        name, data = await resumed.next_event()
        assert (name, json.loads(data)["data"]["reason"]) == ("error", "events_lost")
    assert (await closed_session()).close_reason == CloseReason.EVENTS_LOST
