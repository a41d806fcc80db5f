"""A worker's inbox: it ends when cancelled, whatever its channel layer makes of the cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from mcp_gateway.worker import Worker

from .support.workers import stop


class SwallowingLayer(InMemoryChannelLayer):
    """A layer whose ``receive`` turns a cancellation into ``turned_into`` (as channels-redis's sometimes does)."""

    def __init__(self, turned_into: type[BaseException]) -> None:
        super().__init__()
        self.turned_into = turned_into
        self.receiving = asyncio.Event()
        self.swallowed = False

    async def receive(self, channel: str) -> dict[str, Any]:
        self.receiving.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed = True  # once: a broken inbox fails the test rather than hang its loop's teardown
            raise self.turned_into() from None
        raise AssertionError("unreachable")


class SlowNamingLayer(InMemoryChannelLayer):
    """A layer whose first ``new_channel`` never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def new_channel(self, prefix: str = "specific.") -> str:
        self.calls += 1
        if self.calls == 1:
            await asyncio.Event().wait()
        return await super().new_channel(prefix)


@pytest.mark.parametrize(
    "turned_into",
    [
        pytest.param(TimeoutError, id="the-cancellation-becomes-a-timeout"),
        pytest.param(ConnectionError, id="the-cancellation-becomes-a-connection-error"),
    ],
)
async def test_a_cancelled_inbox_stops_even_if_its_layer_swallows_the_cancellation(
    turned_into: type[BaseException],
) -> None:
    worker, layer = Worker(), SwallowingLayer(turned_into)
    await worker.inbox.address(layer)
    await asyncio.wait_for(layer.receiving.wait(), 5)
    inbox_task = next(iter(worker._background))
    try:
        inbox_task.cancel()
        await asyncio.wait([inbox_task], timeout=5)
        assert inbox_task.cancelled()
    finally:
        await stop(worker)


async def test_a_naming_cancelled_leaves_no_caller_waiting_and_the_next_call_names_again() -> None:
    worker, layer = Worker(), SlowNamingLayer()
    waiting = asyncio.ensure_future(worker.inbox.address(layer))
    await asyncio.sleep(0.05)
    try:
        for task in list(worker._background):
            task.cancel()
        await asyncio.wait([waiting], timeout=5)
        assert waiting.done()
        with pytest.raises(asyncio.CancelledError):
            waiting.result()
        channel = await asyncio.wait_for(worker.inbox.address(layer), 5)
        assert channel.startswith("specific.")
    finally:
        waiting.cancel()
        await stop(worker)
