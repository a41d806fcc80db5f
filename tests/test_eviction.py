"""The per-user session cap makes room: which session is evicted, when 429 is left, and what the evicted one sees.

The choice (``mcp_sessions.eviction``, through ``McpSession.objects.open_for``) on the database, table-driven;
its exactness under concurrent opens on PostgreSQL; then the whole path through a real launcher: the evicted
session's client gets 404, a session holding a ``GET`` stream or a long request is not evicted, and one evicted
while a short request was still in progress answers it before closing.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from django.db import connection, connections
from django.utils import timezone

from mcp_sessions.ids import hash_session_id, new_session_id, public_ref
from mcp_sessions.models import AuditEvent, AuditKind, CloseReason, McpSession, SessionLimitReached, Transport, Worker

from .clients import INITIALIZE, INITIALIZED, jsonrpc, poll, raw_stream

ACCEPT = {"Accept": "application/json, text/event-stream"}
LEASE = 45.0
# The tests through a launcher share its database.
LIVE = pytest.mark.django_db(transaction=True)


# The choice, on the database


@dataclass(frozen=True)
class Existing:
    """One of alice's open sessions before the open: how long ago it was last seen, and what else matters."""

    name: str
    seen_ago: float = 0  # minutes
    transport: str = Transport.STREAMABLE_HTTP
    in_use: bool = False
    worker: str = "none"  # "none", "live" (a fresh heartbeat), or "lost" (a missed lease)


def _record(user: Any, existing: Existing, workers: dict[str, Worker | None]) -> McpSession:
    session: McpSession = McpSession.objects.create(
        user=user,
        id_hash=hashlib.sha256(existing.name.encode()).hexdigest(),
        server="/mcp/",
        transport=existing.transport,
        channel_name=f"inbox-{existing.name}",
        in_use=existing.in_use,
        last_seen_at=timezone.now() - timedelta(minutes=existing.seen_ago),
        worker=workers[existing.worker],
    )
    return session


def _open(user: Any, limit: int | None, **fields: Any) -> McpSession:
    session: McpSession = McpSession.objects.open_for(
        user,
        limit=limit,
        lease=LEASE,
        id_hash=hash_session_id(new_session_id()),
        server="/mcp/",
        transport=Transport.STREAMABLE_HTTP,
        channel_name="inbox-new",
        **fields,
    )
    return session


CHOICES = [
    pytest.param([Existing("a", 5), Existing("b", 30), Existing("c", 10)], 3, {"b"}, id="least-recently-seen-goes"),
    pytest.param([Existing("a", 5), Existing("b", 30, in_use=True), Existing("c", 10)], 3, {"c"}, id="in-use-is-kept"),
    pytest.param(
        [Existing("a", 5), Existing("b", 30, transport=Transport.SSE), Existing("c", 10)],
        3,
        {"c"},
        id="http-sse-is-never-evicted",
    ),
    pytest.param([Existing("a", 5), Existing("b", 5), Existing("c", 5)], 3, {"a"}, id="a-tie-takes-the-oldest"),
    pytest.param([Existing("a", 5), Existing("b", 30)], 3, set(), id="under-the-cap-none-goes"),
    pytest.param(
        [Existing("a", 5), Existing("b", 30, worker="lost"), Existing("c", 10)], 3, set(), id="lost-ones-dont-count"
    ),
    pytest.param([Existing("a", 5, worker="live"), Existing("b", 1)], 2, {"a"}, id="on-a-live-worker-too"),
    pytest.param(
        [Existing("a", 5), Existing("b", 30), Existing("c", 10), Existing("d", 1)], 2, {"b", "c", "a"}, id="cap-lowered"
    ),
    pytest.param(
        [Existing("a", 5, in_use=True), Existing("b", 30, transport=Transport.SSE), Existing("c", 10, in_use=True)],
        3,
        None,
        id="all-in-use-429",
    ),
    pytest.param(
        [Existing("a", 5), Existing("b", 30, in_use=True), Existing("c", 10, in_use=True)],
        2,
        None,
        id="cap-lowered-not-enough-idle-429",
    ),
    pytest.param([], 0, None, id="cap-zero-429"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("existing", "limit", "evicted"), CHOICES)
def test_the_least_recently_active_session_not_in_use_makes_room(
    alice: Any, bob: Any, existing: list[Existing], limit: int, evicted: set[str] | None
) -> None:
    stale = timezone.now() - timedelta(seconds=LEASE * 2)
    workers: dict[str, Worker | None] = {
        "none": None,
        "live": Worker.objects.create(id="live", hostname="h", pid=1),
        "lost": Worker.objects.create(id="lost", hostname="h", pid=2, heartbeat_at=stale),
    }
    records = {e.name: _record(alice, e, workers) for e in existing}
    bobs = _record(bob, Existing("bobs", 60), workers)  # another user's sessions neither count nor go
    if evicted is None:
        with pytest.raises(SessionLimitReached):
            _open(alice, limit)
        assert not McpSession.objects.closed().exists()
        assert McpSession.objects.count() == len(existing) + 1
        return
    new = _open(alice, limit)
    closed = {name for name, r in records.items() if McpSession.objects.get(pk=r.pk).closed_at is not None}
    assert closed == evicted
    assert set(McpSession.objects.closed().values_list("close_reason", flat=True)) <= {CloseReason.EVICTED}
    revoked = AuditEvent.objects.filter(kind=AuditKind.SESSION_REVOKED, detail=CloseReason.EVICTED, user=alice)
    assert set(revoked.values_list("session_ref", flat=True)) == {records[name].ref for name in evicted}
    assert McpSession.objects.get(pk=bobs.pk).is_open and McpSession.objects.get(pk=new.pk).is_open


@pytest.mark.django_db
def test_no_cap_evicts_nothing(alice: Any) -> None:
    for _ in range(30):
        _open(alice, None)
    assert McpSession.objects.open().count() == 30


def _open_in_thread(
    user: Any, start: threading.Barrier, outcomes: list[str], failures: list[BaseException], limit: int
) -> None:
    try:
        start.wait(10)
        _open(user, limit, in_use=True)  # in use from the start: only the sessions there before may go
        outcomes.append("opened")
    except SessionLimitReached:
        outcomes.append("refused")
    except Exception as exc:  # reported by the test's thread
        failures.append(exc)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_the_cap_stays_exact_under_concurrent_opens(alice: Any) -> None:
    """Eight opens at once at the cap of three: three evict the three idle sessions, five get 429, none twice."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_ENGINE=postgresql), where the opens really run at once")
    idle = [_record(alice, Existing(f"idle{n}", 10 - n), {"none": None}) for n in range(3)]
    start, outcomes, failures = threading.Barrier(8), [], []
    threads = [threading.Thread(target=_open_in_thread, args=(alice, start, outcomes, failures, 3)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    assert sorted(outcomes) == ["opened"] * 3 + ["refused"] * 5
    assert McpSession.objects.open().count() == 3
    assert set(McpSession.objects.open().values_list("in_use", flat=True)) == {True}
    assert set(McpSession.objects.closed().values_list("pk", flat=True)) == {r.pk for r in idle}
    refs = AuditEvent.objects.filter(kind=AuditKind.SESSION_REVOKED).values_list("session_ref", flat=True)
    assert sorted(refs) == sorted(r.ref for r in idle)  # each evicted once


# Through a real launcher


@dataclass
class Client:
    """A raw Streamable HTTP client of one session."""

    http: httpx2.AsyncClient
    url: str
    headers: dict[str, str]
    session_id: str = ""

    def session_headers(self) -> dict[str, str]:
        return {**self.headers, **ACCEPT, "Mcp-Session-Id": self.session_id}

    async def initialize(self) -> httpx2.Response:
        response = await self.http.post(self.url, json=INITIALIZE, headers={**self.headers, **ACCEPT})
        if response.status_code == 200:
            self.session_id = response.headers["mcp-session-id"]
            assert (await self.post(INITIALIZED)).status_code == 202
        return response

    async def post(self, message: Any) -> httpx2.Response:
        return await self.http.post(self.url, json=message, headers=self.session_headers())

    @property
    def ref(self) -> str:
        return public_ref(hash_session_id(self.session_id))

    async def record(self) -> McpSession:
        session: McpSession = await McpSession.objects.aget(id_hash=hash_session_id(self.session_id))
        return session


async def opened(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> Client:
    client = Client(http, url, headers)
    response = await client.initialize()
    assert response.status_code == 200, response.text
    return client


async def in_use_is(client: Client, value: bool) -> None:
    record = await poll(client.record, lambda r: r.in_use is value)
    assert record.in_use is value, f"session {client.ref}: in_use is {record.in_use}, {value} expected"


def refused_for_the_cap(response: httpx2.Response) -> bool:
    return response.status_code == 429 and response.json()["error"]["data"]["reason"] == "session_limit"


@LIVE
async def test_at_the_cap_the_idle_session_is_evicted_and_its_client_gets_404(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_MAX_SESSIONS_PER_USER": 2})
    url = f"{server.url}/mcp-test/"
    first, second = await opened(http, url, alice_headers), await opened(http, url, alice_headers)
    third = await opened(http, url, alice_headers)  # the cap is two: the first, least recently active, goes
    record = await poll(first.record, lambda r: r.closed_at is not None)
    assert record.close_reason == CloseReason.EVICTED
    gone = await first.post(jsonrpc("ping", id=1))
    assert gone.status_code == 404 and gone.json()["error"]["data"]["reason"] == "session_not_found"
    for survivor in (second, third):
        assert (await survivor.post(jsonrpc("ping", id=2))).status_code == 200
    assert await McpSession.objects.open().filter(user=alice).acount() == 2
    rows = await poll(
        lambda: _audit_of(first.ref),
        lambda kinds: AuditKind.SESSION_CLOSED in kinds and AuditKind.SESSION_REVOKED in kinds,
    )
    assert rows == {
        AuditKind.SESSION_OPENED: "",
        AuditKind.SESSION_REVOKED: "evicted",
        AuditKind.SESSION_CLOSED: "evicted",
    }
    # The client initialises again, as the spec says, and gets a session: the second one makes room this time.
    again = await first.initialize()
    assert again.status_code == 200
    assert (await poll(second.record, lambda r: r.closed_at is not None)).close_reason == CloseReason.EVICTED


async def _audit_of(ref: str) -> dict[str, str]:
    """The audit rows of session ``ref``: each kind's detail, its opening's transport and prefix left out."""
    rows = AuditEvent.objects.filter(session_ref=ref).values_list("kind", "detail")
    return {kind: ("" if kind == AuditKind.SESSION_OPENED else detail) async for kind, detail in rows}


@pytest.fixture
async def streams(http: httpx2.AsyncClient) -> AsyncIterator[list[Any]]:
    """GET streams a test opens; all closed at its end."""
    opened_streams: list[Any] = []
    yield opened_streams
    for stream in opened_streams:
        await stream.aclose()


@LIVE
async def test_sessions_holding_a_get_stream_are_never_evicted(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str], streams: list[Any]
) -> None:
    """Twenty sessions (the default cap), each with its GET stream open: the 21st open gets 429 until one drops."""
    server = start_daphne()
    url = f"{server.url}/mcp-test/"
    clients = []
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=None)) as streaming:
        for _ in range(20):
            client = await opened(http, url, alice_headers)
            request = streaming.build_request("GET", url, headers=client.session_headers())
            response = await streaming.send(request, stream=True)
            streams.append(response)
            assert response.status_code == 200
            clients.append(client)
        for client in clients:
            await in_use_is(client, True)
        assert refused_for_the_cap(await Client(http, url, alice_headers).initialize())
        assert await McpSession.objects.open().filter(user=alice).acount() == 20
        # One stream dropped: its session is idle again, and the next open evicts it, and only it.
        await streams.pop(7).aclose()
        await in_use_is(clients[7], False)
        newcomer = await Client(http, url, alice_headers).initialize()
        assert newcomer.status_code == 200
        record = await poll(clients[7].record, lambda r: r.closed_at is not None)
        assert record.close_reason == CloseReason.EVICTED
        assert (await clients[7].post(jsonrpc("ping", id=1))).status_code == 404
        assert await McpSession.objects.open().filter(user=alice).acount() == 20
        assert await McpSession.objects.filter(close_reason=CloseReason.EVICTED).acount() == 1


@LIVE
async def test_an_http_sse_session_is_never_evicted(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_MAX_SESSIONS_PER_USER": 1})
    async with raw_stream(http, f"{server.url}/mcp-test/sse", alice_headers):
        assert refused_for_the_cap(await Client(http, f"{server.url}/mcp-test/", alice_headers).initialize())
        assert not await McpSession.objects.closed().aexists()


def sleep_call(seconds: float, request_id: int = 5) -> dict[str, Any]:
    return jsonrpc("tools/call", {"name": "sleep", "arguments": {"seconds": seconds, "notify": True}}, id=request_id)


@LIVE
async def test_a_request_in_progress_across_a_sweep_keeps_its_session(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    """A long request counts as use once the worker's sweep has seen it: the next open gets 429, not its session."""
    server = start_daphne(overrides={"MCP_GATEWAY_MAX_SESSIONS_PER_USER": 1, "MCP_GATEWAY_PING_INTERVAL": 0.1})
    url = f"{server.url}/mcp-test/"
    busy = await opened(http, url, alice_headers)
    async with http.stream("POST", url, json=sleep_call(3), headers=busy.session_headers()) as call:
        assert call.status_code == 200
        await in_use_is(busy, True)
        assert refused_for_the_cap(await Client(http, url, alice_headers).initialize())
        body = (await call.aread()).decode()
    assert '"slept"' in body
    await in_use_is(busy, False)
    assert (await Client(http, url, alice_headers).initialize()).status_code == 200
    assert (await poll(busy.record, lambda r: r.closed_at is not None)).close_reason == CloseReason.EVICTED


@LIVE
async def test_a_session_evicted_in_the_middle_of_a_short_request_answers_it_first(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    """The open could not know of a request begun since the last sweep; the request still gets its answer."""
    server = start_daphne(overrides={"MCP_GATEWAY_MAX_SESSIONS_PER_USER": 1, "MCP_GATEWAY_PING_INTERVAL": 60})
    url = f"{server.url}/mcp-test/"
    evicted = await opened(http, url, alice_headers)
    async with http.stream("POST", url, json=sleep_call(1), headers=evicted.session_headers()) as call:
        assert call.status_code == 200  # the progress notification came: the request is in progress
        newcomer = await Client(http, url, alice_headers).initialize()
        assert newcomer.status_code == 200
        body = (await call.aread()).decode()
    answers = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    assert answers[-1]["id"] == 5 and answers[-1]["result"]["content"][0]["text"] == "slept"
    record = await poll(evicted.record, lambda r: r.closed_at is not None)
    assert record.close_reason == CloseReason.EVICTED
    assert (await evicted.post(jsonrpc("ping", id=6))).status_code == 404


@LIVE
async def test_an_open_on_one_worker_evicts_a_session_on_the_other_and_sees_its_streams(
    start_daphne: Any, http: httpx2.AsyncClient, redis_settings: dict[str, Any], alice_headers: dict[str, str]
) -> None:
    """No sticky routing: the record says what is in use, and the eviction reaches the session's own worker."""
    overrides = {**redis_settings, "MCP_GATEWAY_MAX_SESSIONS_PER_USER": 1}
    first, second = start_daphne(overrides=overrides), start_daphne(overrides=overrides)
    on_first = await opened(http, f"{first.url}/mcp-test/", alice_headers)
    # Its GET stream, taken by the other worker, is the session's all the same: the next open is refused.
    watcher = Client(http, f"{second.url}/mcp-test/", alice_headers, on_first.session_id)
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=None)) as streaming:
        async with streaming.stream("GET", watcher.url, headers=watcher.session_headers()) as stream:
            assert stream.status_code == 200
            await in_use_is(on_first, True)
            assert refused_for_the_cap(await Client(http, f"{second.url}/mcp-test/", alice_headers).initialize())
    await in_use_is(on_first, False)
    on_second = await opened(http, f"{second.url}/mcp-test/", alice_headers)
    record = await poll(on_first.record, lambda r: r.closed_at is not None)
    assert record.close_reason == CloseReason.EVICTED
    for client in (on_first, watcher):  # on the worker that ran it and on the other
        assert (await client.post(jsonrpc("ping", id=1))).status_code == 404
    assert (await on_second.post(jsonrpc("ping", id=2))).status_code == 200
