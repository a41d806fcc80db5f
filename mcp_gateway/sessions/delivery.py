"""What reaches a session host (:class:`Delivery`): its inbox's messages, handed to its MCP server loop.

Split from :mod:`.host`, as a part of :class:`~.host.SessionHost`: a message
is posted to the inbox (from this worker or through its channel-layer
address), read in order by the host's one task, and dispatched: a client
message goes to the server loop, which it starts (or resumes, if parked), a
stream's attach or detach to the session's streams, a close ends the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from django.utils import timezone
from mcp_types import JSONRPCMessage, JSONRPCRequest, jsonrpc_message_adapter
from pydantic import ValidationError

from mcp_sessions.models import CloseReason

from ..auth import Credential
from ..caller import credential_fields
from ..conf import gateway_settings
from ..context import GatewayRequestContext
from .actor import SessionActor
from .mailbox import Mailbox
from .parking import Parking
from .site import SessionClosing, Site
from .streams import Outlet, SessionStreams

logger = logging.getLogger("mcp_gateway")


class Delivery(Parking):
    """What a :class:`~.host.SessionHost` does with a message: queue it, read it, serve it.

    The host's parts are a chain of bases (:class:`~.parking.Parking`, this,
    :class:`~.closing.Closing`), not mixins side by side: each declares the
    slots it writes, and Python lets only one base of a class bring slots of its own.
    """

    __slots__ = ("_actor_scope", "_actor_task", "_capacity", "_mail", "actor", "last_seen")
    # Set with the server loop (by _actor), which it stops.
    _actor_scope: anyio.CancelScope
    _actor_task: asyncio.Task[None] | None
    _capacity: int
    _mail: Mailbox
    actor: SessionActor | None
    last_seen: datetime
    # The host's, see SessionHost.
    _server: Any
    _site: Site[Any]
    _task: asyncio.Task[None] | None
    credential: Credential
    layer: BaseChannelLayer
    mount_prefix: str
    ref: str
    streams: SessionStreams
    transport: str

    def _wake(self) -> None:
        raise NotImplementedError

    def close_soon(self, reason: str) -> None:
        raise NotImplementedError

    def post(self, message: Mapping[str, Any], *, force: bool = False) -> None:
        """Put ``message`` in the inbox; :class:`ChannelFull` if it is full (unless ``force``)."""
        if not force and len(self._mail) >= self._capacity:
            raise ChannelFull()
        self._mail.put_nowait(message)
        if self._task is None:
            self._wake()

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
