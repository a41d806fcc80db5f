"""A live session in the worker that opened it: its state, and the task that reads its inbox.

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

The host is one class made of parts, each a module of its own: this one holds
its state, starts it and runs its inbox task; :mod:`.delivery` queues and
dispatches its messages and starts (or resumes) its server loop;
:mod:`.closing` ends it and writes its record's close; :mod:`.parking` parks
and resumes its idle server loop.

The host belongs to its worker (:class:`~mcp_gateway.worker.Worker`), which
registers it, sweeps it, and reaches it; the host knows the worker only as a
:class:`Site`, so this package never imports the worker.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import anyio
from channels.layers import BaseChannelLayer
from django.utils import timezone

from mcp_sessions.models import CloseReason, McpSession

from ..auth import Credential
from ..conf import gateway_settings
from .actor import SessionActor
from .closing import Closing
from .events import EventBuffer
from .mailbox import Mailbox
from .pin import CredentialPin
from .site import DEFAULT_INBOX_CAPACITY, SessionClosing, Site
from .streams import SessionStreams
from .usage import UsageFlag

logger = logging.getLogger("mcp_gateway")


class SessionHost(Closing):
    """One live session in this worker; see the module docstring."""

    # Slots, not a __dict__: every open session holds one of these, idle or not.
    __slots__ = (
        "__weakref__",
        "_deadline_timer",
        "_scope",
        "_server",
        "_site",
        "_task",
        "credential",
        "deadline",
        "id_hash",
        "inbox",
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

    def admits(self, fingerprint: str, *, server: str, transport: str) -> bool:
        """Whether a request presenting ``fingerprint`` may reach this session without the database.

        Only if the session is open, on that mount and transport, and its
        credential pin admits the fingerprint (see :class:`CredentialPin`).
        """
        if not self.accepting or self.mount_prefix != server or self.transport != transport:
            return False
        return self.pin.admits(fingerprint)
