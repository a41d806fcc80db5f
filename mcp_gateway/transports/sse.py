"""The HTTP+SSE transport (deprecated by the MCP specification, still used by clients).

- :class:`SSEConsumer` (``GET <prefix>sse``) authenticates the caller, opens
  a session bound to them in this worker (a
  :class:`~mcp_gateway.sessions.host.SessionHost`; the address of this worker is
  stored with the record) and carries its stream; or, given
  ``Last-Event-ID``, resumes the caller's session on this connection.
- :class:`MessagesConsumer` (``POST <prefix>messages/``) is a stateless
  forwarder: the caller's identity (:mod:`mcp_gateway.identity`), then the
  session ID bound to the caller, the message validated and sent to its
  session, 202. It keeps no per-process state, so it may run on any worker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from channels.exceptions import StopConsumer

from mcp_sessions.models import Transport

from .. import wire
from ..binding import bind, bind_ref, last_event_id, session_id_from_query
from ..exceptions import (
    GatewayError,
    InvalidEventId,
)
from ..http import GatewayRequest, Message, send_response
from ..scopes import step_up
from ..sessions.events import MAIN_STREAM
from ..tickets import stream_credential
from .base import GatewayConsumer, parse_message
from .stream import StreamConsumer

logger = logging.getLogger("mcp_gateway")


def usable_session_id(request: GatewayRequest) -> str | None:
    """The ``session_id`` query parameter if well formed, else None (the full path then says what is wrong)."""
    try:
        return session_id_from_query(request)
    except GatewayError:
        return None


class MessagesConsumer(GatewayConsumer):
    """``POST <prefix>messages/?session_id=<id>``: forward one message to its session."""

    async def http_request(self, message: Message) -> None:
        body = self.take_body(message)
        if body is None:
            return
        await self.forward(body)
        raise StopConsumer()

    async def forward(self, body: bytes) -> None:
        caller = await self.identify(usable_session_id(self.request), transport=Transport.SSE)
        session_id = session_id_from_query(self.request)
        parsed = parse_message(body, self.request)
        session = caller.session or await bind(
            self.request, caller.credential, session_id, server=self.mount.prefix, transport=Transport.SSE
        )
        step_up(caller.credential, parsed, self.mount)
        await self.send_to_session(session, body, parsed, credential=caller.credential)
        await send_response(self.send, HTTPStatus.ACCEPTED, b"", content_type=None)


class SSEConsumer(StreamConsumer):
    """``GET <prefix>sse``: open a session bound to the caller and carry its stream, or resume one.

    Without ``Last-Event-ID`` a new session starts here and its first event
    names the URL to POST to. With it (the header, or ``last_event_id`` in the
    query), the caller's session that sent that event continues on this
    connection, on any worker, after the events it missed.
    """

    async def start(self) -> list[Callable[[], Awaitable[Message]]]:
        credential = await stream_credential(self.request)
        self.request.user = credential.user
        resume_after = last_event_id(self.request)
        if resume_after is not None:
            session = await bind_ref(
                self.request, credential, resume_after.ref, server=self.mount.prefix, transport=Transport.SSE
            )
            if resume_after.stream != MAIN_STREAM:
                raise InvalidEventId()
        await self.open_inbox()
        if resume_after is None:
            await self._open(credential)
        else:
            await self.carry(session, stream=MAIN_STREAM, after=resume_after, replace=True)
        self.start_keepalive()
        self.request.release()
        if self.host_is_local:
            return []  # the session is in this worker and calls this consumer directly: nothing to listen to
        return [wire.receiver(self.channel_layer, self.channel_name)]

    async def _open(self, credential: Any) -> None:
        host, session_id = await self.open_session(credential, Transport.SSE)
        try:
            await host.streams.attach(MAIN_STREAM, self.channel_name, self, after=None, replace=False)
            await self.start_stream()
            # Headers go out with the first body chunk, so the endpoint event is sent at once. It is never replayed
            # (a client resumes from it or later), so an idle session does not keep it.
            url = self.mount.messages_url(self.scope, session_id)
            await host.streams.emit(MAIN_STREAM, "endpoint", url, replay=False)
        finally:
            host.start()
