"""The launcher's input queue: what daphne needs of ``asyncio.Queue``, at a fraction of its memory."""

from __future__ import annotations

import asyncio

import pytest

from mcp_gateway.daphne import ApplicationQueue


async def test_items_come_out_in_order_and_a_reader_waits_for_one() -> None:
    queue = ApplicationQueue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert [await queue.get(), await queue.get()] == [1, 2]
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait(3)
    assert await asyncio.wait_for(reader, 1) == 3
    assert queue.empty() and queue.qsize() == 0


async def test_waiting_readers_each_get_one_item() -> None:
    queue = ApplicationQueue()
    readers = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for item in "abc":
        queue.put_nowait(item)
    assert sorted(await asyncio.wait_for(asyncio.gather(*readers), 1)) == ["a", "b", "c"]


@pytest.mark.parametrize("woken", [False, True], ids=["cancelled-while-waiting", "cancelled-once-woken"])
async def test_a_cancelled_reader_loses_nothing(woken: bool) -> None:
    queue = ApplicationQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    if woken:
        queue.put_nowait("item")  # wakes the first reader, which is cancelled before it runs
    first.cancel()
    if not woken:
        await asyncio.sleep(0)
        queue.put_nowait("item")
    assert await asyncio.wait_for(second, 1) == "item"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_empty_queue_is_still_true() -> None:
    # daphne tests ``if self.application_queue:`` to know whether the application exists.
    assert ApplicationQueue()


@pytest.mark.parametrize(("args", "frozen"), [([], True), (["--no-gc-freeze"], False)], ids=["default", "opt-out"])
def test_the_objects_of_the_loaded_application_are_frozen_unless_asked_not_to(
    args: list[str], frozen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from daphne.cli import CommandLineInterface as DaphneCommandLineInterface
    from daphne.server import Server

    from mcp_gateway.daphne import CommandLineInterface

    servers = []

    def build_only(cli: DaphneCommandLineInterface, argv: list[str]) -> None:
        servers.append(cli.server_class(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"]))

    monkeypatch.setattr(DaphneCommandLineInterface, "run", build_only)
    monkeypatch.setattr(Server, "run", lambda server: None)
    CommandLineInterface().run([*args, "demo.asgi:application"])
    before = gc.get_freeze_count()  # not 0 on every Python: 3.12 freezes some objects of its own
    try:
        servers[0].run()
        assert (gc.get_freeze_count() > before) is frozen
    finally:
        if gc.get_freeze_count() > before:
            gc.unfreeze()
