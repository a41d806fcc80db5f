"""A session's streams: which connection carries each one, and what it missed.

A session has a main stream (0: the HTTP+SSE stream, or the Streamable HTTP
GET stream) and, on Streamable HTTP, one stream per request (its
notifications, then its response). Each is carried by at most one *outlet*:
the connection holding it, in this worker (called directly, with
backpressure) or in another (a :class:`~mcp_gateway.wire.RemoteOutlet`).
Every event is numbered and kept in the session's
:class:`~mcp_gateway.sessions.events.EventBuffer`, so a stream that dropped
can be attached again, on any worker, with what it missed replayed exactly
once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from channels.layers import BaseChannelLayer
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError, JSONRPCResponse, RequestId

from mcp_sessions.models import CloseReason

from ..wire import Attach, AttachedMessage, OutletClosed, RemoteOutlet
from .events import MAIN_STREAM, Event, EventBuffer, EventId, EventsLost, UnknownEvent


class Outlet(Protocol):
    """A connection carrying one of a session's streams."""

    async def deliver(self, event: Event) -> None:
        """Write one event; :class:`~mcp_gateway.wire.OutletClosed` if the connection cannot take it."""

    async def end(self, reason: str) -> None:
        """The session closed, or another connection took over the stream: finish the response."""


class Owner(Protocol):
    """The session the streams belong to (its :class:`~mcp_gateway.sessions.host.SessionHost`)."""

    @property
    def accepting(self) -> bool: ...

    def close_soon(self, reason: str) -> None: ...

    def main_stream_changed(self) -> None:
        """The main stream got a connection, or lost it (the session's use changed: see ``SessionHost.in_use``)."""


class SessionStreams:
    """The streams of one session: their outlets, the request → stream map, the event buffer.

    All changes happen under one lock, so an event is never written to a
    connection while another replays the stream. It refers to its session
    weakly: a session that closes is freed by reference counting, not at the
    next full collection.
    """

    # Slots, not a __dict__: every open session holds one of these.
    __slots__ = ("_lock", "_orphan_timer", "_outlets", "_owner", "_request_streams", "buffer", "resume_timeout")

    def __init__(self, owner: Owner, buffer: EventBuffer, *, resume_timeout: float | None) -> None:
        self._owner: weakref.ReferenceType[Owner] = weakref.ref(owner)
        self.buffer = buffer
        # HTTP+SSE: how long the session waits for its client to resume a dropped main stream, before it closes.
        self.resume_timeout = resume_timeout
        self._outlets: dict[int, tuple[str, Outlet]] = {}  # stream → (the channel of its connection, the outlet)
        self._request_streams: dict[RequestId, int] = {}
        self._lock = asyncio.Lock()
        self._orphan_timer: asyncio.TimerHandle | None = None

    def _close_soon(self, reason: str) -> None:
        owner = self._owner()
        if owner is not None:
            owner.close_soon(reason)

    def _main_stream_changed(self) -> None:
        owner = self._owner()
        if owner is not None:
            owner.main_stream_changed()

    @property
    def carrying(self) -> bool:
        """Whether some connection carries one of the streams (the main one, or a request's)."""
        return bool(self._outlets)

    async def attach(
        self,
        stream: int,
        channel: str,
        outlet: Outlet,
        *,
        after: EventId | None,
        replace: bool,
        announce: Callable[[Attach], Awaitable[None]] | None = None,
    ) -> Attach:
        """Let ``outlet`` carry ``stream``, first replaying what followed ``after``."""
        async with self._lock:
            status, replay = self._attach_status(stream, channel, after, replace)
            if announce is not None:
                await announce(status)
            if status is not Attach.OK:
                if status is Attach.LOST:
                    self._close_soon(CloseReason.EVENTS_LOST)
                return status
            previous = self._outlets.get(stream)
            if previous is not None and previous[0] != channel:
                await previous[1].end(CloseReason.REPLACED)
            self._outlets[stream] = (channel, outlet)
            if stream == MAIN_STREAM:
                if self._orphan_timer is not None:
                    self._orphan_timer.cancel()
                    self._orphan_timer = None
                if previous is None:
                    self._main_stream_changed()
            for event in replay:
                try:
                    await outlet.deliver(event)
                except OutletClosed as closed:
                    self.detach(channel, closed.reason)
                    break
            if replay and replay[-1].final:
                self._outlets.pop(stream, None)
            return Attach.OK

    async def attach_remote(self, layer: BaseChannelLayer, message: Mapping[str, Any]) -> None:
        """An ``mcp.attach`` from another worker: attach its connection, answering on its channel first."""
        reply_to = str(message["reply_to"])
        after = EventId.parse(message["after"]) if message.get("after") else None

        async def announce(status: Attach) -> None:
            answer: AttachedMessage = {"type": "mcp.attached", "status": status.value}
            await layer.send(reply_to, answer)

        await self.attach(
            int(message["stream"]),
            reply_to,
            RemoteOutlet(layer, reply_to),
            after=after,
            replace=bool(message.get("replace")),
            announce=announce,
        )

    def _attach_status(
        self, stream: int, channel: str, after: EventId | None, replace: bool
    ) -> tuple[Attach, list[Event]]:
        owner = self._owner()
        if owner is None or not owner.accepting:
            return Attach.GONE, []
        current = self._outlets.get(stream)
        if current is not None and current[0] != channel and not replace:
            return Attach.CONFLICT, []
        if after is None:
            return Attach.OK, []
        try:
            return Attach.OK, self.buffer.after(after)
        except UnknownEvent:
            return Attach.UNKNOWN, []
        except EventsLost:
            return Attach.LOST, []

    def detach(self, channel: str, reason: str) -> None:
        """The connection at ``channel`` is gone (its client left, or it stalled): it carries no stream now."""
        for stream, (held_by, _) in list(self._outlets.items()):
            if held_by != channel:
                continue
            del self._outlets[stream]
            if stream == MAIN_STREAM:
                self._main_stream_changed()
            if stream == MAIN_STREAM and self.resume_timeout is not None:
                # HTTP+SSE: without its stream the session cannot answer; wait a while for the client to resume.
                if self._orphan_timer is not None:
                    self._orphan_timer.cancel()
                loop = asyncio.get_running_loop()
                self._orphan_timer = loop.call_later(self.resume_timeout, self._close_soon, reason)

    async def open_request(self, request_id: RequestId, channel: str, outlet_for: Callable[[str], Outlet]) -> bool:
        """Give request ``request_id`` a stream of its own, carried by the connection at ``channel``.

        False, with the request refused on that stream, if the client reused
        the ID of a request still in progress in this session.
        """
        async with self._lock:
            stream = self.buffer.new_stream()
            outlet = outlet_for(channel)
            if request_id in self._request_streams:
                error = ErrorData(code=INVALID_REQUEST, message="Request id already in use in this session")
                refusal = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
                event = self.buffer.append(stream, "message", _dump(refusal), final=True)
                with contextlib.suppress(OutletClosed):
                    await outlet.deliver(event)
                return False
            self._request_streams[request_id] = stream
            self._outlets[stream] = (channel, outlet)
            return True

    async def emit(self, stream: int, name: str, data: str, *, final: bool = False, replay: bool = True) -> None:
        """Number one event, and write it to the stream's connection if any.

        The buffer keeps it for replay unless not to ``replay``, or it cannot
        be replayed anyway (see :meth:`EventBuffer.append`): a request's reply
        that comes first on its stream goes out as a plain JSON response and
        is not kept.
        """
        async with self._lock:
            event = self.buffer.append(stream, name, data, final=final, keep=replay)
            held = self._outlets.get(stream)
            if held is None:
                return
            if final:
                del self._outlets[stream]
            try:
                await held[1].deliver(event)
            except OutletClosed as closed:
                self.detach(held[0], closed.reason)

    async def route(self, session_message: SessionMessage) -> None:
        """The server's messages: a response and what relates to its request go to the request's stream."""
        message = session_message.message
        stream, final = MAIN_STREAM, False
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            if message.id is not None and message.id in self._request_streams:
                stream, final = self._request_streams.pop(message.id), True
        else:
            related = getattr(session_message.metadata, "related_request_id", None)
            if related is not None:
                stream = self._request_streams.get(related, MAIN_STREAM)
        await self.emit(stream, "message", _dump(message), final=final)

    def close(self) -> list[Outlet]:
        """The session is closing: stop waiting for a resume and let go of every outlet; the outlets, to end."""
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
        outlets = [outlet for _, outlet in self._outlets.values()]
        self._outlets.clear()
        return outlets


def _dump(message: Any) -> str:
    return str(message.model_dump_json(by_alias=True, exclude_unset=True))
