"""Channels consumers for the HTTP+SSE transport, and what all transports share.

- :class:`SSEConsumer` (``GET <prefix>sse``) authenticates the caller, opens
  a session bound to them in this worker (a
  :class:`~mcp_gateway.sessions.host.SessionHost`; the address of this worker is
  stored with the record) and carries its stream; or, given ``Last-Event-ID``, resumes the
  caller's session on this connection.
- :class:`MessagesConsumer` (``POST <prefix>messages/``) is a stateless
  forwarder: authenticate, check CSRF, bind the session ID to the caller,
  validate the message, send it to its session, answer 202. It keeps
  no per-process state, so it may run on any worker.

Handlers never block: the session runs in its own task, so
``http.disconnect`` and channel-layer messages are handled as they come.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull, StopConsumer
from channels.layers import get_channel_layer
from django.db import DatabaseError
from mcp_types import JSONRPCMessage, jsonrpc_message_adapter
from pydantic import ValidationError

from mcp_sessions.models import CloseReason, McpSession, Transport

from . import audit, opening, sse, wire
from .auth import authenticate
from .binding import BoundSession, bind, bind_ref, identify, last_event_id, session_id_from_query
from .conf import gateway_settings
from .csrf import check_csrf
from .exceptions import (
    GatewayError,
    InvalidEventId,
    InvalidMessage,
    ParseError,
    ServiceUnavailable,
    SessionNotFound,
    StreamConflict,
)
from .flow import FlowControl, flow_control_for
from .http import SECURITY_HEADERS, GatewayRequest, Message, Receive, Send, json_bytes, send_error, send_response
from .ratelimit import check_rate
from .sessions.events import MAIN_STREAM, Event, EventId
from .sessions.mailbox import SourcedMailbox
from .tickets import issue_ticket, stream_credential
from .worker import worker

if TYPE_CHECKING:
    from .routing import Mount

logger = logging.getLogger("mcp_gateway")

# JSON-RPC server error: events a resuming client missed can no longer be replayed.
EVENTS_LOST = -32002


class GatewayConsumer(AsyncConsumer):
    """Base consumer: one mount, one request, refusals answered in one place.

    Subclasses return, from :meth:`start`, the extra message sources they
    listen to (a channel-layer inbox, or none), and clean up in :meth:`stop`,
    which runs however the consumer ends: normally, on a refusal, or when the
    server cancels it at shutdown.
    """

    user: Any = None
    cancelled = False
    # Whether the consumer posts messages to itself (``_internal``), besides the request and :meth:`start`'s sources.
    internal_messages = False

    def __init__(self, mount: Mount) -> None:
        self.mount = mount
        self.response_started = False
        if self.internal_messages:
            self._internal = SourcedMailbox()

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.base_send = send
        self.request = GatewayRequest.from_scope(scope)
        self.channel_layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
        try:
            extra = await self.start()
            if extra:
                await self._dispatch_all([receive, *extra])
            elif self.internal_messages:
                while True:  # the request and posted messages, read in this task: no task per message source
                    await self.dispatch(await self._internal.next_or(receive))
            else:
                while True:
                    await self.dispatch(await receive())
        except StopConsumer:
            pass
        except GatewayError as exc:
            try:
                if not self.response_started:
                    await send_error(self.send, exc)
            finally:
                audit.record_refusal_after_answer(exc, self.request, self.user)
        except DatabaseError:
            # The connection is discarded before the next query (database_sync_to_async); this request
            # is answered as retryable rather than with daphne's 500.
            logger.exception("Database unavailable")
            if not self.response_started:
                await send_error(self.send, ServiceUnavailable("Database unavailable, retry later"))
        except asyncio.CancelledError:
            self.cancelled = True  # the server is stopping (or gave up on this request): stop() may act on it
            raise
        finally:
            await self.stop()

    async def _dispatch_all(self, sources: list[Callable[[], Awaitable[Message]]]) -> None:
        """Handle messages from ``sources`` and posted ones, one at a time, in arrival order."""
        if not self.internal_messages:
            self._internal = SourcedMailbox()
        mailbox = self._internal
        try:
            for source in sources:
                mailbox.listen(source)
            while True:
                message, source = await mailbox.next()
                await self.dispatch(message)
                if source is not None:
                    mailbox.listen(source)
        finally:
            mailbox.close()

    async def start(self) -> list[Callable[[], Awaitable[Message]]]:
        return []

    async def stop(self) -> None:
        return None

    async def dispatch(self, message: Message) -> None:
        # Unlike AsyncConsumer.dispatch, no aclose_old_connections() per
        # message (a thread hop each): the gateway's database work all goes
        # through database_sync_to_async, which closes stale connections in
        # the same hop as the query.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            logger.warning("Ignoring message of unknown type %r", message.get("type"))
            return
        await handler(message)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self.base_send(message)

    async def http_disconnect(self, message: Message) -> None:
        raise StopConsumer()


def parse_message(body: bytes) -> JSONRPCMessage:
    """The one JSON-RPC message ``body`` holds; a refusal if it holds anything else (a batch, bad JSON)."""
    try:
        return jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ParseError() from None
        raise InvalidMessage() from None


def usable_session_id(request: GatewayRequest) -> str | None:
    """The ``session_id`` query parameter if well formed, else None (the full path then says what is wrong)."""
    try:
        return session_id_from_query(request)
    except GatewayError:
        return None


class MessagesConsumer(GatewayConsumer):
    """``POST <prefix>messages/?session_id=<id>``: forward one message to its session."""

    async def start(self) -> list[Callable[[], Awaitable[Message]]]:
        self.body = bytearray()
        return []

    async def http_request(self, message: Message) -> None:
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        await self.forward(bytes(self.body))
        raise StopConsumer()

    async def forward(self, body: bytes) -> None:
        credential, session = await identify(
            self.request, usable_session_id(self.request), server=self.mount.prefix, transport=Transport.SSE
        )
        self.user = credential.user
        await check_rate(credential.user)
        check_csrf(self.request, credential)
        session_id = session_id_from_query(self.request)
        parsed = parse_message(body)
        if session is None:
            session = await bind(
                self.request, credential, session_id, server=self.mount.prefix, transport=Transport.SSE
            )
        event = {"type": "mcp.inbound", "body": body, "headers": self.request.forwardable_headers()}
        try:
            await worker.send_to_session(self.channel_layer, session.channel_name, session.pk, event, parsed=parsed)
        except ChannelFull:
            raise ServiceUnavailable() from None
        except GatewayError:
            raise
        except Exception:
            # The channel layer is down (e.g. Redis restarting): the message was not accepted, say so (503).
            logger.warning("Channel layer unavailable; message refused with 503", exc_info=True)
            raise ServiceUnavailable("Channel layer unavailable, retry later") from None
        await send_response(self.send, 202, b"", content_type=None)


class TicketsConsumer(GatewayConsumer):
    """``POST <prefix>tickets``: issue a stream ticket to an authenticated caller (201)."""

    async def http_request(self, message: Message) -> None:
        if message.get("more_body"):
            return  # the body carries nothing; the guards bound its size
        credential = await authenticate(self.request)
        self.user = credential.user
        await check_rate(credential.user)
        check_csrf(self.request, credential)
        ticket = await issue_ticket(self.request, credential)
        body = {"ticket": ticket, "expires_in": gateway_settings.TICKET_LIFETIME}
        await send_response(self.send, 201, json_bytes(body))
        raise StopConsumer()


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
        await self.send({"type": "http.response.start", "status": 200, "headers": headers + self.stream_headers()})
        await self._write(sse.comment("stream"))

    def start_keepalive(self) -> None:
        """Ping every ``PING_INTERVAL`` while the stream lives (see :class:`~mcp_gateway.worker.Keepalive`)."""
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
            await send_response(self.send, 200, event.data.encode(), headers=self.stream_headers())
            self.end_soon("complete")
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
            self.end_soon("complete")

    async def end(self, reason: str) -> None:
        self._ended = True
        self.end_soon(reason)

    def end_soon(self, reason: str) -> None:
        self._internal.put_nowait({"type": "stream.end", "reason": reason})

    # Message handlers

    async def http_request(self, message: Message) -> None:
        """A GET has no body to read."""

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
        if not self._ended and self.host_channel is not None:
            self._ended = True
            await worker.detach(self.channel_layer, self.host_channel, self.session_pk, self.channel_name, reason)

    async def _finish_response(self, reason: str | None = None) -> None:
        if self._mode is None:
            # Ended before anything was sent: the session was closed while the request waited, or (busy) its
            # inbox was full.
            refusal = SessionNotFound() if reason != wire.BUSY else ServiceUnavailable("Session busy, retry later")
            await send_error(self.send, refusal)
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
    return McpSession.objects.open().leased(gateway_settings.LEASE_TIMEOUT).filter(pk=pk).exists()


class SSEConsumer(StreamConsumer):
    """``GET <prefix>sse``: open a session bound to the caller and carry its stream, or resume one.

    Without ``Last-Event-ID`` a new session starts here and its first event
    names the URL to POST to. With it (the header, or ``last_event_id`` in the
    query), the caller's session that sent that event continues on this
    connection, on any worker, after the events it missed.
    """

    async def start(self) -> list[Callable[[], Awaitable[Message]]]:
        credential = await stream_credential(self.request)
        self.user = credential.user
        resume_after = last_event_id(self.request)
        if resume_after is not None:
            session = await bind_ref(
                self.request, credential, resume_after.ref, server=self.mount.prefix, transport=Transport.SSE
            )
            if resume_after.stream != MAIN_STREAM:
                raise InvalidEventId()
        await self.open_inbox()
        if resume_after is None:
            await self._open(credential)
        else:
            await self.carry(session, stream=MAIN_STREAM, after=resume_after, replace=True)
        self.start_keepalive()
        self.request.release()
        if self.host_is_local:
            return []  # the session is in this worker and calls this consumer directly: nothing to listen to
        return [wire.receiver(self.channel_layer, self.channel_name)]

    async def _open(self, credential: Any) -> None:
        host, session_id = await opening.open_session(
            layer=self.channel_layer,
            mount=self.mount,
            request=self.request,
            credential=credential,
            transport=Transport.SSE,
        )
        self.host_channel, self.session_pk = host.inbox, host.pk
        try:
            await host.streams.attach(MAIN_STREAM, self.channel_name, self, after=None, replace=False)
            await self.start_stream()
            # Headers go out with the first body chunk, so the endpoint event is sent at once. It is never replayed
            # (a client resumes from it or later), so an idle session does not keep it.
            url = self.mount.messages_url(self.scope, session_id)
            await host.streams.emit(MAIN_STREAM, "endpoint", url, replay=False)
        finally:
            host.start()
