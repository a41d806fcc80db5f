"""The worker's process-wide memberships: joined while it serves, left when it shuts down."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from redis import asyncio as aioredis

from mcp_gateway.wire import CREDENTIALS_GROUP, LISTEN_EVENTS_GROUP
from mcp_sessions.models import AccessToken

from .clients import poll
from .test_modern import WHOAMI, WHOAMI_HEADERS, post

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_worker_leaves_its_groups_when_it_shuts_down(
    start_daphne: Any, http: httpx2.AsyncClient, redis_settings: dict[str, Any], alice: Any
) -> None:
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "groups")
    config = redis_settings["CHANNEL_LAYERS"]["default"]["CONFIG"]
    prefix = f"{config['prefix']}-groups"  # the keys under it are this worker's alone
    layer = {**redis_settings["CHANNEL_LAYERS"]["default"], "CONFIG": {**config, "prefix": prefix}}
    overrides = {**redis_settings, "CHANNEL_LAYERS": {"default": layer}}
    server = start_daphne(overrides=overrides)
    bearer = {**WHOAMI_HEADERS, "Authorization": f"Bearer {secret}"}
    answer = await post(http, f"{server.url}/mcp-test/", WHOAMI, bearer)
    assert answer.status_code == 200  # a 2026-07-28 request: its credential cached, so the worker hears revocations
    groups = {f"{prefix}:group:{group}" for group in (CREDENTIALS_GROUP, LISTEN_EVENTS_GROUP)}
    redis = aioredis.from_url(config["hosts"][0]["address"])
    try:

        async def present() -> set[str]:
            return {key.decode() async for key in redis.scan_iter(match=f"{prefix}:group:*")}

        assert await poll(present, lambda keys: keys == groups) == groups
        server.stop()
        assert await poll(present, lambda keys: not keys) == set()
    finally:
        await redis.aclose()


class FakeHost:
    """What the sweep sees of a session host: idle, open, its activity noted in the loop turn it was visited."""

    def __init__(self, pk: int, turns: list[int], turn: Any) -> None:
        import asyncio

        from django.utils import timezone

        self.pk, self.loop, self.close_unwritten, self.last_seen = pk, asyncio.get_running_loop(), False, timezone.now()
        self._turns, self._turn = turns, turn

    def running_on(self, loop: Any) -> bool:
        return loop is self.loop

    def schedule_deadline(self) -> None:
        self._turns.append(self._turn())

    def sync_use(self) -> None:
        pass

    def pending_activity(self) -> dict[str, Any] | None:
        return None

    def activity_saved(self, fields: dict[str, Any]) -> None:
        pass

    def close_soon(self, reason: str) -> None:
        pass


async def test_the_sweep_visits_its_sessions_a_slice_per_loop_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """No loop turn goes over every session of a worker holding thousands: others' requests run in between."""
    import asyncio
    from collections import Counter

    from mcp_gateway.worker import SWEEP_SLICE, Sweeper, Worker
    from mcp_sessions.models import McpSession

    clock = {"turn": 0}

    async def count_turns() -> None:
        while True:
            clock["turn"] += 1
            await asyncio.sleep(0)

    visited: list[int] = []
    hosts = [FakeHost(pk, visited, lambda: clock["turn"]) for pk in range(3 * SWEEP_SLICE + 7)]
    worker = Worker()
    monkeypatch.setattr(worker, "swept", lambda: hosts)
    monkeypatch.setattr(McpSession.objects, "record_activity", lambda changes: (set(changes), set()))
    counter = asyncio.get_running_loop().create_task(count_turns())
    try:
        await Sweeper(worker).sweep()
    finally:
        counter.cancel()
    assert len(visited) == len(hosts)
    per_turn = Counter(visited)
    assert max(per_turn.values()) <= SWEEP_SLICE, per_turn
