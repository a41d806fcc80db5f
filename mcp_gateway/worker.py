"""One :class:`Worker` per process: the sessions it runs, and the few tasks that serve all of them.

A session runs in one worker, the one that opened it, as a
:class:`~mcp_gateway.sessions.host.SessionHost`. The worker holds:

- the registries of what runs here: hosts by record pk and by session ID
  hash, and the connections able to carry streams, by channel;
- its one address on the channel layer (:class:`~mcp_gateway.inbox.WorkerInbox`),
  stored with each record, through which other workers reach its sessions,
  and which hears of every revoked credential (:mod:`~mcp_gateway.credcache`);
- the sweep (:class:`~mcp_gateway.sweep.Sweeper`), the keepalive of its streams
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
from collections.abc import Coroutine, Mapping
from typing import Any

import anyio
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, InMemoryChannelLayer

from mcp_sessions.models import CloseReason

from .credcache import RevocationFeed
from .exceptions import ServiceUnavailable, SessionNotFound
from .inbox import WorkerInbox
from .keepalive import Keepalive
from .lease import WorkerLease
from .listeners import ListenRegistry, Swept
from .modern.lifespan import lifespans
from .senders import Senders
from .sessions.events import EventId
from .sessions.host import SessionHost
from .sessions.streams import Outlet
from .sweep import Sweeper
from .usage import UsageCounter
from .wire import (
    Attach,
    AttachMessage,
    DetachMessage,
    InboundMessage,
    Refusal,
    RemoteOutlet,
    refusal,
    send_quietly,
)

logger = logging.getLogger("mcp_gateway")

# Seconds to wait for a host in another worker to answer an attach.
ATTACH_TIMEOUT = 5.0

# Channel layers that only carry messages within one process: a session's messages all come from this worker.
PROCESS_LOCAL_LAYERS: tuple[type[BaseChannelLayer], ...] = (InMemoryChannelLayer,)


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
            self.start(send_quietly(layer, reply_to, reply))

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


worker = Worker()


async def close_all(reason: str = CloseReason.SERVER_SHUTDOWN) -> None:
    """Close every session this process runs, and exit the mounts' lifespans it entered for 2026-07-28 requests.

    What the launcher calls at shutdown (see :mod:`mcp_gateway.daphne`).
    """
    await worker.close_all(reason)
    await lifespans.close_all()
