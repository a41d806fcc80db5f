"""Per-user limits: open sessions, and POSTs per window, counted across workers."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import httpx2
import pytest

from mcp_sessions.models import McpSession

from .clients import BOUND, INITIALIZE, INITIALIZED, handshake, jsonrpc, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def test_open_sessions_per_user_are_limited(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], bob_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_MAX_SESSIONS_PER_USER": 2})
    url = f"{server.url}/mcp/sse"
    async with raw_stream(http, url, alice_headers), raw_stream(http, url, alice_headers):
        response = await http.get(url, headers=alice_headers)
        assert response.status_code == 429
        assert response.json()["error"]["data"]["reason"] == "session_limit"
        async with raw_stream(http, url, bob_headers):
            pass  # other users are not affected
    # Once closed, the slots are free again.
    with anyio.fail_after(BOUND):
        while await McpSession.objects.open().aexists():
            await anyio.sleep(0.05)
    async with raw_stream(http, url, alice_headers):
        pass


async def test_session_limit_holds_for_concurrent_opens_on_two_workers(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    workers = [start_daphne(overrides={"MCP_GATEWAY_MAX_SESSIONS_PER_USER": 3}) for _ in range(2)]
    statuses: list[int] = []
    release = anyio.Event()

    async def open_one(n: int) -> None:
        async with http.stream("GET", f"{workers[n % 2].url}/mcp/sse", headers=alice_headers) as response:
            statuses.append(response.status_code)
            if response.status_code == 200:
                await release.wait()

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(open_one, n)
        with anyio.fail_after(10):
            while len(statuses) < 10:
                await anyio.sleep(0.02)
        assert sorted(statuses) == [200] * 3 + [429] * 7
        assert await McpSession.objects.open().filter(user=alice).acount() == 3
        release.set()


async def test_posts_per_user_are_rate_limited_across_workers(
    start_daphne: Any,
    http: httpx2.AsyncClient,
    redis_settings: dict[str, Any],
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
) -> None:
    overrides = {**redis_settings, "MCP_GATEWAY_RATE_LIMIT": [6, 60]}
    first, second = start_daphne(overrides=overrides), start_daphne(overrides=overrides)
    async with raw_stream(http, f"{first.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, first.url, stream, alice_headers)  # two POSTs, both to the first worker
        statuses = []
        for n in range(6):
            # Alternate workers: a POST on either reaches the stream on the first one.
            worker = (first, second)[n % 2]
            response = await http.post(worker.url + stream.endpoint, json=jsonrpc("ping", id=n), headers=alice_headers)
            statuses.append(response.status_code)
            if response.status_code == 202:
                assert (await stream.next_message())["id"] == n
            else:
                refusal = response
        assert statuses == [202, 202, 202, 202, 429, 429]
        assert refusal.json()["error"]["data"]["reason"] == "rate_limited"
        assert 1 <= int(refusal.headers["retry-after"]) <= 60
        async with raw_stream(http, f"{second.url}/mcp/sse", bob_headers) as bobs:
            await handshake(http, second.url, bobs, bob_headers)  # bob has his own budget


async def test_only_posts_count_against_the_rate_limit(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_RATE_LIMIT": [4, 60]})
    url = f"{server.url}/mcp/"
    accept = {**alice_headers, "Accept": "application/json, text/event-stream"}
    opened = await http.post(url, json=INITIALIZE, headers=accept)
    session = {**accept, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
    assert (await http.post(url, json=INITIALIZED, headers=session)).status_code == 202
    for _ in range(5):  # streams opened and dropped: none is a POST
        async with http.stream("GET", url, headers=session) as stream:
            assert stream.status_code == 200
    assert (await http.post(url, json=jsonrpc("ping", id=1), headers=session)).status_code == 200
    assert (await http.delete(url, headers=session)).status_code == 204
    second = await http.post(url, json=INITIALIZE, headers=accept)
    assert second.status_code == 200, second.text  # the fourth POST
    assert (await http.post(url, json=INITIALIZE, headers=accept)).status_code == 429


async def test_counting_on_a_cache_server_reuses_its_connections(redis_settings: dict[str, Any], alice: Any) -> None:
    import contextvars

    import redis

    from mcp_gateway.ratelimit import check_rate

    server = redis.Redis.from_url("redis://127.0.0.1:6379/1")

    def connections_made() -> int:
        return int(server.info("stats")["total_connections_received"])

    before = connections_made()
    for _ in range(10):  # each in a context of its own, as requests are
        await asyncio.get_running_loop().create_task(check_rate(alice), context=contextvars.Context())
    # One connection per thread that counted (and this test's own), not one per request.
    assert connections_made() - before <= 3
    # Reserved in blocks of 1, 2, 4 and 8 (the default limit, 600, allows blocks up to 18): four round trips.
    assert int(server.get(next(iter(server.scan_iter("*mcp_gateway:rate:*"))))) == 15
    server.close()


async def test_workers_sharing_a_cache_server_never_accept_more_than_the_limit(
    redis_settings: dict[str, Any], settings: Any
) -> None:
    """Three workers' allowances (independent, as in three processes) on one real Redis, POSTs interleaved."""
    from mcp_gateway.ratelimit import Allowances

    allowed = 640  # blocks up to 20
    settings.MCP_GATEWAY_RATE_LIMIT = (allowed, 60)
    workers = [Allowances() for _ in range(3)]

    async def post(n: int) -> int:
        return await workers[n % 3].take("default", "mcp_gateway:rate:test:60:1", 1, allowed, 61, False)

    numbers = await asyncio.gather(*(post(n) for n in range(1000)))
    accepted = [n for n in numbers if n <= allowed]
    assert len(set(accepted)) == len(accepted)  # no number handed out twice, across workers
    assert len(accepted) <= allowed
    assert len(accepted) >= allowed - 3 * 20  # early refusals: under one block per worker
    from django.core.cache import caches

    # Each worker stopped asking once its numbers passed the limit: at most a block each beyond it.
    assert allowed < caches["default"].get("mcp_gateway:rate:test:60:1") <= allowed + 3 * 20


async def test_a_worker_shares_one_reservation_among_concurrent_posts(
    redis_settings: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_gateway import ratelimit

    settings.MCP_GATEWAY_RATE_LIMIT = (6400, 60)  # blocks up to 200
    asked: list[int] = []
    count = ratelimit._count

    def counted(alias: str, key: str, delta: int, timeout: int) -> int:
        asked.append(delta)
        return count(alias, key, delta, timeout)

    monkeypatch.setattr(ratelimit, "_count", counted)
    worker = ratelimit.Allowances()
    numbers = await asyncio.gather(
        *(worker.take("default", "mcp_gateway:rate:share:60:1", 1, 6400, 61, False) for _ in range(100))
    )
    assert sorted(numbers) == list(range(1, 101))
    assert asked == [1, 2, 4, 8, 16, 32, 64]  # one reservation at a time, each twice the last
