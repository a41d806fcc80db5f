"""The sweep of a worker's sessions: a slice per loop turn."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


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

    from mcp_gateway.sweep import SWEEP_SLICE, Sweeper
    from mcp_gateway.worker import Worker
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
