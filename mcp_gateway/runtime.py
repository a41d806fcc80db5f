"""Live sessions, and how HTTP connections reach them.

A session runs in one worker, the one that opened it, as a
:class:`SessionHost`: the MCP server loop (:class:`~mcp_gateway.actor.SessionActor`),
a numbered and bounded buffer of the events it sent
(:class:`~mcp_gateway.events.EventBuffer`), and an inbox on the channel layer
whose address is stored with the session's record. The host outlives any one
connection:

- client messages reach it through its inbox, from whichever worker took the POST;
- its events go to *outlets*, one per stream: the connection that carries the
  stream, in this worker (called directly, with backpressure) or in another
  (through that connection's own channel);
- a stream that drops can be resumed (``Last-Event-ID``), on any worker, with
  the events it missed replayed from the buffer, exactly once and in order.

The host ends on revocation or ``DELETE`` (a ``mcp.close`` message), expiry,
idleness, a lost HTTP+SSE stream not resumed within ``RESUME_TIMEOUT``, the
MCP server ending, or the worker shutting down; it then ends its outlets and
closes its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import anyio
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from channels.utils import await_many_dispatch
from django.db import IntegrityError
from django.utils import timezone
from mcp.shared.message import SessionMessage
from mcp_types import ErrorData, JSONRPCError, JSONRPCRequest, JSONRPCResponse, RequestId, jsonrpc_message_adapter
from pydantic import ValidationError

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import AuditKind, CloseReason, McpSession, SessionLimitReached, Transport

from . import audit
from .actor import SessionActor
from .auth import Credential
from .conf import gateway_settings
from .context import GatewayRequestContext
from .events import MAIN_STREAM, Event, EventBuffer, EventId, EventsLost, UnknownEvent
from .exceptions import ServiceUnavailable, TooManySessions
from .http import GatewayRequest
from .lease import lease

logger = logging.getLogger("mcp_gateway")

E = TypeVar("E", bound=BaseException)

# Seconds to wait for a host in another worker to answer an attach.
ATTACH_TIMEOUT = 5.0

# JSON-RPC "invalid request": the client reused the ID of a request still in progress.
INVALID_REQUEST = -32600


class OutletClosed(Exception):
    """The connection carrying a stream can take no more events."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionEnded(Exception):
    """Raised inside a host's task to end the session for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Attach(enum.StrEnum):
    """How a request to carry a stream was answered."""

    OK = "ok"
    CONFLICT = "conflict"  # the stream already has a connection
    LOST = "lost"  # events the client missed are gone; the session ends
    UNKNOWN = "unknown"  # the client named an event this session never sent
    GONE = "gone"  # the session ended meanwhile


class Outlet(Protocol):
    """A connection carrying one of a session's streams."""

    async def deliver(self, event: Event) -> None:
        """Write one event; :class:`OutletClosed` if the connection cannot take it."""

    async def end(self, reason: str) -> None:
        """The session ended, or another connection took over the stream: finish the response."""


class RemoteOutlet:
    """A connection held by another worker, reached through its channel."""

    def __init__(self, layer: BaseChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel

    async def deliver(self, event: Event) -> None:
        try:
            await self.layer.send(self.channel, event.as_message())
        except ChannelFull:
            raise OutletClosed(CloseReason.STALLED) from None

    async def end(self, reason: str) -> None:
        try:
            await self.layer.send(self.channel, {"type": "mcp.end", "reason": reason})
        except Exception:
            logger.warning("Could not tell a remote stream to end", exc_info=True)


# What this process runs: hosts by inbox channel, and connections able to carry streams by their channel.
_hosts: dict[str, SessionHost] = {}
_outlets: dict[str, Outlet] = {}


def receiver(layer: BaseChannelLayer, channel: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``layer.receive(channel)`` that turns a lost channel layer into a message instead of a crash.

    A socket timeout is retried (it races channels-redis's own blocking pop
    when redis-py's timeout is not above 5 s). Any other failure (Redis went
    away) yields ``{"type": "mcp.layer_lost"}``: messages queued there may be
    gone, so the receiver ends what depends on them, as a clear error.
    """

    async def receive() -> dict[str, Any]:
        while True:
            try:
                return await layer.receive(channel)
            except TimeoutError:
                continue
            except Exception:
                logger.warning("Channel layer receive failed", exc_info=True)
                return {"type": "mcp.layer_lost"}

    return receive


def register_outlet(channel: str, outlet: Outlet) -> None:
    _outlets[channel] = outlet


def unregister_outlet(channel: str) -> None:
    _outlets.pop(channel, None)


def _outlet_for(layer: BaseChannelLayer, channel: str) -> Outlet:
    return _outlets.get(channel) or RemoteOutlet(layer, channel)


def local_host(inbox: str) -> SessionHost | None:
    return _hosts.get(inbox)


def local_hosts() -> list[SessionHost]:
    return list(_hosts.values())


async def attach(
    layer: BaseChannelLayer,
    host_channel: str,
    channel: str,
    *,
    stream: int,
    after: EventId | None,
    replace: bool,
) -> Attach:
    """Make the connection at ``channel`` carry ``stream`` of the session whose inbox is ``host_channel``.

    A host in this process is called directly. One elsewhere is asked through
    its inbox; its answer is the first message on ``channel``, ahead of any event.
    """
    host = _hosts.get(host_channel)
    if host is not None:
        return await host.attach(stream, channel, _outlet_for(layer, channel), after=after, replace=replace)
    request = {
        "type": "mcp.attach",
        "reply_to": channel,
        "stream": stream,
        "after": str(after) if after is not None else None,
        "replace": replace,
    }
    try:
        await layer.send(host_channel, request)
        with anyio.fail_after(ATTACH_TIMEOUT):
            answer = await layer.receive(channel)
    except (ChannelFull, TimeoutError):
        raise ServiceUnavailable("The session's worker did not answer, retry later") from None
    return Attach(answer.get("status", Attach.GONE))


async def detach(layer: BaseChannelLayer, host_channel: str, channel: str, reason: str) -> None:
    """The connection at ``channel`` no longer carries any of the session's streams."""
    host = _hosts.get(host_channel)
    if host is not None:
        await host.detach(channel, reason)
        return
    with contextlib.suppress(Exception):
        await layer.send(host_channel, {"type": "mcp.detach", "reply_to": channel, "reason": reason})


async def close_all(reason: str = CloseReason.SERVER_SHUTDOWN) -> None:
    """End every session this process runs (the server is shutting down)."""
    await asyncio.gather(*(host.close(reason) for host in local_hosts()), return_exceptions=True)


async def open_session(
    *,
    layer: BaseChannelLayer,
    mount: Any,
    request: GatewayRequest,
    credential: Credential,
    transport: str,
) -> tuple[SessionHost, str]:
    """Record a new session bound to the caller and create its host here; returns it and the secret ID.

    The host is not started: the caller attaches its connection first, so
    that nothing the session sends can miss it.
    """
    inbox = await layer.new_channel()
    session_id = new_session_id()
    fields = {
        "limit": gateway_settings.MAX_SESSIONS_PER_USER,
        "lease": gateway_settings.LEASE_TIMEOUT,
        "id_hash": hash_session_id(session_id),
        "server": mount.prefix,
        "transport": transport,
        "channel_name": inbox,
        "worker_id": await lease.ensure(),
        "remote_addr": request.client_ip,
        "user_agent": request.user_agent[:400],
        "origin": (request.origin or "")[:400],
        "token_id": credential.token_id,
        "login_session_hash": credential.login_session_hash,
    }
    open_for = database_sync_to_async(McpSession.objects.open_for)
    try:
        try:
            record = await open_for(credential.user, **fields)
        except IntegrityError:
            # This worker's row is gone (the database was restored or flushed): register again, once.
            await lease.register()
            record = await open_for(credential.user, **fields)
    except SessionLimitReached:
        raise TooManySessions() from None
    audit.record(
        AuditKind.SESSION_OPENED,
        user_id=credential.user.pk,
        remote_addr=request.client_ip,
        session_ref=record.ref,
        detail=f"{credential.scheme} {transport} {mount.prefix}",
    )
    host = SessionHost(
        layer=layer,
        inbox=inbox,
        record=record,
        server=mount.server,
        context=GatewayRequestContext(
            user=credential.user, session_ref=record.ref, transport=transport, server=mount.prefix
        ),
        deadline=_deadline(credential),
        resume_timeout=gateway_settings.RESUME_TIMEOUT if transport == Transport.SSE else None,
    )
    return host, session_id


def _deadline(credential: Credential) -> datetime | None:
    """When a session must end: its maximum lifetime, or its token's expiry if sooner."""
    lifetime = gateway_settings.MAX_LIFETIME
    candidates = [credential.expires_at]
    if lifetime is not None:
        candidates.append(timezone.now() + timedelta(seconds=lifetime))
    return min((c for c in candidates if c is not None), default=None)


class SessionHost:
    """One live session in this worker; see the module docstring."""

    def __init__(
        self,
        *,
        layer: BaseChannelLayer,
        inbox: str,
        record: McpSession,
        server: Any,
        context: GatewayRequestContext,
        deadline: datetime | None,
        resume_timeout: float | None,
    ) -> None:
        self.layer = layer
        self.inbox = inbox
        self.pk = record.pk
        self.ref = record.ref
        self.user_id = record.user_id
        self.remote_addr = record.remote_addr
        self.deadline = deadline
        self.resume_timeout = resume_timeout
        self.buffer = EventBuffer(record.ref, gateway_settings.EVENT_BUFFER_SIZE)
        self.actor = SessionActor(
            server,
            context=context,
            sink=self._route,
            inbound_size=gateway_settings.INBOUND_QUEUE_SIZE,
            outbound_size=gateway_settings.OUTBOUND_QUEUE_SIZE,
            max_in_flight=gateway_settings.MAX_REQUESTS_IN_FLIGHT,
        )
        self.closed = asyncio.Event()
        self._spoken = asyncio.Event()
        self._outlets: dict[int, tuple[str, Outlet]] = {}
        self._request_streams: dict[RequestId, int] = {}
        self._lock = asyncio.Lock()
        self._internal: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._close_reason: str | None = None
        self._lost_reason: str = CloseReason.CLIENT_DISCONNECT
        self._orphan_timer: asyncio.TimerHandle | None = None
        self._orphaned_since = 0
        _hosts[inbox] = self

    # Lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self, reason: str) -> None:
        """End the session from outside its task, and wait until it has."""
        if self._close_reason is None:
            self._close_reason = reason
        if self._task is None:
            await self._finish(reason)
        elif not self._task.done():
            self._task.cancel()
        await self.closed.wait()

    async def _run(self) -> None:
        reason: str = CloseReason.SERVER_ENDED
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._inbox)
                tg.start_soon(self._housekeeping)
                # The MCP server loop starts with the first client message: an idle stream costs no server state.
                await self._spoken.wait()
                await self.actor.run()
                tg.cancel_scope.cancel()
        except asyncio.CancelledError:
            # Cancelled by close() or at shutdown: finish the session rather than abandon it.
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            reason = self._close_reason or CloseReason.SERVER_SHUTDOWN
        except Exception as exc:
            ended = _first(exc, SessionEnded)
            if ended is not None:
                reason = ended.reason
            else:
                reason = CloseReason.SERVER_ERROR
                logger.exception("MCP session %s failed", self.ref)
        await self._finish(reason)

    async def _finish(self, reason: str) -> None:
        if self.closed.is_set() or _hosts.get(self.inbox) is not self:
            return
        del _hosts[self.inbox]
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
        outlets = [outlet for _, outlet in self._outlets.values()]
        self._outlets.clear()
        try:
            for outlet in outlets:
                await outlet.end(reason)
            # Closed elsewhere already (revoked), the record keeps that time and reason.
            reason = await database_sync_to_async(McpSession.objects.close)(
                self.pk, reason, self.actor.pending_activity()
            )
            audit.record(
                AuditKind.SESSION_CLOSED,
                user_id=self.user_id,
                remote_addr=self.remote_addr,
                session_ref=self.ref,
                detail=reason,
            )
        except Exception:
            logger.exception("Could not record the end of MCP session %s", self.ref)
        finally:
            self.closed.set()

    async def _housekeeping(self) -> None:
        """Save activity now and then; end the session when it went idle, expired, or was closed elsewhere."""
        idle_timeout = gateway_settings.IDLE_TIMEOUT
        while True:
            if self.deadline is None:
                await anyio.sleep(gateway_settings.PING_INTERVAL)
            else:
                left = (self.deadline - timezone.now()).total_seconds()
                await anyio.sleep(max(0.0, min(gateway_settings.PING_INTERVAL, left)))
                if timezone.now() >= self.deadline:
                    raise SessionEnded(CloseReason.EXPIRED)
            changes = self.actor.pending_activity()
            if not await database_sync_to_async(McpSession.objects.record_activity)(self.pk, changes):
                raise SessionEnded(CloseReason.REVOKED)  # closed elsewhere; the record keeps its own reason
            if idle_timeout is not None and (timezone.now() - self.actor.last_seen).total_seconds() > idle_timeout:
                raise SessionEnded(CloseReason.EXPIRED)

    # The inbox

    async def _inbox(self) -> None:
        await await_many_dispatch([receiver(self.layer, self.inbox), self._internal.get], self._dispatch)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "mcp.inbound":
            await self.receive_message(message)
        elif kind == "mcp.attach":
            await self._remote_attach(message)
        elif kind == "mcp.detach":
            await self.detach(str(message.get("reply_to")), str(message.get("reason") or CloseReason.CLIENT_DISCONNECT))
        elif kind == "mcp.close":
            reason = message.get("reason")
            raise SessionEnded(reason if reason in CloseReason.values else CloseReason.REVOKED)
        elif kind == "host.orphaned":
            if message["since"] == self._orphaned_since and MAIN_STREAM not in self._outlets:
                raise SessionEnded(self._lost_reason)
        elif kind == "host.lost":
            raise SessionEnded(CloseReason.EVENTS_LOST)
        elif kind == "mcp.layer_lost":
            raise SessionEnded(CloseReason.SERVER_ERROR)
        else:
            logger.warning("Session inbox ignoring a message of type %r", kind)

    async def receive_message(self, message: dict[str, Any]) -> None:
        """A client message; with ``reply_to``, a request whose own stream goes to that connection."""
        try:
            parsed = jsonrpc_message_adapter.validate_json(message["body"], by_name=False)
        except ValidationError:
            return  # validated by the POST handler; nothing else sends here
        self._spoken.set()
        reply_to = message.get("reply_to")
        if reply_to and isinstance(parsed, JSONRPCRequest):
            async with self._lock:
                stream = self.buffer.new_stream()
                outlet = _outlet_for(self.layer, reply_to)
                if parsed.id in self._request_streams:
                    error = ErrorData(code=INVALID_REQUEST, message="Request id already in use in this session")
                    refusal = JSONRPCError(jsonrpc="2.0", id=parsed.id, error=error)
                    event = self.buffer.append(stream, "message", _dump(refusal), final=True)
                    with contextlib.suppress(OutletClosed):
                        await outlet.deliver(event)
                    return
                self._request_streams[parsed.id] = stream
                self._outlets[stream] = (reply_to, outlet)
        await self.actor.deliver(parsed, message.get("headers") or {})

    async def _remote_attach(self, message: dict[str, Any]) -> None:
        reply_to = str(message["reply_to"])
        after = EventId.parse(message["after"]) if message.get("after") else None

        async def announce(status: Attach) -> None:
            await self.layer.send(reply_to, {"type": "mcp.attached", "status": status.value})

        await self.attach(
            int(message["stream"]),
            reply_to,
            RemoteOutlet(self.layer, reply_to),
            after=after,
            replace=bool(message.get("replace")),
            announce=announce,
        )

    # Streams

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
                    self._internal.put_nowait({"type": "host.lost"})
                return status
            previous = self._outlets.get(stream)
            if previous is not None and previous[0] != channel:
                await previous[1].end("replaced")
            self._outlets[stream] = (channel, outlet)
            if stream == MAIN_STREAM:
                self._orphaned_since += 1
            for event in replay:
                try:
                    await outlet.deliver(event)
                except OutletClosed as closed:
                    self._drop(channel, closed.reason)
                    break
            if replay and replay[-1].final:
                self._outlets.pop(stream, None)
            return Attach.OK

    def _attach_status(
        self, stream: int, channel: str, after: EventId | None, replace: bool
    ) -> tuple[Attach, list[Event]]:
        if self.closed.is_set() or self._close_reason is not None:
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

    async def detach(self, channel: str, reason: str) -> None:
        """The connection at ``channel`` is gone (its client left, or it stalled)."""
        self._drop(channel, reason)

    def _drop(self, channel: str, reason: str) -> None:
        for stream, (held_by, _) in list(self._outlets.items()):
            if held_by != channel:
                continue
            del self._outlets[stream]
            if stream == MAIN_STREAM and self.resume_timeout is not None:
                # HTTP+SSE: without its stream the session cannot answer; wait a while for the client to resume.
                self._lost_reason = reason
                self._orphaned_since += 1
                if self._orphan_timer is not None:
                    self._orphan_timer.cancel()
                self._orphan_timer = asyncio.get_running_loop().call_later(
                    self.resume_timeout,
                    self._internal.put_nowait,
                    {"type": "host.orphaned", "since": self._orphaned_since},
                )

    async def emit(self, stream: int, name: str, data: str, *, final: bool = False) -> None:
        """Number and buffer one event, and write it to the stream's connection if it has one."""
        async with self._lock:
            event = self.buffer.append(stream, name, data, final=final)
            held = self._outlets.get(stream)
            if held is None:
                return
            if final:
                del self._outlets[stream]
            try:
                await held[1].deliver(event)
            except OutletClosed as closed:
                self._drop(held[0], closed.reason)

    async def _route(self, session_message: SessionMessage) -> None:
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


def _dump(message: Any) -> str:
    return message.model_dump_json(by_alias=True, exclude_unset=True)


def _first(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` exception in ``exc``, looking into exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first(inner, kind)
            if found is not None:
                return found
    return None
