"""A session's events: numbered, kept for a while, replayable.

Every event a session sends carries an ``id:`` of the form
``<session ref>.<stream>.<seq>``: the session's public reference (a prefix of
its ID's hash, never the ID), the stream it belongs to (0 is the session's
main stream: the HTTP+SSE stream, or the Streamable HTTP GET stream; 1, 2, …
are Streamable HTTP request streams) and its number within that stream. A
client that lost its connection sends the last ID it saw as ``Last-Event-ID``
and gets what followed, exactly once and in order, from a bounded buffer of
the session's most recent events, bounded in count and in bytes. When the
events it missed are no longer all there, :meth:`EventBuffer.after` says so
instead of skipping them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import sse
from ..wire import EventMessage

MAIN_STREAM = 0

_EVENT_ID_RE = re.compile(r"([0-9a-f]{12})\.(\d{1,9})\.(\d{1,12})")


class EventsLost(Exception):
    """Some events after the client's last one are no longer buffered."""


class UnknownEvent(Exception):
    """The client names an event this session never sent."""


@dataclass(frozen=True, slots=True)
class EventId:
    ref: str
    stream: int
    seq: int

    @classmethod
    def parse(cls, value: str) -> EventId | None:
        """The ID a client sent back, or None if it is not one of ours."""
        match = _EVENT_ID_RE.fullmatch(value.strip())
        if match is None:
            return None
        return cls(match[1], int(match[2]), int(match[3]))

    def __str__(self) -> str:
        return f"{self.ref}.{self.stream}.{self.seq}"


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event of a session. ``final`` marks the last event of a request stream (its response)."""

    id: str
    stream: int
    seq: int
    name: str
    data: str
    final: bool = False

    def encode(self) -> bytes:
        return sse.event(self.name, self.data, self.id)

    def as_message(self) -> EventMessage:
        """This event as a channel-layer message, for a stream held by another worker."""
        return {
            "type": "mcp.event",
            "id": self.id,
            "stream": self.stream,
            "seq": self.seq,
            "name": self.name,
            "data": self.data,
            "final": self.final,
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Event:
        return cls(
            id=str(message["id"]),
            stream=int(message["stream"]),
            seq=int(message["seq"]),
            name=str(message["name"]),
            data=str(message["data"]),
            final=bool(message["final"]),
        )


class EventBuffer:
    """The last events of one session, across its streams: at most ``size`` of them and ``max_bytes`` of data.

    Oldest first out. An event's cost is the memory its ``data`` string takes
    (``sys.getsizeof``: its characters at 1, 2 or 4 bytes each as Python stores
    them, plus a small header, so a reply with one emoji in it counts at its
    real size; no copy is made to measure it). The rest of an event is small
    and bounded by ``size``.
    """

    __slots__ = ("_bytes", "_events", "_last_seq", "_max_bytes", "_next_stream", "_size", "ref")

    def __init__(self, ref: str, size: int, *, max_bytes: int) -> None:
        self.ref = ref
        self._size = max(size, 1)
        self._max_bytes = max_bytes
        # A list, not a deque: a deque preallocates a 64-slot block, and every idle stream holds one buffer.
        self._events: list[Event] = []
        self._bytes = 0  # what the kept events' data take
        self._last_seq: dict[int, int] = {}
        self._next_stream = MAIN_STREAM + 1

    @property
    def nbytes(self) -> int:
        """What the kept events' data take, as counted against ``max_bytes``."""
        return self._bytes

    def new_stream(self) -> int:
        stream = self._next_stream
        self._next_stream += 1
        return stream

    def append(self, stream: int, name: str, data: str, *, final: bool = False, keep: bool = True) -> Event:
        """Number the next event of ``stream``; keep it for replay unless there is no point.

        Numbered but not kept:

        - an event the caller will not have replayed (``keep`` false: the
          endpoint event, the first of its stream, from before which no client
          can resume), so resuming from it replays what followed;
        - the first event of a request stream when it is also its last (a reply
          with nothing before it): a client learns a stream's event IDs only
          from its events, so it cannot name one from before that reply, and
          once it has the reply the stream is over. Such a reply goes out as a
          plain ``application/json`` response, which carries no ID at all;
        - an event larger than ``max_bytes`` on its own: it is delivered, and a
          client that needs it again is told the events are lost.
        """
        seq = self._last_seq.get(stream, 0) + 1
        self._last_seq[stream] = seq
        event = Event(str(EventId(self.ref, stream, seq)), stream, seq, name, data, final)
        if not keep:
            return event
        cost = sys.getsizeof(data)
        if (final and seq == 1) or cost > self._max_bytes:
            self._forget(event)
            return event
        self._events.append(event)
        self._bytes += cost
        while len(self._events) > self._size or self._bytes > self._max_bytes:
            evicted = self._events.pop(0)
            self._bytes -= sys.getsizeof(evicted.data)
            self._forget(evicted)
        return event

    def _forget(self, event: Event) -> None:
        """``event`` is not (or no longer) kept."""
        if event.final:
            # A finished stream whose last event is gone can only be resumed with a loss; and a finished stream
            # need not be remembered at all (else every request ever made would leave its number here).
            self._last_seq.pop(event.stream, None)

    def after(self, last: EventId) -> list[Event]:
        """The events of ``last``'s stream that followed it, or :class:`EventsLost`."""
        if last.ref != self.ref or last.stream >= self._next_stream:
            raise UnknownEvent()
        newest = self._last_seq.get(last.stream)
        if newest is None:
            if last.stream == MAIN_STREAM:
                raise UnknownEvent()
            raise EventsLost()
        if last.seq > newest:
            raise UnknownEvent()
        missed = [e for e in self._events if e.stream == last.stream and e.seq > last.seq]
        if len(missed) != newest - last.seq:
            raise EventsLost()
        return missed
