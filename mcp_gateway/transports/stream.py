"""Responses that carry a session's event stream: SSE writing, flow control, keep-alive.

:class:`StreamConsumer` is an outlet of a session (see
:mod:`mcp_gateway.sessions`): the session's host, in this worker or another,
delivers numbered events; the consumer writes them with backpressure (a
client that stops reading is closed as stalled after ``STALL_TIMEOUT``),
pings while idle, and tells the host when its client leaves. Both transports'
streams are one of these."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

import anyio
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.db import DatabaseError

from mcp_sessions.models import CloseReason, McpSession

from .. import opening, sse, wire
from ..auth import Credential
from ..binding import BoundSession
from ..conf import gateway_settings
from ..exceptions import (
    EVENTS_LOST,
    InvalidEventId,
    ServiceUnavailable,
    SessionNotFound,
    StreamConflict,
)
from ..flow import FlowControl, flow_control_for
from ..http import SECURITY_HEADERS, Message, json_bytes, send_error, send_response
from ..sessions.events import Event, EventId
from ..sessions.host import SessionHost
from ..worker import worker
from .base import GatewayConsumer

logger = logging.getLogger("mcp_gateway")


class StreamConsumer(GatewayConsumer):
    """A response that carries one of a session's streams: an :class:`~mcp_gateway.sessions.streams.Outlet`.

    The session's host (in this worker or another) delivers events; this
    consumer writes them with backpressure, pings while idle, and tells the
    host when its client leaves. With ``json_allowed``, a stream whose first
    event is also its last (a request answered without notifications) is sent
    as one ``application/json`` response instead of an event stream.
    """

    internal_messages = True
    json_allowed = False
    host_channel: str | None = None
    session_pk: int | None = None
    flow: FlowControl | None = None
    _mode: str | None = None  # None: nothing sent yet; "sse": streaming; "done": the stream is over
    _ended = False
    _pinging: asyncio.Task[None] | None = None

    def stream_headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers (the Streamable HTTP session ID)."""
        return []

    @property
    def host_is_local(self) -> bool:
        """Whether the session this connection serves runs in this worker (and calls it directly)."""
        return worker.local_host(self.session_pk) is not None

    async def open_session(self, credential: Credential, transport: str) -> tuple[SessionHost, str]:
        """Open a session bound to the caller in this worker, to be carried by this connection; it and its ID.

        The host is not started: the caller attaches this connection first, then starts it. A client gone
        before its record was written ends the consumer: there is nobody to answer.
        """
        try:
            host, session_id = await opening.open_session(
                layer=self.channel_layer,
                mount=self.mount,
                request=self.request,
                credential=credential,
                transport=transport,
            )
        except opening.ClientGone:
            raise StopConsumer() from None
        self.host_channel, self.session_pk = host.inbox, host.pk
        return host, session_id

    async def open_inbox(self) -> None:
        self.channel_name = await self.channel_layer.new_channel()
        worker.register_outlet(self.channel_name, self)

    async def start_stream(self) -> None:
        """Send the event-stream headers, once, with a comment: headers only leave with a body chunk."""
        if self._mode is not None:
            return
        self._mode = "sse"
        self.flow = flow_control_for(self.base_send)
        headers = [*SECURITY_HEADERS, (b"content-type", sse.CONTENT_TYPE), (b"x-accel-buffering", b"no")]
        await self.send(
            {"type": "http.response.start", "status": int(HTTPStatus.OK), "headers": headers + self.stream_headers()}
        )
        await self._write(sse.comment("stream"))

    def start_keepalive(self) -> None:
        """Ping every ``PING_INTERVAL`` while the stream lives (see :class:`~mcp_gateway.keepalive.Keepalive`)."""
        worker.keepalive.add(self)

    def ping_due(self) -> None:
        if self._pinging is None:  # else the last ping is still waiting for the client: skip this one
            self._pinging = asyncio.get_running_loop().create_task(self._ping())
            self._pinging.add_done_callback(self._pinged)

    def _pinged(self, task: asyncio.Task[None]) -> None:
        if self._pinging is task:
            self._pinging = None  # a finished task keeps its coroutine: an idle stream should not hold one

    async def carry(self, session: BoundSession, *, stream: int, after: EventId | None, replace: bool) -> None:
        """Carry ``stream`` of ``session`` on this connection, from the event after ``after``; refusals raise."""
        self.host_channel, self.session_pk = session.channel_name, session.pk
        status = await worker.attach(
            self.channel_layer,
            session.channel_name,
            session.pk,
            self.channel_name,
            stream=stream,
            after=after,
            replace=replace,
        )
        await self.attached(status)

    async def attached(self, status: wire.Attach) -> None:
        """Act on the host's answer to this connection's request to carry a stream."""
        if status is wire.Attach.OK:
            await self.start_stream()
        elif status is wire.Attach.CONFLICT:
            raise StreamConflict()
        elif status is wire.Attach.UNKNOWN:
            raise InvalidEventId()
        elif status is wire.Attach.GONE:
            raise SessionNotFound()
        else:  # LOST: say so, then end; the host closes the session.
            await self.start_stream()
            error = {
                "code": EVENTS_LOST,
                "message": "Events after Last-Event-ID are no longer buffered; the session is closed, open a new one",
                "data": {"reason": CloseReason.EVENTS_LOST},
            }
            await self._write(sse.event("error", json_bytes(error).decode()))
            self._ended = True
            self.end_soon(CloseReason.EVENTS_LOST)

    # Outlet

    async def deliver(self, event: Event) -> None:
        if self._mode == "done":
            raise wire.OutletClosed(CloseReason.CLIENT_DISCONNECT)
        if self._mode is None and self.json_allowed and event.final:
            self._mode = "done"
            await send_response(self.send, HTTPStatus.OK, event.data.encode(), headers=self.stream_headers())
            self.end_soon(CloseReason.COMPLETE)
            return
        await self.start_stream()
        try:
            await self._write(event.encode())
        except wire.OutletClosed:
            self._mode = "done"
            self.end_soon(CloseReason.STALLED)
            raise
        if event.final:
            self._mode = "done"
            self.end_soon(CloseReason.COMPLETE)

    async def end(self, reason: str) -> None:
        self._ended = True
        self.end_soon(reason)

    def end_soon(self, reason: str) -> None:
        self._internal.put_nowait({"type": "stream.end", "reason": reason})

    # Message handlers

    async def http_request(self, message: Message) -> None:
        """A GET takes no body: what arrives anyway (only undeclared: the guards refuse a declared one) is dropped."""

    async def http_disconnect(self, message: Message) -> None:
        self._mode = "done"
        await self._leave(CloseReason.CLIENT_DISCONNECT)
        raise StopConsumer()

    async def stream_end(self, message: Message) -> None:
        self._ended = True  # the stream is complete, or the host dropped it already
        await self._finish_response(message.get("reason"))
        raise StopConsumer()

    async def mcp_end(self, message: Message) -> None:
        """The host (in another worker) ended this stream."""
        self._ended = True
        await self._finish_response(message.get("reason"))
        raise StopConsumer()

    async def mcp_event(self, message: Message) -> None:
        """An event from a host in another worker."""
        try:
            await self.deliver(Event.from_message(message))
        except wire.OutletClosed as closed:
            await self._leave(closed.reason)

    async def mcp_layer_lost(self, message: Message) -> None:
        """The channel layer failed under this stream: events for it may be lost, so end it (clients resume)."""
        await self._leave(CloseReason.SERVER_ERROR)
        self.end_soon(CloseReason.SERVER_ERROR)

    async def mcp_attached(self, message: Message) -> None:
        """A late answer to an attach that timed out; the stream was already refused."""

    # Internals

    async def _leave(self, reason: str) -> None:
        if not self._ended and self.host_channel is not None and self.session_pk is not None:
            self._ended = True
            await worker.detach(self.channel_layer, self.host_channel, self.session_pk, self.channel_name, reason)

    async def _finish_response(self, reason: str | None = None) -> None:
        if self._mode is None:
            # Ended before anything was sent: the session was closed while the request waited, or (busy) its
            # inbox was full.
            refusal = SessionNotFound() if reason != wire.BUSY else ServiceUnavailable("Session busy, retry later")
            await send_error(self.send, refusal, self.request.rpc_id)
        elif self._mode == "sse" or self.flow is not None:
            if self.flow is not None:
                self.flow.release()
            self._mode = "done"
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, chunk: bytes) -> None:
        assert self.flow is not None
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        if self.flow.ready():
            await self.send(message)  # the common case: no timer needed
            return
        try:
            with anyio.fail_after(gateway_settings.STALL_TIMEOUT):
                await self.flow.writable()
                await self.send(message)
        except TimeoutError:
            raise wire.OutletClosed(CloseReason.STALLED) from None

    async def _ping(self) -> None:
        """Keep the stream alive; a stream fed from another worker also checks its session still lives."""
        if self._mode == "done":
            return
        remote = self.host_channel is not None and not self.host_is_local
        try:
            if self._mode == "sse":
                await self._write(sse.comment("ping"))
            if remote and not await database_sync_to_async(_session_lives)(self.session_pk):
                self._ended = True
                self.end_soon(CloseReason.WORKER_LOST)
        except wire.OutletClosed as closed:
            self._mode = "done"
            await self._leave(closed.reason)
            self.end_soon(closed.reason)
        except DatabaseError:
            logger.warning("Could not check a remote session's lease", exc_info=True)

    async def stop(self) -> None:
        worker.keepalive.discard(self)
        if self._pinging is not None and self._pinging is not asyncio.current_task():
            self._pinging.cancel()
        if hasattr(self, "channel_name"):
            worker.unregister_outlet(self.channel_name)
        if self.flow is not None:
            self.flow.release()
        if self.host_channel is None:
            return
        host = worker.local_host(self.session_pk)
        if self.cancelled and host is not None:
            await host.close(CloseReason.SERVER_SHUTDOWN)  # the server is stopping: so is this worker's session
        else:
            await self._leave(CloseReason.CLIENT_DISCONNECT)


def _session_lives(pk: int | None) -> bool:
    return pk is not None and McpSession.objects.open().leased(gateway_settings.LEASE_TIMEOUT).filter(pk=pk).exists()
