"""stop_if_cancelled: a background loop that retries after failures still ends when its task is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from mcp_gateway.tasks import stop_if_cancelled


async def _retrying_loop(attempts: list[int]) -> None:
    """A loop shaped like the sweep's: its step turns the cancellation it receives into a failure."""
    while True:
        try:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise ConnectionError("torn down mid-command") from None
        except Exception:
            stop_if_cancelled()
            attempts.append(1)


async def test_a_loop_whose_step_turns_the_cancellation_into_a_failure_still_ends() -> None:
    attempts: list[int] = []
    task = asyncio.create_task(_retrying_loop(attempts))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
    assert attempts == []


async def test_a_task_not_cancelled_goes_on() -> None:
    stop_if_cancelled()


async def test_a_task_whose_cancellation_was_withdrawn_goes_on() -> None:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(0)
    task.uncancel()
    stop_if_cancelled()
