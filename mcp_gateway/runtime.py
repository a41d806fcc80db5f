"""Live sessions, and how HTTP connections reach them.

A session runs in one worker, the one that opened it, as a
:class:`SessionHost`: the MCP server loop (:class:`~mcp_gateway.actor.SessionActor`),
a numbered and bounded buffer of the events it sent
(:class:`~mcp_gateway.events.EventBuffer`), and an inbox. The host outlives
any one connection:

- client messages reach its inbox from whichever worker took the POST: in its
  own worker directly, from another one through that worker's one address on
  the channel layer (:class:`WorkerInbox`), which is stored with the record;
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
import contextvars
import enum
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from django.db import IntegrityError
from django.utils import timezone
from mcp.shared.message import SessionMessage
from mcp_types import ErrorData, JSONRPCError, JSONRPCRequest, JSONRPCResponse, RequestId, jsonrpc_message_adapter
from pydantic import ValidationError

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import AuditKind, CloseReason, McpSession, SessionLimitReached, Transport, error_summary

from . import audit
from .sessions.actor import SessionActor
from .auth import Credential
from .conf import gateway_settings
from .context import GatewayRequestContext
from .sessions.events import MAIN_STREAM, Event, EventBuffer, EventId, EventsLost, UnknownEvent
from .exceptions import ServiceUnavailable, SessionNotFound, TooManySessions
from .http import GatewayRequest
from .lease import lease
from .sessions.mailbox import Mailbox

logger = logging.getLogger("mcp_gateway")

# Seconds to wait for a host in another worker to answer an attach.
ATTACH_TIMEOUT = 5.0

# How a stream ends when its request was refused because the session's inbox was full (the client gets 503).
BUSY = "busy"

# Channel layers that only carry messages within one process: a session's messages all come from this worker.
PROCESS_LOCAL_LAYERS: tuple[type[BaseChannelLayer], ...] = (InMemoryChannelLayer,)

# Waiting messages a session's inbox holds when the channel layer sets no capacity (as Channels' default).
DEFAULT_INBOX_CAPACITY = 100

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


# What this process runs: hosts by record pk and by session ID hash, and connections able to carry
# streams by their channel.
_hosts: dict[int, SessionHost] = {}
_hosts_by_id_hash: dict[str, SessionHost] = {}
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


class WorkerInbox:
    """This worker's one address on the channel layer, shared by all the sessions it runs.

    Whatever another process has for a session here (a client message whose
    POST it took, a stream it wants to carry, a revocation) is sent to this
    address, tagged with the session's record pk, and handed to the session's
    host. One receiving task per worker rather than one per session: an idle
    session holds no channel-layer queue and no task reading it. Senders in
    this worker skip the channel layer (:func:`send_to_session`).

    A lost channel layer ends every session of the worker, as a lost inbox
    ended its session before: messages queued there may be gone.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._layer: BaseChannelLayer | None = None
        self._channel: asyncio.Future[str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def address(self, layer: BaseChannelLayer) -> str:
        """The channel this worker receives on, listening from the first call (and again if the loop stopped)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._layer is not layer or self._channel is None:
            if self._task is not None and self._loop is loop:
                self._task.cancel()  # another layer on this loop (tests): its address is not this worker's any more
            self._loop, self._layer = loop, layer
            self._channel = loop.create_future()
            self._task = self._start(self._name_and_receive(layer, self._channel))
        try:
            channel = await asyncio.shield(self._channel)
        except Exception:
            self._loop = None  # could not get an address (the layer is down): the next session tries again
            raise
        if self._task is not None and self._task.done():
            logger.error("This worker's inbox had stopped; listening again on %s", channel)
            self._task = self._start(self._receive(layer, channel))
        return channel

    def _start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # A context of its own: it serves every session, so it must not carry the opening request's.
        return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())

    async def _name_and_receive(self, layer: BaseChannelLayer, named: asyncio.Future[str]) -> None:
        try:
            channel = await layer.new_channel()
        except Exception as exc:
            named.set_exception(exc)
            return
        named.set_result(channel)
        await self._receive(layer, channel)

    async def _receive(self, layer: BaseChannelLayer, channel: str) -> None:
        while True:
            try:
                message = await layer.receive(channel)
            except TimeoutError:
                continue
            except Exception:
                logger.warning("Channel layer receive failed: this worker's sessions end", exc_info=True)
                for host in _hosts_on(asyncio.get_running_loop()):
                    host.post({"type": "mcp.layer_lost"}, force=True)
                await asyncio.sleep(1.0)
                continue
            try:
                self.dispatch(layer, message)
            except Exception:
                logger.exception("Could not dispatch a message of type %r", message.get("type"))

    def dispatch(self, layer: BaseChannelLayer, message: dict[str, Any]) -> None:
        """Hand ``message`` to its session's host; answer for a session that is not here (any more)."""
        pks = message.pop("sessions", None)
        if not isinstance(pks, list):
            pks = [message.pop("session", None)]
        for pk in pks:
            host = _hosts.get(pk) if isinstance(pk, int) else None
            if host is None or not host.accepting:
                _refuse(layer, message, "gone")
                continue
            try:
                host.post(message)
            except ChannelFull:
                # The session has not read its last ``capacity`` messages: it is stuck. Its sender was told the
                # message was accepted, so say what happened rather than queue without bound.
                logger.warning("MCP session %s: inbox full, a %s message dropped", host.ref, message.get("type"))
                _refuse(layer, message, "full")


_replies: set[asyncio.Task[None]] = set()


def _refuse(layer: BaseChannelLayer, message: dict[str, Any], why: str) -> None:
    """Answer a message its session cannot take: it is gone, or (``full``) its inbox is.

    A connection waiting on it (a stream attaching, a Streamable HTTP request)
    is told at once instead of timing out; a message nobody waits on (a
    client notification, a revocation, a detach) needs no answer.
    """
    reply_to = message.get("reply_to")
    if not isinstance(reply_to, str):
        return
    if message.get("type") == "mcp.attach":
        reply: dict[str, Any] = {"type": "mcp.attached", "status": Attach.GONE.value}
    elif message.get("type") == "mcp.inbound":
        reply = {"type": "mcp.end", "reason": CloseReason.REVOKED if why == "gone" else BUSY}
    else:
        return
    outlet = _outlets.get(reply_to)
    coro = outlet.end(reply["reason"]) if outlet is not None and reply["type"] == "mcp.end" else None
    task = asyncio.get_running_loop().create_task(coro or _send_quietly(layer, reply_to, reply))
    _replies.add(task)
    task.add_done_callback(_replies.discard)


async def _send_quietly(layer: BaseChannelLayer, channel: str, message: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await layer.send(channel, message)


_worker_inbox = WorkerInbox()


def _hosts_on(loop: asyncio.AbstractEventLoop) -> list[SessionHost]:
    return [host for host in list(_hosts.values()) if host.running_on(loop)]


async def send_to_session(
    layer: BaseChannelLayer, channel: str, pk: int, message: dict[str, Any], *, parsed: Any = None
) -> None:
    """Deliver ``message`` to the session ``pk`` whose worker's address is ``channel``.

    The channel layer keeps a session's messages in the order they were
    accepted, from whichever worker: a client that waited for its 202 before
    sending the next message is served in that order. So messages go through
    it, except with a layer that lives in this process only (Channels'
    in-memory layer), where every sender is here: then the host takes the
    message directly, already ``parsed`` if given, so it is not validated
    twice. :class:`ChannelFull` when the session's inbox is full, as the
    layer says for a full channel; :class:`SessionNotFound` when the session
    is ending.
    """
    if isinstance(layer, PROCESS_LOCAL_LAYERS):
        host = _hosts.get(pk)
        if host is None or not host.accepting:
            raise SessionNotFound()
        host.post(message if parsed is None else {**message, "parsed": parsed})
        return
    await layer.send(channel, {**message, "session": pk})


def register_outlet(channel: str, outlet: Outlet) -> None:
    _outlets[channel] = outlet


def unregister_outlet(channel: str) -> None:
    _outlets.pop(channel, None)


def _outlet_for(layer: BaseChannelLayer, channel: str) -> Outlet:
    return _outlets.get(channel) or RemoteOutlet(layer, channel)


def local_host(pk: int | None) -> SessionHost | None:
    """The host of session ``pk`` if this worker runs it."""
    return _hosts.get(pk) if pk is not None else None


def local_hosts() -> list[SessionHost]:
    return list(_hosts.values())


def local_host_by_id_hash(id_hash: str) -> SessionHost | None:
    return _hosts_by_id_hash.get(id_hash)


async def attach(
    layer: BaseChannelLayer,
    host_channel: str,
    pk: int,
    channel: str,
    *,
    stream: int,
    after: EventId | None,
    replace: bool,
) -> Attach:
    """Make the connection at ``channel`` carry ``stream`` of session ``pk``, run by the worker at ``host_channel``.

    A host in this process is called directly. One elsewhere is asked through
    its worker's address; its answer is the first message on ``channel``, ahead of any event.
    """
    host = _hosts.get(pk)
    if host is not None:
        return await host.attach(stream, channel, _outlet_for(layer, channel), after=after, replace=replace)
    request = {
        "type": "mcp.attach",
        "session": pk,
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


async def detach(layer: BaseChannelLayer, host_channel: str, pk: int, channel: str, reason: str) -> None:
    """The connection at ``channel`` no longer carries any of session ``pk``'s streams."""
    host = _hosts.get(pk)
    if host is not None:
        await host.detach(channel, reason)
        return
    with contextlib.suppress(Exception):
        await layer.send(host_channel, {"type": "mcp.detach", "session": pk, "reply_to": channel, "reason": reason})


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
    inbox = await _worker_inbox.address(layer)
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
        "user_agent": request.user_agent,  # cleaned and cut to their columns by open_for
        "origin": request.origin or "",
        "token_id": credential.token_id,
        "login_session_hash": credential.login_session_hash,
    }
    opening = asyncio.ensure_future(_insert_record(credential.user, fields))
    try:
        # Shielded: a cancelled caller (its client left, the server is stopping) cannot stop the insert in its
        # thread, only stop waiting for it; the record it writes is then closed here rather than left open.
        record = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_abandoned)
        raise
    except SessionLimitReached:
        raise TooManySessions() from None
    audit.record(
        AuditKind.SESSION_OPENED,
        user=credential.user,
        remote_addr=request.client_ip,
        session_ref=record.ref,
        detail=f"{credential.scheme} {transport} {mount.prefix}",
    )
    host = SessionHost(
        layer=layer,
        inbox=inbox,
        record=record,
        credential=credential,
        server=mount.server,
        deadline=_deadline(credential),
        resume_timeout=gateway_settings.RESUME_TIMEOUT if transport == Transport.SSE else None,
    )
    return host, session_id


async def _insert_record(user: Any, fields: dict[str, Any]) -> McpSession:
    open_for = database_sync_to_async(McpSession.objects.open_for)
    try:
        return await open_for(user, **fields)
    except IntegrityError:
        # This worker's row is gone (the database was restored or flushed): register again, once.
        await lease.register()
        return await open_for(user, **fields)


_closings: set[asyncio.Task[None]] = set()


def _close_abandoned(opening: asyncio.Future[McpSession]) -> None:
    """The record written for a caller that was cancelled meanwhile: it will have no host, so close it now."""
    if opening.cancelled() or opening.exception() is not None:
        return
    task = asyncio.get_running_loop().create_task(_close_hostless(opening.result()), context=contextvars.Context())
    _closings.add(task)
    task.add_done_callback(_closings.discard)


async def _close_hostless(record: McpSession) -> None:
    try:
        reason = await database_sync_to_async(McpSession.objects.close)(record.pk, CloseReason.HOST_LOST, None)
    except Exception as exc:
        # Still open, on this worker, with no host: the worker's heartbeat closes it (see mcp_gateway.lease).
        logger.error(
            "Could not close MCP session %s, whose opening request went away (%s)", record.ref, error_summary(exc)
        )
        return
    audit.record(
        AuditKind.SESSION_CLOSED,
        user_id=record.user_id,
        remote_addr=record.remote_addr,
        session_ref=record.ref,
        detail=reason,
    )


class Sweeper:
    """Housekeeping for all of a worker's sessions, in one task and one database hop per ``PING_INTERVAL``.

    Saves the activity counts of each session, ends those whose record was
    closed elsewhere (a revocation whose message to the session was lost) and
    those idle longer than ``IDLE_TIMEOUT``. One query per interval for the
    whole worker, not one per session, and no task per session. A session
    whose activity could not be written is left for the next sweep without
    holding up the others; a session whose close could not be written when
    it ended is closed again (its host stays registered until it is).
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def ensure(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), context=contextvars.Context())

    async def _run(self) -> None:
        while _hosts:
            await asyncio.sleep(gateway_settings.PING_INTERVAL)
            try:
                await self.sweep()
            except Exception:
                logger.exception("Could not save the activity of this worker's sessions; retrying")

    async def sweep(self) -> None:
        loop = asyncio.get_running_loop()
        for host in [host for host in list(_hosts.values()) if host.close_unwritten and host._loop is loop]:
            await host.retry_close()
        hosts = _hosts_on(loop)
        if not hosts:
            return
        for host in hosts:
            host.schedule_deadline()
        changes = {host.pk: host.pending_activity() for host in hosts}
        still_open, written = await database_sync_to_async(McpSession.objects.record_activity)(changes)
        for host in hosts:
            if host.pk in written and (fields := changes[host.pk]):
                host.activity_saved(fields)
        idle_timeout = gateway_settings.IDLE_TIMEOUT
        now = timezone.now()
        for host in hosts:
            if host.pk not in still_open:
                host.end_soon(CloseReason.REVOKED)  # closed elsewhere; the record keeps its own reason
            elif idle_timeout is not None and (now - host.last_seen).total_seconds() > idle_timeout:
                host.end_soon(CloseReason.EXPIRED)


_sweeper = Sweeper()

# The heartbeat closes the records open on this worker that no host here holds (see mcp_gateway.lease).
lease.live_sessions = _hosts.keys


def _deadline(credential: Credential) -> datetime | None:
    """When a session must end: its maximum lifetime, or its token's expiry if sooner."""
    lifetime = gateway_settings.MAX_LIFETIME
    candidates = [credential.expires_at]
    if lifetime is not None:
        candidates.append(timezone.now() + timedelta(seconds=lifetime))
    return min((c for c in candidates if c is not None), default=None)


class SessionHost:
    """One live session in this worker; see the module docstring."""

    # Slots, not a __dict__: every open session holds one of these, idle or not.
    __slots__ = (
        "__weakref__",
        "_actor_scope",
        "_actor_task",
        "_capacity",
        "_close_reason",
        "_closed",
        "_credential_checked_at",
        "_deadline_timer",
        "_ended",
        "_ending",
        "_lock",
        "_loop",
        "_mail",
        "_orphan_timer",
        "_outlets",
        "_request_streams",
        "_scope",
        "_server",
        "_task",
        "_unwritten",
        "actor",
        "buffer",
        "credential",
        "deadline",
        "id_hash",
        "inbox",
        "last_seen",
        "layer",
        "mount_prefix",
        "pk",
        "ref",
        "remote_addr",
        "renewing",
        "resume_timeout",
        "transport",
        "user_id",
    )

    def __init__(
        self,
        *,
        layer: BaseChannelLayer,
        inbox: str,
        record: McpSession,
        credential: Credential,
        server: Any,
        deadline: datetime | None,
        resume_timeout: float | None,
    ) -> None:
        self.layer = layer
        self.inbox = inbox
        self.pk = record.pk
        self.ref = record.ref
        self.id_hash = record.id_hash
        self.mount_prefix = record.server
        self.transport = record.transport
        self.user_id = record.user_id
        self.credential = credential
        # Never, for a credential the database vouched for only in the past (a login ticket): no pin until confirmed.
        self._credential_checked_at = time.monotonic() if credential.verified else -math.inf
        self.renewing = False  # a check of the pinned credential is under way off the requests' path
        self.remote_addr = record.remote_addr
        self.deadline = deadline
        self.resume_timeout = resume_timeout
        self.buffer = EventBuffer(
            self.ref, gateway_settings.EVENT_BUFFER_SIZE, max_bytes=gateway_settings.EVENT_BUFFER_BYTES
        )
        self._server = server
        # The MCP server loop is created with the first client message: an idle stream holds no server state.
        self.actor: SessionActor | None = None
        self.last_seen = timezone.now()
        self._actor_task: asyncio.Task[None] | None = None
        # Whether _finish has begun, and has completed; what close() waits on, made when someone waits.
        self._ending = False
        self._ended = False
        self._closed: asyncio.Future[None] | None = None
        # The reason it ended for, while the close of its record is not written (the write failed).
        self._unwritten: str | None = None
        self._outlets: dict[int, tuple[str, Outlet]] = {}
        self._request_streams: dict[RequestId, int] = {}
        self._lock = asyncio.Lock()
        # The loop it was started on, and the task that reads its inbox: created by the first message (or the
        # end), so an idle session holds no task.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        # Ends that task's loop; an anyio scope keeps cancelling until the loop is out (a library may swallow
        # one plain task cancellation: channels-redis's receive does, under load).
        self._scope: anyio.CancelScope | None = None
        self._close_reason: str | None = None
        self._orphan_timer: asyncio.TimerHandle | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        # The inbox: messages in arrival order.
        self._mail = Mailbox()
        # As many waiting messages as the layer lets a channel hold (RedisPubSubChannelLayer sets no limit).
        get_capacity = getattr(layer, "get_capacity", None)
        self._capacity: int = get_capacity(inbox) if get_capacity is not None else DEFAULT_INBOX_CAPACITY
        _hosts[self.pk] = self
        _hosts_by_id_hash[self.id_hash] = self

    # Lifecycle

    def start(self) -> None:
        """Serve: its inbox is read from now on (by a task that the first message, or the end, starts)."""
        self._loop = asyncio.get_running_loop()
        if self._mail or self._close_reason is not None:
            self._wake()  # messages came, or it ended, before it started
        self.schedule_deadline()
        _sweeper.ensure()

    def schedule_deadline(self) -> None:
        """Set the timer that ends the session at its deadline, if that falls before the sweep after next.

        Later deadlines are left to a later sweep, which calls this again: a
        session that lives for hours holds no timer until its last minutes.
        """
        if self.deadline is None or self._deadline_timer is not None or self._loop is None:
            return
        left = (self.deadline - timezone.now()).total_seconds()
        if left <= 2 * gateway_settings.PING_INTERVAL:
            self._deadline_timer = self._loop.call_later(max(0.0, left), self.end_soon, CloseReason.EXPIRED)

    def _wake(self) -> None:
        """Have the inbox read, or the end acted on: start the task that does, or interrupt it to end."""
        if self._loop is None:
            return  # not started: start() does this
        if self._task is None:
            self._task = self._loop.create_task(self._run())
        elif self._close_reason is not None and self._scope is not None:
            self._scope.cancel()

    async def close(self, reason: str) -> None:
        """End the session from outside its task, and wait until it has (trying again a close not yet written)."""
        if self._close_reason is None:
            self._close_reason = reason
        if self._ended:
            await self.retry_close()
            return
        if self._task is None:
            await self._finish(reason)
        else:
            self._wake()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the session has ended and the close of its record was tried (a failed one is retried)."""
        if self._ended:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    @property
    def accepting(self) -> bool:
        """Open and not ending: a message posted now will be read."""
        return self._close_reason is None and not self._ending

    def end_soon(self, reason: str) -> None:
        """End the session for ``reason`` without waiting (from a timer, or from inside the session)."""
        if self._close_reason is None:
            self._close_reason = reason
        self._wake()

    def running_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Started on ``loop`` and not ending."""
        return self._loop is loop and self._close_reason is None

    def post(self, message: dict[str, Any], *, force: bool = False) -> None:
        """Put ``message`` in the inbox; :class:`ChannelFull` if it is full (unless ``force``)."""
        if not force and len(self._mail) >= self._capacity:
            raise ChannelFull()
        self._mail.put_nowait(message)
        if self._task is None:
            self._wake()

    def pending_activity(self) -> dict[str, Any] | None:
        return self.actor.pending_activity() if self.actor is not None else None

    def activity_saved(self, fields: dict[str, Any]) -> None:
        if self.actor is not None:
            self.actor.activity_saved(fields)

    def all_activity(self) -> dict[str, Any] | None:
        return self.actor.all_activity() if self.actor is not None else None

    async def _run(self) -> None:
        """Read the inbox until the session ends; then stop the MCP server loop and close the record.

        Started by the first message or by the end (:meth:`_wake`): a session
        that never heard from its client has no task. The server loop
        (:meth:`_serve`) is started by the first client message.
        """
        reason: str = CloseReason.SERVER_ENDED
        self._scope = scope = anyio.CancelScope()
        if self._close_reason is not None:
            scope.cancel()  # ended before its first message
        try:
            with scope:
                while True:
                    await self._dispatch(await self._mail.get())
            # Ended by close() or end_soon().
            reason = self._close_reason or CloseReason.SERVER_SHUTDOWN
        except asyncio.CancelledError:
            # The task itself was cancelled (the server is shutting down): finish the session rather than abandon it.
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            reason = self._close_reason or CloseReason.SERVER_SHUTDOWN
        except SessionEnded as ended:
            reason = ended.reason
        except Exception:
            reason = CloseReason.SERVER_ERROR
            logger.exception("MCP session %s failed", self.ref)
        await self._finish(reason)

    async def _serve(self) -> None:
        """The MCP server loop; the session ends with it."""
        assert self.actor is not None
        try:
            with self._actor_scope:
                await self.actor.run()
            if self._actor_scope.cancel_called:
                return  # stopped by _run: the session is ending already
        except Exception:
            logger.exception("MCP session %s failed", self.ref)
            self.end_soon(CloseReason.SERVER_ERROR)
        else:
            self.end_soon(CloseReason.SERVER_ENDED)

    async def _finish(self, reason: str) -> None:
        if self._ending or _hosts.get(self.pk) is not self:
            return
        self._ending = True
        if self._loop is None:
            self._loop = asyncio.get_running_loop()  # never started: the sweep of this loop retries a failed close
        actor_task = self._actor_task
        if actor_task is not None and not actor_task.done() and actor_task is not asyncio.current_task():
            # An anyio cancel scope, not task.cancel(): it keeps cancelling until the server loop has
            # unwound, even if a handler catches one cancellation to answer its request.
            self._actor_scope.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await actor_task
        for timer in (self._orphan_timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        outlets = [outlet for _, outlet in self._outlets.values()]
        self._outlets.clear()
        unread = self._mail.take_all()
        try:
            try:
                for outlet in outlets:
                    await outlet.end(reason)
                for message in unread:  # nothing will read them now: answer whoever waits on one
                    _refuse(self.layer, message, "gone")
            except Exception:
                logger.exception("Could not end the streams of MCP session %s", self.ref)
            await self._write_close(reason)
        finally:
            if self.actor is not None:
                # The actor's sink is this host's router: without this cycle the session's objects (its
                # buffered events first) are freed now by reference counting, not at the next full collection.
                self.actor.release()
            self._ended = True
            if self._closed is not None:
                self._closed.set_result(None)

    async def _write_close(self, reason: str) -> None:
        """Close the record, with all the activity, and audit it; then, and only then, unregister the host.

        A write that fails leaves the host registered, ending and taking no
        more messages, with the reason kept for the sweep to try again
        (:meth:`retry_close`) until it is written: an unregistered host could
        never close its record, which would hold one of the user's session
        slots, open, for good.
        """
        try:
            # Closed elsewhere already (revoked), the record keeps that time and reason but still learns
            # all the activity: a sweep's write may have been refused because the record had just closed.
            reason = await database_sync_to_async(McpSession.objects.close)(self.pk, reason, self.all_activity())
        except Exception as exc:
            self._unwritten = reason
            logger.error(
                "Could not record the end of MCP session %s (%s); retrying at the next sweep",
                self.ref,
                error_summary(exc),
            )
            _sweeper.ensure()
            return
        except BaseException:
            self._unwritten = reason  # cancelled: whether it was written is unknown, and writing it again is harmless
            raise
        if _hosts.get(self.pk) is self:
            del _hosts[self.pk]
        if _hosts_by_id_hash.get(self.id_hash) is self:
            del _hosts_by_id_hash[self.id_hash]
        audit.record(
            AuditKind.SESSION_CLOSED,
            user=self.credential.user,
            remote_addr=self.remote_addr,
            session_ref=self.ref,
            detail=reason,
        )

    @property
    def close_unwritten(self) -> bool:
        """Ended, and the close of its record not written yet (the write failed)."""
        return self._unwritten is not None

    async def retry_close(self) -> None:
        """Write the close that failed when the session ended, if it did (the sweep calls this)."""
        if self._unwritten is None:
            return
        reason, self._unwritten = self._unwritten, None  # taken: a concurrent retry does not write it twice
        await self._write_close(reason)

    # The credential that opened the session

    def admits(self, fingerprint: str, *, server: str, transport: str) -> bool:
        """Whether a request presenting ``fingerprint`` may reach this session without the database.

        Only if the session is open, on that mount and transport, the
        fingerprint is that of the credential that opened it, and the database
        confirmed that credential less than ``RECHECK_INTERVAL`` seconds ago.
        """
        if self._close_reason is not None or self._ending:
            return False
        if self.mount_prefix != server or self.transport != transport:
            return False
        pinned = self.credential.fingerprint
        if not pinned or not hmac.compare_digest(pinned, fingerprint):
            return False
        return time.monotonic() - self._credential_checked_at < gateway_settings.RECHECK_INTERVAL

    def confirm(self, credential: Credential, *, checked_at: float | None = None) -> None:
        """The database authenticated ``credential`` as this session's owner: renew the pin if it is the one.

        ``checked_at`` (``time.monotonic()``) is when that check began, if it was not just now.
        """
        pinned = self.credential.fingerprint
        if not credential.verified:
            return  # e.g. a ticket resuming the stream: it says nothing about the login now
        if pinned and credential.fingerprint and hmac.compare_digest(pinned, credential.fingerprint):
            now = time.monotonic()
            self._credential_checked_at = now if checked_at is None else min(checked_at, now)

    def renewal_due(self) -> bool:
        """Whether the pin is in the last quarter of its life with no renewal under way.

        The request that notices renews it in the background (see
        :func:`~mcp_gateway.binding.pinned_session`): a client that keeps
        sending never meets an expired pin, so never waits for the database.
        """
        interval = gateway_settings.RECHECK_INTERVAL
        return not self.renewing and time.monotonic() - self._credential_checked_at > interval * 0.75

    # The inbox

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
        elif kind == "mcp.layer_lost":
            raise SessionEnded(CloseReason.SERVER_ERROR)
        else:
            logger.warning("Session inbox ignoring a message of type %r", kind)

    async def receive_message(self, message: dict[str, Any]) -> None:
        """A client message; with ``reply_to``, a request whose own stream goes to that connection."""
        parsed = message.get("parsed")  # validated already by a POST handler in this worker
        if parsed is None:
            try:
                parsed = jsonrpc_message_adapter.validate_json(message["body"], by_name=False)
            except ValidationError:
                return  # validated by the POST handler in its worker; nothing else sends here
        actor = self._actor()
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
        self.last_seen = timezone.now()
        await actor.deliver(parsed, message.get("headers") or {})

    def _actor(self) -> SessionActor:
        if self.actor is None:
            context = GatewayRequestContext(
                user=self.credential.user, session_ref=self.ref, transport=self.transport, server=self.mount_prefix
            )
            self.actor = SessionActor(
                self._server,
                context=context,
                sink=self._route,
                inbound_size=gateway_settings.INBOUND_QUEUE_SIZE,
                outbound_size=gateway_settings.OUTBOUND_QUEUE_SIZE,
                max_in_flight=gateway_settings.MAX_REQUESTS_IN_FLIGHT,
            )
            self._actor_scope = anyio.CancelScope()
            self._actor_task = asyncio.get_running_loop().create_task(self._serve())
        return self.actor

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
                    self.end_soon(CloseReason.EVENTS_LOST)
                return status
            previous = self._outlets.get(stream)
            if previous is not None and previous[0] != channel:
                await previous[1].end("replaced")
            self._outlets[stream] = (channel, outlet)
            if stream == MAIN_STREAM and self._orphan_timer is not None:
                self._orphan_timer.cancel()
                self._orphan_timer = None
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
        if self._ending or self._close_reason is not None:
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
                if self._orphan_timer is not None:
                    self._orphan_timer.cancel()
                self._orphan_timer = asyncio.get_running_loop().call_later(self.resume_timeout, self.end_soon, reason)

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
