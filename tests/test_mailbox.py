"""The FIFOs sessions and connections wait on: order, waiting, and reading from sources."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcp_gateway.sessions.mailbox import Mailbox, SourcedMailbox


async def test_a_reader_waits_for_a_message_and_gets_them_in_order() -> None:
    mailbox = Mailbox()
    reader = asyncio.ensure_future(mailbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    mailbox.put_nowait(1)
    mailbox.put_nowait(2)
    assert await asyncio.wait_for(reader, 1) == 1
    assert await mailbox.get() == 2
    assert len(mailbox) == 0


async def test_take_all_empties_it() -> None:
    mailbox = Mailbox()
    for item in "abc":
        mailbox.put_nowait(item)
    assert mailbox.take_all() == ["a", "b", "c"]
    assert len(mailbox) == 0 and list(mailbox) == []


def counting_source(log: list[int]) -> Any:
    async def source() -> dict[str, Any]:
        log.append(len(log))
        return {"type": "n", "n": len(log)}

    return source


async def test_a_source_is_read_again_only_once_its_message_is_handled() -> None:
    """Backpressure: a reader that has not handled a message leaves the source unread."""
    reads: list[int] = []
    mailbox = SourcedMailbox()
    mailbox.listen(counting_source(reads))
    message, source = await mailbox.next()
    assert message == {"type": "n", "n": 1} and reads == [0]
    assert not mailbox._sources, "no read of the source is under way until the reader listens again"
    assert source is not None
    mailbox.listen(source)
    assert (await mailbox.next())[0] == {"type": "n", "n": 2}
    mailbox.close()


async def test_posted_messages_and_source_messages_come_in_arrival_order() -> None:
    mailbox = SourcedMailbox()
    mailbox.put_nowait({"type": "posted"})
    mailbox.listen(counting_source([]))
    await asyncio.sleep(0)
    first, second = await mailbox.next(), await mailbox.next()
    assert first == ({"type": "posted"}, None)
    assert second[0]["type"] == "n" and second[1] is not None
    mailbox.close()


@pytest.mark.parametrize("outcome", ["fails", "is-cancelled"])
async def test_a_source_that_fails_or_is_cancelled_reaches_the_reader(outcome: str) -> None:
    async def broken() -> dict[str, Any]:
        if outcome == "fails":
            raise ConnectionError("layer down")
        await asyncio.sleep(10)
        return {}

    mailbox = SourcedMailbox()
    mailbox.listen(broken)
    if outcome == "is-cancelled":
        await asyncio.sleep(0)
        next(iter(mailbox._sources)).cancel()
    expected = ConnectionError if outcome == "fails" else asyncio.CancelledError
    with pytest.raises(expected):
        await asyncio.wait_for(mailbox.next(), 1)
    mailbox.close()


async def test_close_stops_reading_its_sources() -> None:
    started = asyncio.Event()

    async def slow() -> dict[str, Any]:
        started.set()
        await asyncio.sleep(10)
        return {}

    mailbox = SourcedMailbox()
    mailbox.listen(slow)
    await started.wait()
    task = next(iter(mailbox._sources))
    mailbox.close()
    await asyncio.sleep(0)
    assert task.cancelled()
    assert len(mailbox) == 0


# next_or: one source read in the reader's own task


async def test_next_or_reads_the_source_and_a_posted_message_interrupts_it() -> None:
    mailbox, source = SourcedMailbox(), asyncio.Queue[dict[str, Any]]()
    source.put_nowait({"type": "from-source"})
    assert await mailbox.next_or(source.get) == {"type": "from-source"}
    reader = asyncio.ensure_future(mailbox.next_or(source.get))
    await asyncio.sleep(0)
    mailbox.put_nowait({"type": "posted"})
    assert await asyncio.wait_for(reader, 1) == {"type": "posted"}
    assert reader.cancelling() == 0, "the interruption is taken back"
    source.put_nowait({"type": "later"})
    assert await mailbox.next_or(source.get) == {"type": "later"}


async def test_next_or_loses_no_source_message_that_arrives_with_an_interruption() -> None:
    mailbox, source = SourcedMailbox(), asyncio.Queue[dict[str, Any]]()
    reader = asyncio.ensure_future(mailbox.next_or(source.get))
    await asyncio.sleep(0)
    source.put_nowait({"type": "from-source"})  # wakes the reader, which is interrupted before it runs
    mailbox.put_nowait({"type": "posted"})
    assert await asyncio.wait_for(reader, 1) == {"type": "posted"}
    assert await mailbox.next_or(source.get) == {"type": "from-source"}


async def test_next_or_still_passes_on_a_real_cancellation() -> None:
    mailbox, source = SourcedMailbox(), asyncio.Queue[dict[str, Any]]()
    reader = asyncio.ensure_future(mailbox.next_or(source.get))
    await asyncio.sleep(0)
    reader.cancel()
    mailbox.put_nowait({"type": "posted"})  # an interruption on top of the cancellation
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_next_or_survives_a_source_that_swallows_the_interruption() -> None:
    mailbox = SourcedMailbox()
    arrived = asyncio.Event()

    async def stubborn() -> dict[str, Any]:
        try:
            await arrived.wait()
        except asyncio.CancelledError:
            pass  # as channels-redis's receive may, under load
        return {"type": "from-source"}

    reader = asyncio.ensure_future(mailbox.next_or(stubborn))
    await asyncio.sleep(0)
    mailbox.put_nowait({"type": "posted"})
    assert await asyncio.wait_for(reader, 1) == {"type": "from-source"}
    assert reader.cancelling() == 0
    assert await mailbox.next_or(stubborn) == {"type": "posted"}
