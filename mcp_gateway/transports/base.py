"""The base of every gateway consumer, and the one place a refusal becomes a response.

A consumer serves one request of one mount. :class:`GatewayConsumer` reads
the request and its other message sources one message at a time, in this
task; any :class:`~mcp_gateway.exceptions.GatewayError` raised while it does
is answered by :func:`refuse` (the guards in front of the consumers use it
too), and the audit trail records it after the answer is sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import ChannelFull, StopConsumer
from channels.layers import get_channel_layer
from django.db import DatabaseError
from mcp_types import JSONRPCMessage, JSONRPCRequest, jsonrpc_message_adapter
from pydantic import ValidationError

from mcp_sessions import audit

from .. import wire
from ..auth import Credential, describes_resources
from ..binding import BoundSession
from ..caller import caller_fields
from ..conf import gateway_settings
from ..exceptions import (
    GatewayError,
    InsufficientScope,
    InvalidMessage,
    ParseError,
    PayloadTooLarge,
    ServiceUnavailable,
)
from ..http import GatewayRequest, Message, Receive, Send, send_error
from ..identity import Caller, identify_caller
from ..resource import metadata_url
from ..sessions.mailbox import SourcedMailbox
from ..worker import worker

if TYPE_CHECKING:
    from ..mounts import Mount
logger = logging.getLogger("mcp_gateway")


class GatewayConsumer(AsyncConsumer):  # type: ignore[misc]  # Channels publishes no types
    """Base consumer: one mount, one request, refusals answered in one place.

    Subclasses return, from :meth:`start`, the extra message sources they
    listen to (a channel-layer inbox, or none), and clean up in :meth:`stop`,
    which runs however the consumer ends: normally, on a refusal, or when the
    server cancels it at shutdown.
    """

    @property
    def user(self) -> Any:
        """The caller, once known (see :attr:`GatewayRequest.user <mcp_gateway.http.GatewayRequest.user>`)."""
        return self.request.user

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
            await refuse(self.send, exc, self.request, self.user, answer=not self.response_started)
        except DatabaseError:
            # The connection is discarded before the next query (database_sync_to_async); this request
            # is answered as retryable rather than with daphne's 500.
            logger.exception("Database unavailable")
            if not self.response_started:
                await send_error(
                    self.send, ServiceUnavailable("Database unavailable, retry later"), self.request.rpc_id
                )
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
                message, came_from = await mailbox.next()
                await self.dispatch(message)
                if came_from is not None:
                    mailbox.listen(came_from)
        finally:
            mailbox.close()

    @classmethod
    def for_scope(cls, scope: Any) -> type[GatewayConsumer]:
        """The consumer class that serves ``scope`` at this one's path: itself, unless the request says otherwise."""
        return cls

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

    async def identify(self, session_id: str | None = None, *, transport: str = "") -> Caller:
        """This request's caller, through the one identity pipeline (:func:`~mcp_gateway.identity.identify_caller`).

        ``session_id`` is the session the request names, if any (the pin may vouch for it).
        """
        caller = await identify_caller(
            self.request, session_id=session_id, server=self.mount.prefix, transport=transport
        )
        return caller

    async def send_to_session(
        self,
        session: BoundSession,
        body: bytes,
        parsed: JSONRPCMessage,
        *,
        credential: Credential,
        reply_to: str | None = None,
    ) -> None:
        """Hand one client message to its session, in whichever worker runs it; a refusal if it is not accepted.

        With ``reply_to``, a request whose own stream goes to the connection at that channel. A full inbox is
        503 (busy); a channel layer that fails (Redis restarting) is 503 too: the message was not accepted.
        """
        inbound: wire.InboundMessage = {
            "type": "mcp.inbound",
            "body": body,
            "headers": self.request.forwardable_headers(),
            "credential": caller_fields(credential),
        }
        if reply_to is not None:
            inbound["reply_to"] = reply_to
        try:
            await worker.send_to_session(self.channel_layer, session.channel_name, session.pk, inbound, parsed=parsed)
        except ChannelFull:
            raise ServiceUnavailable() from None
        except GatewayError:
            raise
        except Exception:
            logger.warning("Channel layer unavailable; message refused with 503", exc_info=True)
            raise ServiceUnavailable("Channel layer unavailable, retry later") from None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self.base_send(message)

    async def http_disconnect(self, message: Message) -> None:
        raise StopConsumer()

    _body: bytearray | None = None

    def take_body(self, message: Message) -> bytes | None:
        """Add an ``http.request`` message's chunk to the body: the whole body with the last chunk, else None.

        Never holds more than ``MAX_BODY_SIZE``: the guards refuse a larger body first, and this holds
        without them too.
        """
        chunk: bytes = message.get("body", b"")
        held = len(self._body) if self._body is not None else 0
        if held + len(chunk) > gateway_settings.MAX_BODY_SIZE:
            raise PayloadTooLarge()
        if self._body is None:
            if not message.get("more_body"):
                self.request.body = chunk  # the whole body in one message: no copy
                return chunk
            self._body = bytearray()
        self._body += chunk
        if message.get("more_body"):
            return None
        body, self._body = bytes(self._body), None
        self.request.body = body  # a refusal from now on answers with the request's id
        return body


def parse_message(body: bytes, request: GatewayRequest | None = None) -> JSONRPCMessage:
    """The one JSON-RPC message ``body`` holds; a refusal if it holds anything else (a batch, bad JSON).

    With ``request``, a later refusal of it answers with the parsed request's id (a request's, not a response's).
    """
    try:
        message = jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ParseError() from None
        raise InvalidMessage() from None
    if request is not None:
        request.rpc_id = message.id if isinstance(message, JSONRPCRequest) else None
    return message


async def refuse(
    send: Send, exc: GatewayError, request: GatewayRequest, user: Any = None, *, answer: bool = True
) -> None:
    """Answer a refusal (unless a response was already started), then have it recorded.

    The one place a refusal becomes a response, for the guards and the
    consumers alike. The record comes after the answer, never on its path
    (see :func:`~mcp_sessions.audit.record_refusal_after_answer`).
    """
    if isinstance(exc, InsufficientScope) and request.mount_prefix and describes_resources():
        exc = exc.naming_metadata(metadata_url(request))
    try:
        if answer:
            await send_error(send, exc, request.rpc_id)
    finally:
        audit.record_refusal_after_answer(exc, request, user)
