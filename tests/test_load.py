"""Two daphne workers on Redis behind a round-robin proxy (no sticky sessions): the short load and fault suite.

The long form runs by hand: ``python -m bench.load --sessions 1000 --callers 200 --seconds 60``. Here the same
suite (``bench.load.run_suite``) runs bounded: at most 150 sessions, 8 s of calls. Redis is required in CI (the
``redis_settings`` fixture fails there rather than skipping).
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async

from bench.load import Figures, channel_layer_settings, print_figures, run_suite
from mcp_sessions.models import CloseReason, McpSession
from mcp_sessions.revocation import revoke

from .clients import BOUND, handshake, jsonrpc, raw_stream
from .conftest import login_headers
from .support.proxy import LoopbackProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

LIMITS_OUT_OF_REACH = {
    "MCP_GATEWAY_MAX_SESSIONS_PER_USER": 100_000,
    "MCP_GATEWAY_RATE_LIMIT": [1_000_000_000, 60],
    "MCP_GATEWAY_RESUME_TIMEOUT": 0,  # a dropped stream ends its session at once (future resume window)
}


def layer_prefix(redis_settings: dict[str, Any]) -> tuple[str, str]:
    config = redis_settings["CHANNEL_LAYERS"]["default"]["CONFIG"]
    host = config["hosts"][0]
    return (host["address"] if isinstance(host, dict) else host), config["prefix"]


def tuned(
    redis_settings: dict[str, Any], layer: str = "core", *, prefix: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The run's Redis settings with the channel layer (core or pubsub) tuned as the load suite recommends.

    ``prefix``, if given, replaces the run's channel-layer prefix: keys of the layer then belong to these workers
    alone (other tests' workers, killed at their end, may leave keys under the run's prefix).
    """
    url, run_prefix = layer_prefix(redis_settings)
    layers = channel_layer_settings(layer, url, prefix or run_prefix)
    return {**redis_settings, "CHANNEL_LAYERS": layers, **extra}


@pytest.fixture
def two_workers(start_daphne: Any, redis_settings: dict[str, Any]) -> Any:
    def start(layer: str = "core", *, prefix: str | None = None, **overrides: Any) -> list[Any]:
        settings = tuned(redis_settings, layer, prefix=prefix, **overrides)
        return [start_daphne(overrides=settings), start_daphne(overrides=settings)]

    return start


@pytest.mark.parametrize("layer", ["core", "pubsub"])
async def test_short_load_and_disconnect_storm(
    two_workers: Any, redis_settings: dict[str, Any], make_user: Any, layer: str
) -> None:
    redis_url, run_prefix = layer_prefix(redis_settings)
    prefix = f"{run_prefix}-load-{layer}"  # the suite counts the keys left under it: these workers' alone
    workers = two_workers(layer, prefix=prefix, **LIMITS_OUT_OF_REACH)
    users = [await sync_to_async(make_user)(f"load{n}") for n in range(4)]
    headers = [await sync_to_async(login_headers)(user) for user in users]
    with LoopbackProxy([w.url for w in workers]) as proxy:
        figures: Figures = await run_suite(
            proxy.url,
            [w.url for w in workers],
            headers,
            sessions=150,
            callers=30,
            seconds=8,
            in_flight=3,
            storm=100,
            redis_url=redis_url,
            prefix=prefix,
        )
        per_backend = list(proxy.server.per_backend)  # type: ignore[union-attr]
    print_figures(figures, f"short load suite (2 workers, {layer} layer, proxy in-process)")
    summary = figures.summary()
    assert figures.sessions_opened == 150 and figures.storm_sessions == 100, summary
    assert figures.calls_ok > 0, summary
    assert (figures.misrouted, figures.lost, figures.call_errors, figures.server_errors) == (0, 0, 0, 0), summary
    assert figures.leaked_sessions == 0, summary
    assert not any(figures.leaked_tasks.values()), summary
    assert figures.leaked_keys == [], summary
    assert min(per_backend) > 0.4 * sum(per_backend), per_backend  # both workers took requests


async def test_post_on_either_worker_reaches_the_session(
    two_workers: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    workers = two_workers()
    async with raw_stream(http, f"{workers[0].url}/mcp/sse", alice_headers) as stream:
        await handshake(http, workers[1].url, stream, alice_headers)  # initialize posted to the other worker
        for n, worker in enumerate(workers * 3):
            response = await http.post(
                worker.url + stream.endpoint, json=jsonrpc("ping", id=n + 10), headers=alice_headers
            )
            assert response.status_code == 202
            assert (await stream.next_message())["id"] == n + 10


async def test_per_user_session_limit_holds_across_workers(
    two_workers: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    workers = two_workers(MCP_GATEWAY_MAX_SESSIONS_PER_USER=3, MCP_GATEWAY_RESUME_TIMEOUT=0)
    with LoopbackProxy([w.url for w in workers]) as proxy:
        async with (
            raw_stream(http, f"{proxy.url}/mcp/sse", alice_headers),
            raw_stream(http, f"{proxy.url}/mcp/sse", alice_headers),
            raw_stream(http, f"{proxy.url}/mcp/sse", alice_headers) as third,
        ):
            # Three open sessions spread over both workers; a fourth is refused whichever worker gets it.
            for _ in range(2):
                response = await http.get(f"{proxy.url}/mcp/sse", headers=alice_headers)
                assert response.status_code == 429, response.text
            endpoint = third.endpoint
        # All three closed (disconnects): the slots are free again, on either worker.
        with anyio.fail_after(5):
            while await McpSession.objects.filter(closed_at__isnull=True).acount():
                await anyio.sleep(0.05)
        assert (await http.post(proxy.url + endpoint, json=jsonrpc("ping"), headers=alice_headers)).status_code == 404
        async with raw_stream(http, f"{proxy.url}/mcp/sse", alice_headers):
            pass


@pytest.mark.parametrize("layer", ["core", "pubsub"])
async def test_revocation_from_another_process_closes_a_stream_on_either_worker(
    two_workers: Any,
    http: httpx2.AsyncClient,
    alice: Any,
    alice_headers: dict[str, str],
    settings: Any,
    layer: str,
) -> None:
    workers = two_workers(layer)
    settings.CHANNEL_LAYERS = tuned({"CHANNEL_LAYERS": settings.CHANNEL_LAYERS}, layer)["CHANNEL_LAYERS"]
    with LoopbackProxy([w.url for w in workers]) as proxy:
        async with (
            raw_stream(http, f"{proxy.url}/mcp/sse", alice_headers) as first,
            raw_stream(http, f"{proxy.url}/mcp/sse", alice_headers) as second,
        ):
            records = McpSession.objects.filter(user=alice, closed_at__isnull=True)
            assert len({r.worker_id async for r in records}) == 2  # one stream on each worker
            # This test process is "the admin": it shares only the database and Redis with the workers.
            assert await sync_to_async(revoke)(McpSession.objects.filter(user=alice)) == 2
            with anyio.fail_after(BOUND):
                for stream in (first, second):
                    with pytest.raises(EOFError):
                        while True:
                            await stream.next_event(timeout=BOUND)
    reasons = {r.close_reason async for r in McpSession.objects.filter(user=alice)}
    assert reasons == {CloseReason.REVOKED}
