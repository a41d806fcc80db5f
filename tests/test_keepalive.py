"""The worker's keepalive: one task pings every open stream each interval, a slot and a batch at a time."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import anyio
import pytest

from mcp_gateway import keepalive as keepalive_module
from mcp_gateway.keepalive import BATCH, SLOTS, Keepalive
from mcp_gateway.worker import worker


class Stream:
    def __init__(self, log: list[Stream] | None = None) -> None:
        self.pings = 0
        self.log = log

    def ping_due(self) -> None:
        self.pings += 1
        if self.log is not None:
            self.log.append(self)


class ListenStream(Stream):
    def __init__(self) -> None:
        super().__init__()
        self.revocations: list[dict[str, Any]] = []

    def credentials_revoked(self, message: dict[str, Any]) -> None:
        self.revocations.append(message)


async def until(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():
            await asyncio.sleep(0.005)


async def test_one_keepalive_task_pings_every_stream_until_it_leaves(settings: Any) -> None:
    settings.MCP_GATEWAY_PING_INTERVAL = 0.05
    keepalive = Keepalive(worker.start)
    first, second = Stream(), Stream()
    keepalive.add(first)  # type: ignore[arg-type]
    task = keepalive._task
    keepalive.add(second)  # type: ignore[arg-type]
    assert keepalive._task is task, "one task for all streams"
    await until(lambda: first.pings >= 2 and second.pings >= 2)
    keepalive.discard(first)  # type: ignore[arg-type]
    pinged, seen = first.pings, second.pings
    await until(lambda: second.pings >= seen + 3)
    assert first.pings == pinged
    keepalive.discard(second)  # type: ignore[arg-type]
    assert task is not None
    await asyncio.wait_for(task, 5)  # no streams left: the task ends


async def test_a_tick_pings_one_slot_of_the_streams_not_all_of_them(settings: Any) -> None:
    settings.MCP_GATEWAY_PING_INTERVAL = 0.5
    keepalive = Keepalive(worker.start)
    log: list[Stream] = []
    streams = [Stream(log) for _ in range(10 * SLOTS)]
    for stream in streams:
        keepalive.add(stream)  # type: ignore[arg-type]
    await until(lambda: bool(log))
    await asyncio.sleep(0)  # the rest of that tick, were it to go on
    assert len(log) == 10, "the streams opened together are spread over the slots"
    await until(lambda: all(stream.pings for stream in streams))
    assert max(stream.pings for stream in streams) <= 2, "each stream is pinged once per turn of the wheel"
    for stream in streams:
        keepalive.discard(stream)  # type: ignore[arg-type]
    assert len(keepalive) == 0


async def test_a_crowded_slot_is_pinged_a_batch_per_loop_turn(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.MCP_GATEWAY_PING_INTERVAL = 0.05
    monkeypatch.setattr(keepalive_module, "SLOTS", 1)  # every stream in one slot, as a burst of opens could put them
    keepalive = Keepalive(worker.start)
    turn = 0
    turns: Counter[int] = Counter()

    class Counted(Stream):
        def ping_due(self) -> None:
            super().ping_due()
            turns[turn] += 1

    async def count_turns() -> None:
        nonlocal turn
        while True:
            await asyncio.sleep(0)
            turn += 1

    counter = asyncio.get_running_loop().create_task(count_turns())
    streams = [Counted() for _ in range(3 * BATCH + 5)]
    for stream in streams:
        keepalive.add(stream)  # type: ignore[arg-type]
    try:
        await until(lambda: all(stream.pings for stream in streams))
    finally:
        counter.cancel()
        for stream in streams:
            keepalive.discard(stream)  # type: ignore[arg-type]
    assert max(turns.values()) <= BATCH, turns
    assert len(turns) >= 4, "the slot took several loop turns"


async def test_revoked_credentials_reach_the_streams_that_end_on_them_only(settings: Any) -> None:
    settings.MCP_GATEWAY_PING_INTERVAL = 60
    keepalive = Keepalive(worker.start)
    plain, listen, gone = Stream(), ListenStream(), ListenStream()
    for stream in (plain, listen, gone):
        keepalive.add(stream)  # type: ignore[arg-type]
    keepalive.discard(gone)  # type: ignore[arg-type]
    message = {"type": "mcp.forget_credentials", "token_hashes": ["x"]}
    keepalive.credentials_revoked(message)
    assert listen.revocations == [message]
    assert gone.revocations == []
    keepalive.discard(plain)  # type: ignore[arg-type]
    keepalive.discard(listen)  # type: ignore[arg-type]
