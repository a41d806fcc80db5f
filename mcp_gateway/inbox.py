"""A worker's one address on the channel layer (:class:`WorkerInbox`), and how what arrives there is handed on.

Split from :mod:`mcp_gateway.worker`, which holds the registries this reads:
the inbox receives for every session and listen stream of the worker, and for
the worker itself (revoked credentials, changed permissions, listen events,
other workers announcing they send to a session here). It knows its worker
only as the :class:`~mcp_gateway.worker_parts.InboxWorker` it is given, so this
module does not import :mod:`mcp_gateway.worker`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from .credcache import credential_cache
from .permcache import permission_cache
from .tasks import stop_if_cancelled
from .wire import SenderKnownMessage, send_quietly
from .worker_parts import InboxWorker

logger = logging.getLogger("mcp_gateway")


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

    def __init__(self, worker: InboxWorker) -> None:
        self._worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._layer: BaseChannelLayer | None = None
        self._channel: asyncio.Future[str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def address(self, layer: BaseChannelLayer) -> str:
        """The channel this worker receives on, listening from the first call (and again if the loop stopped)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._layer is not layer or self._channel is None or self._channel.cancelled():
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
            # Joined before the address is known: a listen stream acknowledged on this worker hears every
            # event published after its acknowledgement.
            await self._worker.listens.join(layer, channel)
        except Exception as exc:
            named.set_exception(exc)
            return
        else:
            named.set_result(channel)
        finally:
            if not named.done():
                named.cancel()  # the task was cancelled meanwhile: nobody is left waiting on the address
        await self._receive(layer, channel)

    async def _receive(self, layer: BaseChannelLayer, channel: str) -> None:
        while True:
            stop_if_cancelled()  # channels-redis's receive may swallow the cancellation and return (or fail)
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
        self._worker.start(send_quietly(layer, message["reply_to"], answer))
