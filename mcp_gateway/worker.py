"""One :class:`Worker` per process: the sessions it runs, and the few tasks that serve all of them.

A session runs in one worker, the one that opened it, as a
:class:`~mcp_gateway.sessions.host.SessionHost`. The worker holds:

- the registries of what runs here: hosts by record pk and by session ID
  hash, and the connections able to carry streams, by channel;
- its one address on the channel layer (:class:`WorkerInbox`), stored with
  each record, through which other workers reach its sessions, and which
  hears of every revoked credential (:mod:`~mcp_gateway.credcache`);
- the sweep (:class:`Sweeper`), the keepalive of its streams
  (:class:`~mcp_gateway.keepalive.Keepalive`), its lease (:class:`~mcp_gateway.lease.WorkerLease`)
  and its client usage counts (:class:`~mcp_gateway.usage.UsageCounter`);
  each is one task for the whole worker, started once on the running loop by
  :meth:`Worker.start`, in a context of its own: they serve every session, so
  must not carry the request's that happened to start them.

Connections reach a session through the worker (:meth:`Worker.send_to_session`,
:meth:`Worker.attach`, :meth:`Worker.detach`): a host here is called
directly, one elsewhere is sent a :mod:`~mcp_gateway.wire` message. Sessions
are opened by :func:`mcp_gateway.opening.open_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

import anyio
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from django.utils import timezone

from mcp_sessions.models import CloseReason, McpSession

from .conf import gateway_settings
from .credcache import RevocationFeed, credential_cache
from .exceptions import ServiceUnavailable, SessionNotFound
from .keepalive import Keepalive
from .lease import WorkerLease
from .listeners import ListenRegistry, Swept
from .modern.lifespan import lifespans
from .permcache import permission_cache
from .senders import Senders
from .sessions.events import EventId
from .sessions.host import SessionHost
from .sessions.streams import Outlet
from .usage import UsageCounter
from .wire import (
    Attach,
    AttachMessage,
    DetachMessage,
    InboundMessage,
    Refusal,
    RemoteOutlet,
    SenderKnownMessage,
    refusal,
)

logger = logging.getLogger("mcp_gateway")

# Seconds to wait for a host in another worker to answer an attach.
ATTACH_TIMEOUT = 5.0

# Channel layers that only carry messages within one process: a session's messages all come from this worker.
PROCESS_LOCAL_LAYERS: tuple[type[BaseChannelLayer], ...] = (InMemoryChannelLayer,)

# Sessions the sweep visits per loop turn: 10,000 of them in one turn held up every request for tens of ms.
SWEEP_SLICE = 256


class Worker:
    """This process, as the sessions and connections in it see it; see the module docstring."""

    def __init__(self) -> None:
        self._hosts: dict[int, SessionHost] = {}
        self._hosts_by_id_hash: dict[str, SessionHost] = {}
        self._outlets: dict[str, Outlet] = {}
        self._background: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references
        # The listen streams (2026-07-28) it holds: revoked, swept, leased and shut down as its session hosts are.
        self.listens = ListenRegistry()
        # Which sessions here hear from other workers, and which elsewhere this one told it sends to.
        self.senders = Senders()
        self.inbox = WorkerInbox(self)
        self.sweeper = Sweeper(self)
        self.keepalive = Keepalive(self.start)
        # Its heartbeat closes the records open on this worker that no host here holds.
        self.lease = WorkerLease(start=self.start, live_sessions=self.live_records)
        # Joins the inbox to the group that hears of revoked credentials, before this worker caches one.
        self.revocations = RevocationFeed(self.inbox.address)
        # Who calls with which client (protocol 2026-07-28 has no session records to say it), saved in batches.
        self.usage = UsageCounter(start=self.start)

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task of this worker on the running loop, in a fresh context."""
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # The registries (a host's Site, and the connections' view)

    def adopt(self, host: SessionHost) -> None:
        self._hosts[host.pk] = host
        self._hosts_by_id_hash[host.id_hash] = host

    def runs(self, host: SessionHost) -> bool:
        return self._hosts.get(host.pk) is host

    def forget(self, host: SessionHost) -> None:
        if self._hosts.get(host.pk) is host:
            del self._hosts[host.pk]
        if self._hosts_by_id_hash.get(host.id_hash) is host:
            del self._hosts_by_id_hash[host.id_hash]
        self.senders.forget(host.pk)

    def has_sessions(self) -> bool:
        return bool(self._hosts) or bool(self.listens)

    def live_records(self) -> list[int]:
        """The pks of the records this worker holds live: its sessions' and its listen streams'."""
        return [*self._hosts, *self.listens.pks()]

    def swept(self) -> list[Swept]:
        """What the sweep looks after: the session hosts and the listen streams."""
        return [*self._hosts.values(), *self.listens]

    def local_host(self, pk: int | None) -> SessionHost | None:
        """The host of session ``pk`` if this worker runs it."""
        return self._hosts.get(pk) if pk is not None else None

    def local_host_by_id_hash(self, id_hash: str) -> SessionHost | None:
        return self._hosts_by_id_hash.get(id_hash)

    def local_hosts(self) -> list[SessionHost]:
        return list(self._hosts.values())

    def hosts_on(self, loop: asyncio.AbstractEventLoop) -> list[SessionHost]:
        """The hosts started on ``loop`` and not closing."""
        return [host for host in self.local_hosts() if host.running_on(loop)]

    def register_outlet(self, channel: str, outlet: Outlet) -> None:
        """The connection at ``channel``, in this worker, can carry streams: hosts here call it directly."""
        self._outlets[channel] = outlet

    def unregister_outlet(self, channel: str) -> None:
        self._outlets.pop(channel, None)

    def outlet_for(self, layer: BaseChannelLayer, channel: str) -> Outlet:
        return self._outlets.get(channel) or RemoteOutlet(layer, channel)

    def sweep_soon(self) -> None:
        self.sweeper.ensure()

    def refuse(self, layer: BaseChannelLayer, message: Mapping[str, Any], why: Refusal) -> None:
        """Answer a message its session cannot take (see :func:`~mcp_gateway.wire.refusal`), in the background."""
        reply = refusal(message, why)
        if reply is None:
            return
        reply_to: str = message["reply_to"]
        outlet = self._outlets.get(reply_to)
        if outlet is not None and reply["type"] == "mcp.end":
            self.start(outlet.end(reply["reason"]))
        else:
            self.start(_send_quietly(layer, reply_to, reply))

    # Reaching a session, here or in another worker

    async def send_to_session(
        self, layer: BaseChannelLayer, channel: str, pk: int, message: InboundMessage, *, parsed: Any = None
    ) -> None:
        """Deliver ``message`` to the session ``pk`` whose worker's address is ``channel``.

        A client that waited for its 202 before sending the next message is
        served in that order, from whichever worker. A session here that no
        other worker sends to takes the message directly, already ``parsed`` if
        given (a JSONRPCMessage), so it is not validated twice; so does any with
        a layer that lives in this process only (Channels' in-memory layer),
        where every sender is here. Otherwise the message goes through the
        channel layer, which keeps the order of what travels through it; a
        session elsewhere is first told that this worker sends to it
        (:mod:`~mcp_gateway.senders` says why that keeps the order).
        :class:`ChannelFull` when the session's inbox is full, as the layer says
        for a full channel; :class:`SessionNotFound` when the session is closing.
        """
        host = self._hosts.get(pk)
        local_layer = isinstance(layer, PROCESS_LOCAL_LAYERS)
        if local_layer or (host is not None and self.senders.direct(pk)):
            if host is None or not host.accepting:
                raise SessionNotFound()
            host.post(message if parsed is None else {**message, "parsed": parsed})
            return
        if host is None:
            await self.senders.announce(layer, channel, pk)
        await layer.send(channel, {**message, "session": pk})

    async def attach(
        self,
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
        host = self._hosts.get(pk)
        if host is not None:
            outlet = self.outlet_for(layer, channel)
            return await host.streams.attach(stream, channel, outlet, after=after, replace=replace)
        request: AttachMessage = {
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

    async def detach(self, layer: BaseChannelLayer, host_channel: str, pk: int, channel: str, reason: str) -> None:
        """The connection at ``channel`` no longer carries any of session ``pk``'s streams."""
        host = self._hosts.get(pk)
        if host is not None:
            host.streams.detach(channel, reason)
            return
        message: DetachMessage = {"type": "mcp.detach", "session": pk, "reply_to": channel, "reason": reason}
        with contextlib.suppress(Exception):
            await layer.send(host_channel, message)

    async def close_all(self, reason: str = CloseReason.SERVER_SHUTDOWN) -> None:
        """Close every session this process runs and save its usage counts (the server is shutting down)."""
        closing = [*(host.close(reason) for host in self.local_hosts()), *(s.close(reason) for s in self.listens)]
        await asyncio.gather(*closing, return_exceptions=True)
        await self.revocations.leave()
        await self.listens.leave()
        try:
            await self.usage.flush()
        except Exception:
            logger.exception("Could not save this worker's client usage counts at shutdown")


async def _send_quietly(layer: BaseChannelLayer, channel: str, message: Mapping[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await layer.send(channel, message)


class WorkerInbox:
    """This worker's one address on the channel layer, shared by all the sessions it runs.

    Whatever another process has for a session here (a client message whose
    POST it took, a stream it wants to carry, a revocation) is sent to this
    address, tagged with the session's record pk, and handed to the session's
    host. One receiving task per worker rather than one per session: an idle
    session holds no channel-layer queue and no task reading it. Senders in
    this worker skip the channel layer (:meth:`Worker.send_to_session`).

    A lost channel layer closes every session of the worker, as a lost inbox
    closed its session before: messages queued there may be gone.
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._layer: BaseChannelLayer | None = None
        self._channel: asyncio.Future[str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def address(self, layer: BaseChannelLayer) -> str:
        """The channel this worker receives on, listening from the first call (and again if the loop stopped)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._layer is not layer or self._channel is None:
            if self._task is not None and self._loop is loop:
                # The settings name another layer now: the old address is not this worker's any more.
                self._task.cancel()
            self._loop, self._layer = loop, layer
            self._channel = loop.create_future()
            self._task = self._worker.start(self._name_and_receive(layer, self._channel))
        try:
            channel = await asyncio.shield(self._channel)
        except Exception:
            self._loop = None  # could not get an address (the layer is down): the next session tries again
            raise
        if self._task is not None and self._task.done():
            logger.error("This worker's inbox had stopped; listening again on %s", channel)
            self._task = self._worker.start(self._receive(layer, channel))
        return channel

    async def _name_and_receive(self, layer: BaseChannelLayer, named: asyncio.Future[str]) -> None:
        try:
            channel = await layer.new_channel()
        except Exception as exc:
            named.set_exception(exc)
            return
        named.set_result(channel)
        await self._worker.listens.join(layer, channel)
        await self._receive(layer, channel)

    async def _receive(self, layer: BaseChannelLayer, channel: str) -> None:
        while True:
            try:
                message: dict[str, Any] = await layer.receive(channel)
            except TimeoutError:
                continue
            except Exception:
                logger.warning("Channel layer receive failed: this worker's sessions close", exc_info=True)
                self._worker.revocations.lost()  # and so may revocations sent meanwhile
                for host in self._worker.hosts_on(asyncio.get_running_loop()):
                    host.post({"type": "mcp.layer_lost"}, force=True)
                for stream in self._worker.listens:
                    stream.post({"type": "mcp.layer_lost"})
                await asyncio.sleep(1.0)
                continue
            try:
                self.dispatch(layer, message)
            except Exception:
                logger.exception("Could not dispatch a message of type %r", message.get("type"))

    def dispatch(self, layer: BaseChannelLayer, message: dict[str, Any]) -> None:
        """Hand ``message`` to its session's host (or listen stream); answer for one that is not here (any more).

        Revoked credentials and changed permissions concern the whole worker: its caches forget them. A listen
        event is for no session: it goes to this worker's listeners.
        """
        if message.get("type") == "mcp.forget_credentials":
            credential_cache.forget_received(message)
            self._worker.keepalive.credentials_revoked(message)
            return
        if message.get("type") == "mcp.listen_event":
            self._worker.listens.fanout.receive(message)
            return
        if message.get("type") == "mcp.forget_permissions":
            permission_cache.forget_received(message)
            return
        if message.get("type") == "mcp.sender":
            self._sender_heard(layer, message)
            return
        pks = message.pop("sessions", None)
        if not isinstance(pks, list):
            pks = [message.pop("session", None)]
        for pk in pks:
            host = self._worker.local_host(pk) if isinstance(pk, int) else None
            listen = self._worker.listens.get(pk) if host is None else None
            if listen is not None and listen.post(message):
                continue
            if host is None or not host.accepting:
                self._worker.refuse(layer, message, "gone")
                continue
            try:
                host.post(message)
            except ChannelFull:
                # The session has not read its last ``capacity`` messages: it is stuck. Its sender was told the
                # message was accepted, so say what happened rather than queue without bound.
                logger.warning("MCP session %s: inbox full, a %s message dropped", host.ref, message.get("type"))
                self._worker.refuse(layer, message, "full")

    def _sender_heard(self, layer: BaseChannelLayer, message: dict[str, Any]) -> None:
        """Another worker will send a session here messages: mark it shared, then say so (see :mod:`.senders`)."""
        host = self._worker.local_host(message.get("session"))
        if host is not None and host.accepting:
            self._worker.senders.heard(host.pk)
        answer: SenderKnownMessage = {
            "type": "mcp.sender_known",
            "status": "ok" if host is not None and host.accepting else "gone",
        }
        self._worker.start(_send_quietly(layer, message["reply_to"], answer))


class Sweeper:
    """Housekeeping for all of a worker's sessions, in one task and one database hop per ``PING_INTERVAL``.

    Saves the activity counts of each session and whether it is in use
    (:mod:`~mcp_gateway.sessions.usage`), closes those whose record was
    closed elsewhere (a revocation whose message to the session was lost) and
    those idle longer than ``IDLE_TIMEOUT``. One query per interval for the
    whole worker, not one per session, and no task per session. A session
    whose activity could not be written is left for the next sweep without
    holding up the others; a session whose close could not be written when
    it closed is closed again (its host stays registered until it is).
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._task: asyncio.Task[None] | None = None

    def ensure(self) -> None:
        """Have the sweep running on this loop (it stops when the worker has no session left)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = self._worker.start(self._run())

    async def _run(self) -> None:
        while self._worker.has_sessions():
            await asyncio.sleep(gateway_settings.PING_INTERVAL)
            try:
                await self.sweep()
            except Exception:
                logger.exception("Could not save the activity of this worker's sessions; retrying")

    async def sweep(self) -> None:
        loop = asyncio.get_running_loop()
        for host in [host for host in self._worker.swept() if host.close_unwritten and host.loop is loop]:
            await host.retry_close()
        if self._worker.listens:
            await self._worker.listens.refresh()
        hosts = [host for host in self._worker.swept() if host.running_on(loop)]
        if not hosts:
            return
        changes: dict[int, dict[str, Any] | None] = {}
        async for host in _a_slice_per_turn(hosts):
            host.schedule_deadline()
            host.sync_use()  # a request in progress across a sweep counts as use; a short one costs nothing
            changes[host.pk] = host.pending_activity()
        still_open, written = await database_sync_to_async(McpSession.objects.record_activity)(changes)
        idle_timeout = gateway_settings.IDLE_TIMEOUT
        now = timezone.now()
        async for host in _a_slice_per_turn(hosts):
            if host.pk in written and (fields := changes[host.pk]):
                host.activity_saved(fields)
            if not host.running_on(loop):
                continue  # it closed meanwhile
            if host.pk not in still_open:
                host.close_soon(CloseReason.REVOKED)  # closed elsewhere; the record keeps its own reason
            elif idle_timeout is not None and (now - host.last_seen).total_seconds() > idle_timeout:
                host.close_soon(CloseReason.EXPIRED)


async def _a_slice_per_turn(hosts: list[Swept]) -> AsyncIterator[Swept]:
    """``hosts`` one by one, letting the loop run whatever waits after each :data:`SWEEP_SLICE` of them."""
    for n, host in enumerate(hosts):
        if n and not n % SWEEP_SLICE:
            await asyncio.sleep(0)
        yield host


worker = Worker()


async def close_all(reason: str = CloseReason.SERVER_SHUTDOWN) -> None:
    """Close every session this process runs, and exit the mounts' lifespans it entered for 2026-07-28 requests.

    What the launcher calls at shutdown (see :mod:`mcp_gateway.daphne`).
    """
    await worker.close_all(reason)
    await lifespans.close_all()
