"""The Streamable HTTP transport (MCP 2025-11-25) at ``<prefix>`` itself.

One endpoint, three methods, the same guarantees as HTTP+SSE (the guards in
front, then the same authentication, CSRF rule, rate limit, binding, session
runtime, limits, audit and admin):

- ``POST`` carries one JSON-RPC message. ``initialize`` without a session
  opens one: a new :class:`~mcp_gateway.sessions.host.SessionHost` in this worker,
  bound to the caller, whose secret ID goes back in ``Mcp-Session-Id``. Every
  other POST names its session in that header and is bound to the caller
  (missing: 400; unknown, ended or someone else's: 404). A request is answered
  on its own stream: as ``application/json`` when the answer is all there is,
  else as ``text/event-stream`` carrying what relates to the request and then
  the answer. Notifications and responses get 202.
- ``GET`` opens the session's stream for server-initiated messages (a second
  one at once: 409), or, with ``Last-Event-ID``, resumes any of the session's
  streams where the client lost it.
- ``DELETE`` ends the session; later requests naming it get 404.

A request naming a protocol version outside the handshake era in
``MCP-Protocol-Version`` (2026-07-28: no ``initialize``, no session) is served
per request by :mod:`~mcp_gateway.transports.modern`. Other requests without a
session but ``initialize`` are refused with 400 and a JSON-RPC error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import HEADER_MISMATCH, JSONRPCMessage, JSONRPCRequest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from mcp_sessions.models import CloseReason, McpSession, Transport
from mcp_sessions.revocation import revoke

from .. import wire
from ..auth import Credential
from ..binding import BoundSession, bind, last_event_id, session_id_from_header
from ..exceptions import (
    BatchNotSupported,
    BodyNotAllowed,
    GatewayError,
    InitializeRequired,
    InvalidEventId,
    MissingSessionId,
    NotAcceptable,
    ProtocolRejection,
    UnsupportedProtocolVersion,
)
from ..http import Message, send_response
from ..modern.sdk import has_modern_envelope
from ..scopes import step_up
from ..sessions.events import MAIN_STREAM
from ..worker import worker
from .base import GatewayConsumer, parse_message
from .modern import PerRequestConsumer, is_per_request
from .stream import StreamConsumer

SESSION_HEADER = MCP_SESSION_ID_HEADER.encode()


class StreamableHTTPConsumer(StreamConsumer):
    """``POST``, ``GET`` and ``DELETE <prefix>``; see the module docstring."""

    session_id_header: str | None = None
    _pinned: BoundSession | None = None  # the session, when bound without the database

    def __init__(self, mount: Any) -> None:
        super().__init__(mount)
        self._has_inbox = asyncio.Event()

    async def start(self) -> list[Callable[[], Awaitable[Message]]]:
        return [self._own_messages]

    async def _own_messages(self) -> Message:
        """Messages on this connection's channel, once it has one (requests and streams only).

        A session in this worker calls the connection directly, so then there is nothing to listen to.
        """
        await self._has_inbox.wait()
        if self.host_is_local:
            await asyncio.get_running_loop().create_future()
        return await wire.receiver(self.channel_layer, self.channel_name)()

    async def open_inbox(self, *, listen: bool = True) -> None:
        """Get a channel; with ``listen``, start reading it (else an attach's answer would be read twice)."""
        await super().open_inbox()
        if listen:
            self._has_inbox.set()

    def stream_headers(self) -> list[tuple[bytes, bytes]]:
        if self.session_id_header is None:
            return []
        return [(SESSION_HEADER, self.session_id_header.encode())]

    @classmethod
    def for_scope(cls, scope: Any) -> type[GatewayConsumer]:
        """A 2026-07-28 request (by its ``MCP-Protocol-Version``) is served per request: :mod:`.modern`."""
        return PerRequestConsumer if is_per_request(scope) else cls

    async def http_request(self, message: Message) -> None:
        """Act once the request has arrived: a POST's body is held up to the limit; GET and DELETE take none."""
        if self.request.method == "POST":
            body = self.take_body(message)
            if body is None:
                return
            done = await self.post(body)
        else:
            if message.get("body"):
                raise BodyNotAllowed()
            if message.get("more_body"):
                return
            done = await (self.get() if self.request.method == "GET" else self.delete())
        if done:
            raise StopConsumer()

    async def _caller(self) -> Credential:
        try:
            session_id = session_id_from_header(self.request)
        except GatewayError:
            session_id = None  # the full path says what is wrong with it, after authenticating
        caller = await self.identify(session_id, transport=Transport.STREAMABLE_HTTP)
        self._pinned = caller.session
        return caller.credential

    def _check_protocol_version(self) -> None:
        version = self.request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise UnsupportedProtocolVersion(f"Unsupported MCP-Protocol-Version {version[:40]!r}")

    async def _session(self, credential: Credential) -> BoundSession:
        session_id = session_id_from_header(self.request)
        if session_id is None:
            raise MissingSessionId("Mcp-Session-Id header is required")
        self._check_protocol_version()
        if self._pinned is not None:
            return self._pinned
        return await bind(
            self.request, credential, session_id, server=self.mount.prefix, transport=Transport.STREAMABLE_HTTP
        )

    # Methods; each returns whether the response is complete.

    async def post(self, body: bytes) -> bool:
        if not (self.request.accepts("application/json") and self.request.accepts("text/event-stream")):
            raise NotAcceptable()
        credential = await self._caller()
        if body.lstrip()[:1] == b"[":
            raise BatchNotSupported()
        message = parse_message(body, self.request)
        is_request = isinstance(message, JSONRPCRequest)
        if session_id_from_header(self.request) is None:
            if not (isinstance(message, JSONRPCRequest) and message.method == "initialize"):
                if isinstance(message, JSONRPCRequest) and has_modern_envelope(message.params):
                    # A 2026-07-28 request without its version header: the SDK's classification says what is wrong.
                    raise ProtocolRejection(HEADER_MISMATCH, "The MCP-Protocol-Version header is required")
                raise InitializeRequired()
            await self._initialize(credential, body, message)
            return False
        session = await self._session(credential)
        step_up(credential, message, self.mount)
        reply_to = None
        if is_request:
            self.host_channel, self.session_pk = session.channel_name, session.pk
            await self.open_inbox()
            self.json_allowed = True
            reply_to = self.channel_name
        await self.send_to_session(session, body, message, credential=credential, reply_to=reply_to)
        if not is_request:
            await send_response(self.send, HTTPStatus.ACCEPTED, b"", content_type=None)
            return True
        self.start_keepalive()
        return False

    async def _initialize(self, credential: Credential, body: bytes, message: JSONRPCMessage) -> None:
        host, session_id = await self.open_session(credential, Transport.STREAMABLE_HTTP)
        self.session_id_header = session_id
        self.json_allowed = True
        try:
            await self.open_inbox()
            await host.receive_message(
                {
                    "body": body,
                    "parsed": message,
                    "headers": self.request.forwardable_headers(),
                    "reply_to": self.channel_name,
                }
            )
        finally:
            host.start()
        self.start_keepalive()

    async def get(self) -> bool:
        if not self.request.accepts("text/event-stream"):
            raise NotAcceptable("Accept must include text/event-stream")
        credential = await self._caller()
        session = await self._session(credential)
        resume_after = last_event_id(self.request)
        if resume_after is not None and resume_after.ref != session.ref:
            raise InvalidEventId()
        await self.open_inbox(listen=False)
        await self.carry(
            session,
            stream=resume_after.stream if resume_after is not None else MAIN_STREAM,
            after=resume_after,
            replace=resume_after is not None,
        )
        self._has_inbox.set()
        self.start_keepalive()
        self.request.release()
        return False

    async def delete(self) -> bool:
        credential = await self._caller()
        session = await self._session(credential)
        host = worker.local_host(session.pk)
        if host is not None:
            # Ended here: one write closes the record with all the session's activity, before the 204.
            await host.close(CloseReason.TERMINATED)
        else:
            await database_sync_to_async(revoke)(McpSession.objects.filter(pk=session.pk), CloseReason.TERMINATED)
        await send_response(self.send, HTTPStatus.NO_CONTENT, b"", content_type=None)
        return True
