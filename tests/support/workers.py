"""Workers in the test process: their inbox on a channel layer, started and stopped within one test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp_gateway.worker import Worker


async def stop(worker: Worker) -> None:
    """Stop a worker's tasks (its inbox, its sweep, its heartbeat), cancelled again until done.

    Again: channels-redis's receive may swallow one cancellation.
    """
    for task in list(worker._background):
        for _ in range(50):
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
            if task.done():
                break
        assert task.done(), f"{task} did not stop"


@contextlib.asynccontextmanager
async def inbox_on(worker: Worker, layer: Any) -> AsyncIterator[str]:
    """``worker``'s inbox listening on ``layer`` (and in the listen events group) for the block: its channel."""
    channel = await worker.inbox.address(layer)
    try:
        yield channel
    finally:
        await stop(worker)
