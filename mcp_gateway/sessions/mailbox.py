"""The FIFOs sessions, connections and daphne's connections wait on, one also fed from message sources.

``asyncio.Queue`` preallocates four deques and Channels' ``await_many_dispatch``
waits with a task per source plus ``asyncio.wait`` machinery; every open
session and every idle stream holds one of these, so their size counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Source = Callable[[], Awaitable[MutableMapping[str, Any]]]


class Mailbox:
    """An unbounded FIFO: ``put_nowait`` never waits, ``get`` waits for an item; a reader cancelled loses nothing.

    Hand-written because ``asyncio.Queue`` preallocates its deques and an
    event: a mailbox holds an empty list, and a list of waiting readers only
    while one waits. Any number of readers may wait; each item goes to one.
    """

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Any:
        return iter(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_next()

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_next()  # woken, then cancelled: the item is for the next reader
                raise
            if not self._getters:
                self._getters = None
        return self._items.pop(0)

    def take_all(self) -> list[Any]:
        """Empty it, returning what it held."""
        items, self._items = self._items, []
        return items


class SourcedMailbox(Mailbox):
    """A mailbox also fed from message sources (the request's ``receive``, a channel-layer inbox).

    Two ways to read sources. :meth:`listen` and :meth:`next`: each source is
    read by a task of its own, one read at a time, and read again only once
    its message has been taken and handled, so a slow reader still holds back
    a channel-layer sender. :meth:`next_or`: one source read in the reader's
    own task, for the connection that waits on its request alone, so an idle
    stream holds no second task.
    """

    __slots__ = ("_closed", "_interrupted", "_reader", "_sources")

    def __init__(self) -> None:
        super().__init__()
        self._sources: dict[asyncio.Task[MutableMapping[str, Any]], Source] = {}
        self._closed = False
        self._reader: asyncio.Task[Any] | None = None
        self._interrupted = False

    def put_nowait(self, item: Any) -> None:
        super().put_nowait(item)
        reader = self._reader
        if reader is not None and not self._interrupted:
            # The reader waits on its source (next_or): interrupt that read, as asyncio.timeout() does, with a
            # cancellation next_or takes back.
            self._interrupted = True
            reader.cancel()

    def listen(self, source: Source) -> None:
        """Read one message from ``source`` in the background; the reader listens again once it has handled it."""
        task = asyncio.ensure_future(source())
        self._sources[task] = source
        task.add_done_callback(self._arrived)

    def _arrived(self, task: asyncio.Task[MutableMapping[str, Any]]) -> None:
        if not self._closed:
            self.put_nowait(task)  # failed or cancelled too: the reader finds out

    async def next(self) -> tuple[MutableMapping[str, Any], Source | None]:
        """The next message, with the source to read again once it is handled (None for a posted message)."""
        item = await self.get()
        if isinstance(item, asyncio.Task):
            return item.result(), self._sources.pop(item)  # a failed source raises here, in the reader
        return item, None

    async def next_or(self, source: Source) -> MutableMapping[str, Any]:
        """The next posted message, else the next message of ``source``, read in the calling task.

        A message posted while ``source`` is being read interrupts the read,
        so ``source`` must be safe to cancel: a message it had not returned
        must stay for its next call. An ASGI ``receive`` is (``asyncio.Queue.get``
        under daphne), as is anything Starlette also cancels to watch for a
        disconnect. Cancelling the reader's task for any other reason still
        cancels it.
        """
        task = asyncio.current_task()
        assert task is not None and self._reader is None, "one reader, in a task"
        while not self._items:
            self._reader = task
            try:
                return await source()
            except asyncio.CancelledError:
                if not self._interrupted:
                    raise
                self._interrupted = False
                if task.uncancel() > 0:
                    raise  # cancelled for another reason as well
            finally:
                self._reader = None
                if self._interrupted:  # the source swallowed the interruption and returned a message
                    self._interrupted = False
                    task.uncancel()
        posted: MutableMapping[str, Any] = self._items.pop(0)
        return posted

    def close(self) -> None:
        """Stop reading every source."""
        self._closed = True
        for task in self._sources:
            task.cancel()
        self._sources.clear()
