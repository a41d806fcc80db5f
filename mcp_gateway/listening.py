"""Owned ``subscriptions/listen`` streams (2026-07-28): recorded, capped, revocable live.

A listen stream is a request whose response is a stream of events for as
long as the client keeps it. The gateway records each as an
:class:`~mcp_sessions.models.McpSession` of transport ``listen``: the user,
the credential (token, or the login's hash), the client, the filter, when it
opened, its last event, when and why it closed. So the admin shows and filters
them beside sessions, ``MCP_GATEWAY_MAX_SESSIONS_PER_USER`` counts them with
sessions, and everything that ends sessions ends them too (the admin's revoke,
logout, a password change, a revoked token, a deactivated or deleted user): the
record is closed and its worker is sent ``mcp.close``
(:mod:`mcp_gateway.receivers`), which ends the stream within moments, from any
process. The worker sweeps, leases and shuts them down as its sessions
(:class:`~mcp_gateway.listeners.ListenRegistry`).

The transport calls, for a ``subscriptions/listen`` request::

    stream = await open_listen_stream(layer=..., mount=..., request=..., credential=..., params=...)
    async with stream:                  # TooManySessions raised by the open, before any response
        result = await serve_one(...)   # whose handler is serve_listen: it serves ``stream``

or ``async with listen_stream(...) as stream:`` for both at once. The stream is
served by the SDK's ``ListenHandler``, one per stream, over the user's view of
the gateway's bus (:meth:`~mcp_gateway.bus.ChannelLayerBus.for_user`): the
user's events and everyone's, then the SDK's filter. Closing it (revoked,
expired, shut down) closes that handler, which ends the response gracefully
with its final result; a stream stuck writing to a client that stopped
reading is cancelled after :data:`CLOSE_GRACE` seconds. Events are counted in
memory and saved by the worker's sweep, not written per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer
from django.utils import timezone
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ServerEvent, event_matches
from mcp_types import INTERNAL_ERROR, SubscriptionsListenRequestParams, SubscriptionsListenResult

from mcp_sessions import audit
from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import AuditKind, CloseReason, McpSession, Transport, error_summary

from .auth import Credential
from .bus import ChannelLayerBus, UserBus, bus
from .conf import gateway_settings
from .http import GatewayRequest
from .listen_request import client_field, listen_params, stored_filter_of
from .modern.sdk import own_request_handlers
from .opening import Mount, deadline_for, insert_record
from .worker import Worker, worker

logger = logging.getLogger("mcp_gateway")

LISTEN = "subscriptions/listen"

# Seconds a closed stream has to end its response gracefully before its task is cancelled.
CLOSE_GRACE = 1.0

# The stream the current request serves, for serve_listen (set by ``async with stream``).
_current: contextvars.ContextVar[ListenStream | None] = contextvars.ContextVar("mcp_listen_stream", default=None)


async def open_listen_stream(
    *,
    layer: BaseChannelLayer,
    mount: Mount,
    request: GatewayRequest,
    credential: Credential,
    params: Mapping[str, Any] | SubscriptionsListenRequestParams | None,
    protocol_version: str = "",
    client_info: Any = None,
    site: Worker = worker,
    events: ChannelLayerBus = bus,
) -> ListenStream:
    """Record a listen stream for the caller, within their cap, and register it in ``site``; not served yet.

    :class:`~mcp_gateway.exceptions.TooManySessions` if the user has as many
    sessions and listen streams open as allowed. ``client_info`` is the
    request's ``clientInfo`` (a mapping or an ``Implementation``).
    """
    channel = await site.inbox.address(layer)
    validated = listen_params(params)
    fields = {
        "limit": gateway_settings.MAX_SESSIONS_PER_USER,
        "lease": gateway_settings.LEASE_TIMEOUT,
        # Never given out: a listen stream is reached by its pk, not by an ID; the hash only fills the column.
        "id_hash": hash_session_id(new_session_id()),
        "server": mount.prefix,
        "transport": Transport.LISTEN,
        "channel_name": channel,
        "worker_id": await site.lease.ensure(),
        "client_name": client_field(client_info, "name"),
        "client_version": client_field(client_info, "version"),
        "protocol_version": protocol_version,
        "remote_addr": request.client_ip,
        "user_agent": request.user_agent,
        "origin": request.origin or "",
        "token_id": credential.token_id,
        "login_session_hash": credential.login_session_hash,
        "credential_ref": credential.credential_ref,  # an OAuth grant's: revoking it ends the stream
        "listen_filter": stored_filter_of(validated),
        "in_use": True,  # it holds its stream: never evicted to make room for another (mcp_sessions.eviction)
    }
    record = await insert_record(credential.user, fields)
    audit.record(
        AuditKind.SESSION_OPENED,
        user=credential.user,
        remote_addr=request.client_ip,
        session_ref=record.ref,
        detail=f"{credential.scheme} {Transport.LISTEN} {mount.prefix}",
    )
    return ListenStream(site=site, record=record, credential=credential, bus=events.for_user(str(credential.user.pk)))


@contextlib.asynccontextmanager
async def listen_stream(**kwargs: Any) -> AsyncIterator[ListenStream]:
    """:func:`open_listen_stream` (same arguments), then serving it until the block ends; see the module docstring."""
    stream = await open_listen_stream(**kwargs)
    async with stream:
        yield stream


def serve_listen_streams(server: Server[Any]) -> Server[Any]:
    """``server`` (a per-request copy) with :func:`serve_listen` for ``subscriptions/listen``, if it serves that.

    The copy gets a handler table of its own first: the mount's server, which handshake-era sessions run, keeps
    its own handler. A server built with ``subscriptions=False`` serves no listen streams, and still does not.
    """
    own_request_handlers(server)
    if server.get_request_handler(LISTEN) is not None:
        server.add_request_handler(LISTEN, SubscriptionsListenRequestParams, serve_listen)
    return server


async def serve_listen(
    ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
) -> SubscriptionsListenResult:
    """The gateway's ``subscriptions/listen`` handler: serves the stream opened for this request.

    Registered on the server that serves 2026-07-28 requests in place of the
    ``MCPServer``'s own; a request served without ``async with stream`` is refused.
    """
    stream = _current.get()
    if stream is None:
        raise MCPError(INTERNAL_ERROR, "subscriptions/listen is not served on this path")
    return await stream.serve(ctx, params)


class ListenStream:
    """One live listen stream in its worker: its record, its SDK handler, and how it ends; see the module docstring.

    It is the ``SubscriptionBus`` its own handler reads: the owner's view of
    the gateway's bus, counting the events the filter lets through, and
    closing the handler at once if the stream was closed before it subscribed.
    """

    def __init__(self, *, site: Worker, record: McpSession, credential: Credential, bus: UserBus) -> None:
        self._site = site
        self.pk: int = record.pk
        self.ref = record.ref
        self.credential = credential
        self.remote_addr = record.remote_addr
        self.deadline = deadline_for(credential)
        self._bus = bus
        self._handler = ListenHandler(
            self, max_subscriptions=1, max_buffered_events=gateway_settings.OUTBOUND_QUEUE_SIZE
        )
        self._params: SubscriptionsListenRequestParams | None = None
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None  # the task serving it (entered ``async with``)
        self._close_reason: str | None = None
        self._token: contextvars.Token[ListenStream | None] | None = None
        self._cancel_timer: asyncio.TimerHandle | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._finishing: asyncio.Task[None] | None = None
        self._unwritten: str | None = None
        self.events = 0
        self.last_event_at: datetime | None = None
        self._saved_events = 0
        site.listens.add(self)
        self.schedule_deadline()
        site.sweep_soon()

    # Serving

    async def __aenter__(self) -> ListenStream:
        self._task = asyncio.current_task()
        self._token = _current.set(self)
        if self._close_reason is not None:
            self._arm_cancel()  # closed before it was served
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
        if self._close_reason is None:
            if exc_type is None:
                # The handler returns by itself only when its buffer overflowed: the client stopped reading.
                self._close_reason = CloseReason.STALLED
            elif issubclass(exc_type, asyncio.CancelledError | GeneratorExit):
                self._close_reason = CloseReason.CLIENT_DISCONNECT
            else:
                self._close_reason = CloseReason.SERVER_ERROR
        await self._finish_shielded()

    async def serve(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        """Serve the stream with the SDK's ``ListenHandler`` (acknowledgement first, then the events) until it ends."""
        if self._params is not None:
            raise MCPError(INTERNAL_ERROR, "This listen stream is served already")
        self._params = params
        return await self._handler(ctx, params)

    # The SubscriptionBus its handler reads

    async def publish(self, event: ServerEvent) -> None:
        await self._bus.publish(event)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        wanted = self._params.notifications if self._params is not None else None
        uris = frozenset(wanted.resource_subscriptions or ()) if wanted is not None else frozenset[str]()

        def counted(event: ServerEvent) -> None:
            if wanted is not None and event_matches(wanted, uris, event):
                self.events += 1
                self.last_event_at = timezone.now()
            listener(event)

        unsubscribe = self._bus.subscribe(counted)
        if self._close_reason is not None:
            # Closed before its handler subscribed: close the handler once it has registered its stream.
            self._loop.call_soon(self._handler.close)
        return unsubscribe

    # Ending

    @property
    def accepting(self) -> bool:
        return self._close_reason is None

    def post(self, message: Mapping[str, Any]) -> bool:
        """An inbox message for this stream: ``mcp.close`` (a revocation) and ``mcp.layer_lost`` end it."""
        kind = message.get("type")
        if kind == "mcp.close":
            asked = message.get("reason")
            self.close_soon(asked if isinstance(asked, str) and asked in CloseReason.values else CloseReason.REVOKED)
            return True
        if kind == "mcp.layer_lost":
            self.close_soon(CloseReason.SERVER_ERROR)  # events may be lost meanwhile: the client re-listens
            return True
        return False

    def close_soon(self, reason: str) -> None:
        """End the stream for ``reason``: its handler sends its final result; cancelled if that takes too long."""
        if self._close_reason is None:
            self._close_reason = reason
        self._handler.close()
        if self._task is not None:
            self._arm_cancel()
        elif self._finishing is None:
            self._finishing = self._site.start(self._finish())  # opened, never served

    async def close(self, reason: str) -> None:
        """:meth:`close_soon`, then wait until the record's close was tried (bounded: the cancel fallback)."""
        self.close_soon(reason)
        await asyncio.shield(self._finished)

    def _arm_cancel(self) -> None:
        if self._cancel_timer is None:
            self._cancel_timer = self._loop.call_later(CLOSE_GRACE, self._cancel)

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done() and not self._finished.done():
            logger.info("Listen stream %s did not end by itself; cancelling it", self.ref)
            self._task.cancel()

    async def _finish_shielded(self) -> None:
        if self._finishing is None:
            self._finishing = self._site.start(self._finish())
        with contextlib.suppress(asyncio.CancelledError):
            # Shielded: the serving task may be cancelled again (its client left, the server stops), and the
            # record's close must still be written; the worker's task writes it either way.
            await asyncio.shield(self._finishing)

    async def _finish(self) -> None:
        for timer in (self._cancel_timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        try:
            await self._write_close(self._close_reason or CloseReason.SERVER_SHUTDOWN)
        finally:
            if not self._finished.done():
                self._finished.set_result(None)

    async def _write_close(self, reason: str) -> None:
        """Close the record with the events counted, then unregister and audit; a failed write is the sweep's."""
        try:
            reason = await database_sync_to_async(McpSession.objects.close)(self.pk, reason, self._activity())
        except Exception as exc:
            self._unwritten = reason
            logger.error("Could not record the end of listen stream %s (%s); retrying", self.ref, error_summary(exc))
            self._site.sweep_soon()
            return
        self._unwritten = None
        self._site.listens.discard(self)
        audit.session_closed(
            user=self.credential.user, remote_addr=self.remote_addr, session_ref=self.ref, reason=reason
        )

    # What the worker's sweep reads (see mcp_gateway.listeners.Swept)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def last_seen(self) -> datetime:
        """Now: the idle timeout is for sessions nobody talks to; a listen stream is as alive as its connection."""
        return timezone.now()

    @property
    def close_unwritten(self) -> bool:
        return self._unwritten is not None

    async def retry_close(self) -> None:
        if self._unwritten is not None:
            reason, self._unwritten = self._unwritten, None
            await self._write_close(reason)

    def running_on(self, loop: Any) -> bool:
        return self._loop is loop and self._close_reason is None

    def schedule_deadline(self) -> None:
        """Close at the deadline (lifetime, token expiry) by a timer, once it falls before the sweep after next."""
        if self.deadline is None or self._deadline_timer is not None:
            return
        left = (self.deadline - timezone.now()).total_seconds()
        if left <= 2 * gateway_settings.PING_INTERVAL:
            self._deadline_timer = self._loop.call_later(max(0.0, left), self.close_soon, CloseReason.EXPIRED)

    def sync_use(self) -> None:
        """Nothing to do: a listen stream's record is written in use, and closed with the stream."""

    def _activity(self) -> dict[str, Any]:
        return {"messages_out": self.events, "last_event_at": self.last_event_at}

    def pending_activity(self) -> dict[str, Any] | None:
        """The events counted since the last save, as the record's fields; None if none."""
        return self._activity() if self.events != self._saved_events else None

    def activity_saved(self, fields: dict[str, Any]) -> None:
        self._saved_events = fields.get("messages_out", self._saved_events)
