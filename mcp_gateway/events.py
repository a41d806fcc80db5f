"""A session's events: numbered, kept for a while, replayable.

Every event a session sends carries an ``id:`` of the form
``<session ref>.<stream>.<seq>``: the session's public reference (a prefix of
its ID's hash, never the ID), the stream it belongs to (0 is the session's
main stream: the HTTP+SSE stream, or the Streamable HTTP GET stream; 1, 2, …
are Streamable HTTP request streams) and its number within that stream. A
client that lost its connection sends the last ID it saw as ``Last-Event-ID``
and gets what followed, exactly once and in order, from a bounded buffer of
the session's most recent events. When the events it missed are no longer
all there, :meth:`EventBuffer.after` says so instead of skipping them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import sse

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

    def as_message(self) -> dict[str, object]:
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
    def from_message(cls, message: dict[str, object]) -> Event:
        return cls(
            id=str(message["id"]),
            stream=int(message["stream"]),  # type: ignore[call-overload]
            seq=int(message["seq"]),  # type: ignore[call-overload]
            name=str(message["name"]),
            data=str(message["data"]),
            final=bool(message["final"]),
        )


class EventBuffer:
    """The last ``size`` events of one session, across its streams."""

    __slots__ = ("_events", "_last_seq", "_next_stream", "_size", "ref")

    def __init__(self, ref: str, size: int) -> None:
        self.ref = ref
        self._size = max(size, 1)
        # A list, not a deque: a deque preallocates a 64-slot block, and every idle stream holds one buffer.
        self._events: list[Event] = []
        self._last_seq: dict[int, int] = {}
        self._next_stream = MAIN_STREAM + 1

    def new_stream(self) -> int:
        stream = self._next_stream
        self._next_stream += 1
        return stream

    def append(self, stream: int, name: str, data: str, *, final: bool = False, keep: bool = True) -> Event:
        """Number the next event of ``stream``; keep it for replay unless ``keep`` is false.

        An event that is never replayed (the endpoint event, the first of its
        stream: no client can resume from before it) is numbered all the same,
        so resuming from it replays what followed.
        """
        seq = self._last_seq.get(stream, 0) + 1
        self._last_seq[stream] = seq
        event = Event(str(EventId(self.ref, stream, seq)), stream, seq, name, data, final)
        if not keep:
            return event
        if len(self._events) == self._size:
            evicted = self._events.pop(0)
            if evicted.final:
                # A finished stream whose last event is gone can only be resumed with a loss.
                self._last_seq.pop(evicted.stream, None)
        self._events.append(event)
        return event

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
