"""A live session in the worker that opened it: its lifecycle and its inbox.

A :class:`SessionHost` holds the MCP server loop
(:class:`~mcp_gateway.sessions.actor.SessionActor`, created with the first
client message), the session's streams
(:class:`~mcp_gateway.sessions.streams.SessionStreams`), the credential pin
(:class:`~mcp_gateway.sessions.pin.CredentialPin`) and an inbox: every
message for the session, from this worker or another, is read from it in
order by one task, which the first message (or the close) starts. An idle
session holds no task and no timer: once its server loop has been idle for
``PARK_AFTER`` seconds, the loop is parked (see :mod:`.parking`), and that task
ends too, until the next message.

The host belongs to its worker (:class:`~mcp_gateway.worker.Worker`), which
registers it, sweeps it, and reaches it; the host knows the worker only as a
:class:`Site`, so this package never imports the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from django.utils import timezone
from mcp_types import JSONRPCMessage, JSONRPCRequest, jsonrpc_message_adapter
from pydantic import ValidationError

from mcp_sessions import audit
from mcp_sessions.models import AuditKind, CloseReason, McpSession, error_summary

from ..auth import Credential
from ..caller import credential_fields
from ..conf import gateway_settings
from ..context import GatewayRequestContext
from .actor import SessionActor
from .events import EventBuffer
from .mailbox import Mailbox
from .parking import Parking
from .pin import CredentialPin
from .site import DEFAULT_INBOX_CAPACITY, EVICTION_GRACE, SessionClosing, Site
from .streams import Outlet, SessionStreams
from .usage import UsageFlag

logger = logging.getLogger("mcp_gateway")


class SessionHost(Parking):
    """One live session in this worker; see the module docstring."""

    # Slots, not a __dict__: every open session holds one of these, idle or not.
    __slots__ = (
        "__weakref__",
        "_actor_scope",
        "_actor_task",
        "_capacity",
        "_close_reason",
        "_closed",
        "_deadline_timer",
        "_ended",
        "_ending",
        "_loop",
        "_mail",
        "_scope",
        "_server",
        "_site",
        "_task",
        "_unwritten",
        "actor",
        "credential",
        "deadline",
        "id_hash",
        "inbox",
        "last_seen",
        "layer",
        "mount_prefix",
        "pin",
        "pk",
        "ref",
        "remote_addr",
        "streams",
        "transport",
        "usage",
    )
    # Set with the server loop (by _actor), which it stops.
    _actor_scope: anyio.CancelScope

    def __init__(
        self,
        *,
        site: Site[SessionHost],
        layer: BaseChannelLayer,
        inbox: str,
        record: McpSession,
        credential: Credential,
        server: Any,
        deadline: datetime | None,
        resume_timeout: float | None,
    ) -> None:
        self._site = site
        self.layer = layer
        self.inbox = inbox
        self.pk: int = record.pk
        self.ref = record.ref
        self.id_hash = record.id_hash
        self.mount_prefix = record.server
        self.transport = record.transport
        self.credential = credential
        self.pin = CredentialPin(credential)
        self.remote_addr = record.remote_addr
        self.deadline = deadline
        buffer = EventBuffer(
            self.ref, gateway_settings.EVENT_BUFFER_SIZE, max_bytes=gateway_settings.EVENT_BUFFER_BYTES
        )
        self.streams = SessionStreams(self, buffer, resume_timeout=resume_timeout)
        self.usage = UsageFlag(self.pk, self.ref, written=record.in_use)
        self._server = server  # the MCP server (a mount's): Any, as the SDK's servers share no base class
        # The MCP server loop is created with the first client message: an idle stream holds no server state.
        self.actor: SessionActor | None = None
        self.last_seen = timezone.now()
        self._actor_task: asyncio.Task[None] | None = None
        # Whether _close_now has begun, and has completed; what close() waits on, made when someone waits.
        self._ending = False
        self._ended = False
        self._closed: asyncio.Future[None] | None = None
        # The reason it closed for, while the close of its record is not written (the write failed).
        self._unwritten: str | None = None
        # The loop it was started on, and the task that reads its inbox: created by the first message (or the
        # close), so an idle session holds no task.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        # Ends that task's loop; an anyio scope keeps cancelling until the loop is out (a library may swallow
        # one plain task cancellation: channels-redis's receive does, under load).
        self._scope: anyio.CancelScope | None = None
        self._close_reason: str | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        # The inbox: messages in arrival order.
        self._mail = Mailbox()
        # As many waiting messages as the layer lets a channel hold (RedisPubSubChannelLayer sets no limit).
        get_capacity = getattr(layer, "get_capacity", None)
        self._capacity: int = get_capacity(inbox) if get_capacity is not None else DEFAULT_INBOX_CAPACITY
        site.adopt(self)

    # Lifecycle

    def start(self) -> None:
        """Serve: its inbox is read from now on (by a task that the first message, or the close, starts)."""
        self._loop = asyncio.get_running_loop()
        if self._mail or self._close_reason is not None:
            self._wake()  # messages came, or it closed, before it started
        self.schedule_deadline()
        self._site.sweep_soon()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop it was started on (or closed on, if it never started)."""
        return self._loop

    def schedule_deadline(self) -> None:
        """Set the timer that closes the session at its deadline, if that falls before the sweep after next.

        Later deadlines are left to a later sweep, which calls this again: a
        session that lives for hours holds no timer until its last minutes.
        """
        if self.deadline is None or self._deadline_timer is not None or self._loop is None:
            return
        left = (self.deadline - timezone.now()).total_seconds()
        if left <= 2 * gateway_settings.PING_INTERVAL:
            self._deadline_timer = self._loop.call_later(max(0.0, left), self.close_soon, CloseReason.EXPIRED)

    def _wake(self) -> None:
        """Have the inbox read, or the close acted on: start the task that does, or interrupt it to close."""
        if self._loop is None:
            return  # not started: start() does this
        if self._task is None:
            self._task = self._loop.create_task(self._run())
        elif self._close_reason is not None and self._scope is not None:
            self._scope.cancel()

    async def close(self, reason: str) -> None:
        """Close the session from outside its task, and wait until it has (trying again a close not yet written)."""
        if self._close_reason is None:
            self._close_reason = reason
        if self._ended:
            await self.retry_close()
            return
        if self._task is None:
            await self._close_now(reason)
        else:
            self._wake()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the session has closed and the close of its record was tried (a failed one is retried)."""
        if self._ended:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    @property
    def accepting(self) -> bool:
        """Open and not closing: a message posted now will be read."""
        return self._close_reason is None and not self._ending

    def close_soon(self, reason: str) -> None:
        """Close the session for ``reason`` without waiting (from a timer, or from inside the session)."""
        if self._close_reason is None:
            self._close_reason = reason
        self._wake()

    def running_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Started on ``loop`` and not closing."""
        return self._loop is loop and self._close_reason is None

    def post(self, message: Mapping[str, Any], *, force: bool = False) -> None:
        """Put ``message`` in the inbox; :class:`ChannelFull` if it is full (unless ``force``)."""
        if not force and len(self._mail) >= self._capacity:
            raise ChannelFull()
        self._mail.put_nowait(message)
        if self._task is None:
            self._wake()

    @property
    def in_use(self) -> bool:
        """Whether a connection carries one of its streams or a request is in progress: not to be evicted."""
        return self.streams.carrying or (self.actor is not None and self.actor.in_flight > 0)

    @property
    def parked(self) -> bool:
        """Its MCP server loop is parked (see :mod:`.parking`): it holds the session's state, and no task."""
        return self.actor is not None and self._actor_task is None and self.actor.era is not None

    def main_stream_changed(self) -> None:
        """Its main stream got a connection or lost it: tell the record at once (streams are long-lived)."""
        self.sync_use()

    def sync_use(self) -> None:
        """Have the record say whether it is in use, if it says otherwise (the sweep calls this for requests).

        Not once closing: the close writes the record.
        """
        if self.accepting:
            self.usage.sync(lambda: self.in_use, self._site.start)

    def pending_activity(self) -> dict[str, Any] | None:
        return self.actor.pending_activity() if self.actor is not None else None

    def activity_saved(self, fields: dict[str, Any]) -> None:
        if self.actor is not None:
            self.actor.activity_saved(fields)

    def all_activity(self) -> dict[str, Any] | None:
        return self.actor.all_activity() if self.actor is not None else None

    async def _run(self) -> None:
        """Read the inbox until the session closes; then stop the MCP server loop and close the record.

        Started by the first message or by the close (:meth:`_wake`): a
        session that never heard from its client has no task. The server loop
        (:meth:`_serve`) is started by the first client message.
        """
        reason: str = CloseReason.SERVER_ENDED
        self._scope = scope = anyio.CancelScope()
        if self._close_reason is not None:
            scope.cancel()  # closed before its first message
        try:
            with scope:
                while True:
                    message = await self._next_message()
                    if message is None:
                        # Parked with nothing to read: no task either, until the next message (see post()).
                        self._task = self._scope = None
                        return
                    await self._dispatch(message)
            # Closed by close() or close_soon().
            reason = self._close_reason or CloseReason.SERVER_SHUTDOWN
        except asyncio.CancelledError:
            # The task itself was cancelled (the server is shutting down): close the session rather than abandon it.
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            reason = self._close_reason or CloseReason.SERVER_SHUTDOWN
        except SessionClosing as closing:
            reason = closing.reason
        except Exception:
            reason = CloseReason.SERVER_ERROR
            logger.exception("MCP session %s failed", self.ref)
        await self._close_now(reason)

    async def _serve(self) -> None:
        """The MCP server loop; the session closes with it, unless it was parked."""
        assert self.actor is not None
        try:
            with self._actor_scope:
                await self.actor.run()
            if self._actor_scope.cancel_called:
                return  # stopped by _close_now: the session is closing already
            if self.actor.parking:
                self.actor.parked()
                self._actor_task = None
                del self._actor_scope  # a spent scope holds two sets; _actor() makes the next loop's
                return
        except Exception:
            logger.exception("MCP session %s failed", self.ref)
            self.close_soon(CloseReason.SERVER_ERROR)
        else:
            self.close_soon(CloseReason.SERVER_ENDED)

    async def _close_now(self, reason: str) -> None:
        """Stop the server loop, end the streams, answer what waits in the inbox, and close the record."""
        if self._ending or not self._site.runs(self):
            return
        self._ending = True
        if self._loop is None:
            self._loop = asyncio.get_running_loop()  # never started: the sweep of this loop retries a failed close
        actor_task = self._actor_task
        if actor_task is not None and not actor_task.done() and actor_task is not asyncio.current_task():
            if reason == CloseReason.EVICTED and self.actor is not None:
                # Evicted while busy after all: not refused (the record is closed and the new session counted),
                # but what is in progress is answered first; nothing new is taken meanwhile (not accepting).
                with anyio.move_on_after(EVICTION_GRACE):
                    await self.actor.wait_settled()
            # An anyio cancel scope, not task.cancel(): it keeps cancelling until the server loop has
            # unwound, even if a handler catches one cancellation to answer its request.
            self._actor_scope.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await actor_task
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        outlets = self.streams.close()
        unread = self._mail.take_all()
        try:
            try:
                for outlet in outlets:
                    await outlet.end(reason)
                for message in unread:  # nothing will read them now: answer whoever waits on one
                    self._site.refuse(self.layer, message, "gone")
            except Exception:
                logger.exception("Could not end the streams of MCP session %s", self.ref)
            await self._write_close(reason)
        finally:
            if self._unwritten is None and self._site.runs(self):
                # Cancelled before the record's close was tried: the sweep writes it, as it does a failed one.
                self._unwritten = reason
                self._site.sweep_soon()
            if self.actor is not None:
                with contextlib.suppress(Exception):
                    await self.actor.end()
                # The actor's sink is the streams' router: without it, the session's objects (its buffered
                # events first) are freed now by reference counting, not at the next full collection.
                self.actor.release()
            self._ended = True
            if self._closed is not None:
                self._closed.set_result(None)

    async def _write_close(self, reason: str) -> None:
        """Close the record, with all the activity, and audit it; then, and only then, unregister the host.

        A write that fails leaves the host registered, closing and taking no
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
            self._site.sweep_soon()
            return
        except BaseException:
            self._unwritten = reason  # cancelled: whether it was written is unknown, and writing it again is harmless
            raise
        self._site.forget(self)
        audit.record(
            AuditKind.SESSION_CLOSED,
            user=self.credential.user,
            remote_addr=self.remote_addr,
            session_ref=self.ref,
            detail=reason,
        )

    @property
    def close_unwritten(self) -> bool:
        """Closed, and the close of its record not written yet (the write failed)."""
        return self._unwritten is not None

    async def retry_close(self) -> None:
        """Write the close that failed when the session closed, if it did (the sweep calls this)."""
        if self._unwritten is None:
            return
        reason, self._unwritten = self._unwritten, None  # taken: a concurrent retry does not write it twice
        await self._write_close(reason)

    def admits(self, fingerprint: str, *, server: str, transport: str) -> bool:
        """Whether a request presenting ``fingerprint`` may reach this session without the database.

        Only if the session is open, on that mount and transport, and its
        credential pin admits the fingerprint (see :class:`CredentialPin`).
        """
        if not self.accepting or self.mount_prefix != server or self.transport != transport:
            return False
        return self.pin.admits(fingerprint)

    # The inbox

    async def _dispatch(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        if kind == "mcp.inbound":
            await self.receive_message(message)
        elif kind == "mcp.attach":
            await self.streams.attach_remote(self.layer, message)
        elif kind == "mcp.detach":
            reason = str(message.get("reason") or CloseReason.CLIENT_DISCONNECT)
            self.streams.detach(str(message.get("reply_to")), reason)
        elif kind == "mcp.close":
            asked = message.get("reason")
            raise SessionClosing(asked if asked in CloseReason.values else CloseReason.REVOKED)
        elif kind == "mcp.layer_lost":
            raise SessionClosing(CloseReason.SERVER_ERROR)
        else:
            logger.warning("Session inbox ignoring a message of type %r", kind)

    async def receive_message(self, message: Mapping[str, Any]) -> None:
        """A client message (a :class:`~mcp_gateway.wire.InboundBody`); with ``reply_to``, a request and its stream."""
        parsed = message.get("parsed")  # validated already by a POST handler in this worker
        if parsed is None:
            try:
                parsed = jsonrpc_message_adapter.validate_json(message["body"], by_name=False)
            except ValidationError:
                return  # validated by the POST handler in its worker; nothing else sends here
        actor = self._actor(parsed)
        reply_to = message.get("reply_to")
        if reply_to and isinstance(parsed, JSONRPCRequest):
            if not await self.streams.open_request(parsed.id, reply_to, self._outlet_for):
                return
        self.last_seen = timezone.now()
        await actor.deliver(parsed, message.get("headers") or {}, message.get("credential"))

    def _outlet_for(self, channel: str) -> Outlet:
        return self._site.outlet_for(self.layer, channel)

    def _actor(self, first: JSONRPCMessage | None) -> SessionActor:
        """The actor, its server loop running: started with the ``first`` message, or resumed if parked."""
        if self.actor is not None:
            if self._actor_task is not None:
                return self.actor
            self.actor.resume()
        else:
            context = GatewayRequestContext(
                session_ref=self.ref,
                transport=self.transport,
                server=self.mount_prefix,
                **credential_fields(self.credential),
            )
            self.actor = SessionActor(
                self._server,
                context=context,
                sink=self.streams.route,
                inbound_size=gateway_settings.INBOUND_QUEUE_SIZE,
                outbound_size=gateway_settings.OUTBOUND_QUEUE_SIZE,
                max_in_flight=gateway_settings.MAX_REQUESTS_IN_FLIGHT,
            )
            if first is not None:
                self.actor.prepare(first, parkable=gateway_settings.PARK_AFTER is not None)
        self._actor_scope = anyio.CancelScope()
        self._actor_task = asyncio.get_running_loop().create_task(self._serve())
        return self.actor
