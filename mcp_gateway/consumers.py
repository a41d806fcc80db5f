"""Channels consumers for the HTTP+SSE transport.

- :class:`SSEConsumer` (``GET <prefix>sse``) authenticates the caller, records
  a session bound to them, and runs that session's MCP server in this worker
  (:class:`~mcp_gateway.actor.SessionActor`). Its channel-layer address is
  stored with the record: that is how client messages reach it.
- :class:`MessagesConsumer` (``POST <prefix>messages/``) is a stateless
  forwarder: authenticate, check CSRF, bind the session ID to the caller,
  validate the message, send it to the session's channel, answer 202. It keeps
  no per-process state, so it may run on any worker.

Handlers never block: the stream itself runs in its own task, so
``http.disconnect`` and channel-layer messages are handled as they come.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull, StopConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.db import DatabaseError, IntegrityError
from django.utils import timezone
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter
from pydantic import ValidationError

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import AuditKind, CloseReason, McpSession, SessionLimitReached, Transport

from . import audit, sse
from .actor import SessionActor
from .auth import authenticate
from .binding import bind, session_id_from_query
from .conf import gateway_settings
from .context import GatewayRequestContext
from .csrf import check_csrf
from .exceptions import GatewayError, InvalidMessage, ParseError, ServiceUnavailable, TooManySessions
from .flow import FlowControl, flow_control_for
from .http import SECURITY_HEADERS, GatewayRequest, Message, Receive, Send, json_bytes, send_error, send_response
from .lease import lease
from .ratelimit import check_rate
from .tickets import issue_ticket, stream_credential

if TYPE_CHECKING:
    from .routing import Mount

logger = logging.getLogger("mcp_gateway")

E = TypeVar("E", bound=BaseException)


class SessionEnded(Exception):
    """Raised inside a stream's task to end the session for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GatewayConsumer(AsyncConsumer):
    """Base consumer: one mount, one request, refusals answered in one place.

    Subclasses return, from :meth:`start`, the extra message sources they
    listen to (a channel-layer inbox, or none), and clean up in :meth:`stop`,
    which runs however the consumer ends: normally, on a refusal, or when the
    server cancels it at shutdown.
    """

    user: Any = None

    def __init__(self, mount: Mount) -> None:
        self.mount = mount
        self.response_started = False
        self._internal: asyncio.Queue[Message] = asyncio.Queue()

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.base_send = send
        self.request = GatewayRequest.from_scope(scope)
        self.channel_layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
        try:
            sources = [receive, self._internal.get, *await self.start()]
            await await_many_dispatch(sources, self.dispatch)
        except StopConsumer:
            pass
        except GatewayError as exc:
            audit.record_refusal(exc, self.request, self.user)
            if not self.response_started:
                await send_error(self.send, exc)
        except DatabaseError:
            # The connection is discarded before the next query (database_sync_to_async); this request
            # is answered as retryable rather than with daphne's 500.
            logger.exception("Database unavailable")
            if not self.response_started:
                await send_error(self.send, ServiceUnavailable("Database unavailable, retry later"))
        finally:
            await self.stop()

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

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self.base_send(message)

    async def http_disconnect(self, message: Message) -> None:
        raise StopConsumer()


def parse_message(body: bytes) -> None:
    """Refuse a body that is not one JSON-RPC message (or batch-free envelope)."""
    try:
        jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ParseError() from None
        raise InvalidMessage() from None


class MessagesConsumer(GatewayConsumer):
    """``POST <prefix>messages/?session_id=<id>``: forward one message to its session."""

    async def start(self) -> list[Callable[[], Awaitable[Message]]]:
        self.body = bytearray()
        return []

    async def http_request(self, message: Message) -> None:
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        await self.forward(bytes(self.body))
        raise StopConsumer()

    async def forward(self, body: bytes) -> None:
        credential = await authenticate(self.request)
        self.user = credential.user
        await check_rate(credential.user)
        check_csrf(self.request, credential)
        session_id = session_id_from_query(self.request)
        parse_message(body)
        session = await bind(self.request, credential, session_id, server=self.mount.prefix, transport=Transport.SSE)
        event = {"type": "mcp.inbound", "body": body, "headers": self.request.forwardable_headers()}
        try:
            await self.channel_layer.send(session.channel_name, event)
        except ChannelFull:
            raise ServiceUnavailable() from None
        except Exception:
            # The channel layer is down (e.g. Redis restarting): the message was not accepted, say so (503).
            logger.warning("Channel layer unavailable; message refused with 503", exc_info=True)
            raise ServiceUnavailable("Channel layer unavailable, retry later") from None
        await send_response(self.send, 202, b"", content_type=None)


class TicketsConsumer(GatewayConsumer):
    """``POST <prefix>tickets``: issue a stream ticket to an authenticated caller (201)."""

    async def http_request(self, message: Message) -> None:
        if message.get("more_body"):
            return  # the body carries nothing; the guards bound its size
        credential = await authenticate(self.request)
        self.user = credential.user
        await check_rate(credential.user)
        check_csrf(self.request, credential)
        ticket = await issue_ticket(self.request, credential)
        body = {"ticket": ticket, "expires_in": gateway_settings.TICKET_LIFETIME}
        await send_response(self.send, 201, json_bytes(body))
        raise StopConsumer()


class SSEConsumer(GatewayConsumer):
    """``GET <prefix>sse``: open a session bound to the caller and stream it."""

    record: McpSession | None = None
    actor: SessionActor
    flow: FlowControl
    _task: asyncio.Task[None] | None = None
    _closed = False

    async def start(self) -> list[Callable[[], Awaitable[Message]]]:
        credential = await stream_credential(self.request)
        self.user = credential.user
        self.channel_name = await self.channel_layer.new_channel()
        session_id = new_session_id()
        self.record = await self._open_record(credential, session_id)
        audit.record(
            AuditKind.SESSION_OPENED,
            user_id=credential.user.pk,
            remote_addr=self.request.client_ip,
            session_ref=self.record.ref,
            detail=f"{credential.scheme} {self.mount.prefix}",
        )
        self.actor = SessionActor(
            self.mount.server,
            context=GatewayRequestContext(
                user=credential.user, session_ref=self.record.ref, transport=Transport.SSE, server=self.mount.prefix
            ),
            sink=self._send_message,
            inbound_size=gateway_settings.INBOUND_QUEUE_SIZE,
            outbound_size=gateway_settings.OUTBOUND_QUEUE_SIZE,
            max_in_flight=gateway_settings.MAX_REQUESTS_IN_FLIGHT,
        )
        self.flow = flow_control_for(self.base_send)
        # Headers go out with the first body chunk, so the endpoint event is sent at once.
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *SECURITY_HEADERS,
                    (b"content-type", sse.CONTENT_TYPE),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        await self._write(sse.event("endpoint", self.mount.messages_url(self.scope, session_id)))
        self._task = asyncio.create_task(self._run(self._deadline(credential)))
        return [functools.partial(self.channel_layer.receive, self.channel_name)]

    async def _open_record(self, credential: Any, session_id: str) -> McpSession:
        """The session's record, bound to the caller and to this worker; 429 over the user's limit."""
        fields = {
            "limit": gateway_settings.MAX_SESSIONS_PER_USER,
            "lease": gateway_settings.LEASE_TIMEOUT,
            "id_hash": hash_session_id(session_id),
            "server": self.mount.prefix,
            "transport": Transport.SSE,
            "channel_name": self.channel_name,
            "worker_id": await lease.ensure(),
            "remote_addr": self.request.client_ip,
            "user_agent": self.request.user_agent[:400],
            "origin": (self.request.origin or "")[:400],
            "token_id": credential.token_id,
            "login_session_hash": credential.login_session_hash,
        }
        open_for = database_sync_to_async(McpSession.objects.open_for)
        try:
            try:
                return await open_for(credential.user, **fields)
            except IntegrityError:
                # This worker's row is gone (the database was restored or flushed): register again, once.
                await lease.register()
                return await open_for(credential.user, **fields)
        except SessionLimitReached:
            raise TooManySessions() from None

    async def stop(self) -> None:
        if self.record is not None:
            await self._finish(CloseReason.SERVER_SHUTDOWN)

    # Message handlers

    async def http_request(self, message: Message) -> None:
        """A GET has no body to read."""

    async def http_disconnect(self, message: Message) -> None:
        await self._finish(CloseReason.CLIENT_DISCONNECT)
        raise StopConsumer()

    async def session_ended(self, message: Message) -> None:
        await self._finish(message["reason"])
        raise StopConsumer()

    async def mcp_inbound(self, message: Message) -> None:
        await self.actor.deliver(message["body"], message.get("headers", {}))

    async def mcp_close(self, message: Message) -> None:
        """Close on request from anywhere on the channel layer (revocation)."""
        reason = message.get("reason", CloseReason.REVOKED)
        await self._finish(reason if reason in CloseReason.values else CloseReason.REVOKED)
        raise StopConsumer()

    # The stream

    def _deadline(self, credential: Any) -> datetime | None:
        """When the session must end: its maximum lifetime, or its token's expiry if sooner."""
        lifetime = gateway_settings.MAX_LIFETIME
        candidates = [credential.expires_at]
        if lifetime is not None:
            candidates.append(timezone.now() + timedelta(seconds=lifetime))
        return min((c for c in candidates if c is not None), default=None)

    async def _run(self, deadline: datetime | None) -> None:
        reason = CloseReason.SERVER_ENDED
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keepalive)
                if deadline is not None:
                    tg.start_soon(self._expire, deadline)
                await self.actor.run()
                tg.cancel_scope.cancel()
        except Exception as exc:
            ended = _first(exc, SessionEnded)
            if ended is not None:
                reason = ended.reason
            else:
                reason = CloseReason.SERVER_ERROR
                logger.exception("MCP session %s failed", self.record.ref if self.record else "?")
        self._internal.put_nowait({"type": "session.ended", "reason": reason})

    async def _keepalive(self) -> None:
        """Ping, save activity, and end the session if it went idle or was closed elsewhere."""
        idle_timeout = gateway_settings.IDLE_TIMEOUT
        while True:
            await anyio.sleep(gateway_settings.PING_INTERVAL)
            await self._write(sse.comment("ping"))
            if not await self._save_activity():
                raise SessionEnded(CloseReason.REVOKED)  # closed elsewhere; the record keeps its own reason
            if idle_timeout is not None and (timezone.now() - self.actor.last_seen).total_seconds() > idle_timeout:
                raise SessionEnded(CloseReason.EXPIRED)

    async def _expire(self, deadline: datetime) -> None:
        await anyio.sleep(max(0.0, (deadline - timezone.now()).total_seconds()))
        raise SessionEnded(CloseReason.EXPIRED)

    async def _send_message(self, session_message: SessionMessage) -> None:
        data = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
        await self._write(sse.event("message", data))

    async def _write(self, chunk: bytes) -> None:
        try:
            with anyio.fail_after(gateway_settings.STALL_TIMEOUT):
                await self.flow.writable()
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except TimeoutError:
            raise SessionEnded(CloseReason.STALLED) from None

    async def _save_activity(self) -> bool:
        """Save new activity to the record; whether the record is still open."""
        assert self.record is not None
        return await database_sync_to_async(McpSession.objects.record_activity)(
            self.record.pk, self.actor.pending_activity()
        )

    async def _finish(self, reason: str) -> None:
        """End the session once: stop its task, close its record, end the response."""
        if self._closed or self.record is None:
            return
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.flow.release()
        # Closed elsewhere already (revoked), the record keeps that time and reason.
        reason = await database_sync_to_async(McpSession.objects.close)(
            self.record.pk, reason, self.actor.pending_activity()
        )
        audit.record(
            AuditKind.SESSION_CLOSED,
            user_id=self.record.user_id,
            remote_addr=self.request.client_ip,
            session_ref=self.record.ref,
            detail=reason,
        )
        if reason != CloseReason.CLIENT_DISCONNECT:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})


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
