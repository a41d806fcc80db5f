"""The keepalive of a worker's open streams: one task, and a little of it per loop turn.

Every open stream (HTTP+SSE, a Streamable HTTP ``GET``, a 2026-07-28 event
stream) gets a ping every ``PING_INTERVAL`` so that proxies do not close it
while it is idle. One worker may hold tens of thousands of them: pinging them
all in one pass stalled the event loop (about 0.3 s for 10,000), and every
request waiting meanwhile with it.

So the streams are spread over :data:`SLOTS` slots of a wheel that turns one
slot every ``PING_INTERVAL / SLOTS``: a stream joins the slot holding the
fewest, which comes round within one interval, and is then pinged once per
turn of the wheel, every ``PING_INTERVAL`` (give or take one slot's time).
And a slot is pinged :data:`BATCH` streams per loop turn, yielding to the loop
in between, so that a burst of opens crowded into one slot does not bring the
stall back. Not a timer per stream: an idle stream costs one dict entry, and
the loop's timer heap stays small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .conf import gateway_settings

# Slots of the wheel: the streams pinged at each tick are a 32nd of them.
SLOTS = 32

# Streams pinged per loop turn, at most: a ping schedules a task, about 30 µs each.
BATCH = 64


class Pinged(Protocol):
    """An open stream (a transport's consumer): it writes a ping when told one is due."""

    def ping_due(self) -> None: ...


class Revocable(Protocol):
    """A stream that ends itself when its credential is revoked (a 2026-07-28 one: it has no session)."""

    def credentials_revoked(self, message: dict[str, Any]) -> None: ...


class Keepalive:
    """Pings every open stream of this worker each ``PING_INTERVAL``, a slot at a time; see the module docstring."""

    def __init__(self, start: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]) -> None:
        self._start = start
        # Dicts rather than sets: ordered, so a slot is pinged in the order its streams joined.
        self._slots: list[dict[Pinged, None]] = [{} for _ in range(SLOTS)]
        self._slot_of: dict[Pinged, int] = {}
        self._revocable: dict[Pinged, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def add(self, stream: Pinged) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new event loop (asyncio.run again): the old loop's streams are over.
            self._slots, self._slot_of, self._revocable = [{} for _ in range(SLOTS)], {}, {}
            self._loop = loop
        if stream in self._slot_of:
            return
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = self._start(self._run())
        slot = min(range(SLOTS), key=lambda n: len(self._slots[n]))
        self._slots[slot][stream] = None
        self._slot_of[stream] = slot
        if callable(getattr(stream, "credentials_revoked", None)):
            self._revocable[stream] = None

    def discard(self, stream: Pinged) -> None:
        slot = self._slot_of.pop(stream, None)
        if slot is not None:
            self._slots[slot].pop(stream, None)
        self._revocable.pop(stream, None)

    def credentials_revoked(self, message: dict[str, Any]) -> None:
        """Tell the open streams that credentials were revoked: a 2026-07-28 one (a listen stream) has no session
        to be revoked with, so it ends itself if its credential is among them. Only those are visited."""
        for stream in list(self._revocable):
            revocable: Revocable = stream  # type: ignore[assignment]  # only streams with the method are kept here
            revocable.credentials_revoked(message)

    async def _run(self) -> None:
        slot = 0
        while self._slot_of:
            await asyncio.sleep(gateway_settings.PING_INTERVAL / SLOTS)
            due = list(self._slots[slot])
            slot = (slot + 1) % SLOTS
            for start in range(0, len(due), BATCH):
                if start:
                    await asyncio.sleep(0)  # the rest of the slot after whatever else is waiting
                for stream in due[start : start + BATCH]:
                    if stream in self._slot_of:  # not discarded since
                        stream.ping_due()
