"""Session binding: a request reaches a session only if its caller owns it.

A session ID proves nothing by itself (it travels in URLs and leaks into logs
and Referer headers). Every request naming one is checked here against the
record of who opened it. Unknown, closed, lost (their worker missed its lease) and foreign sessions all raise the
same :class:`SessionNotFound`, so a probe learns nothing; a foreign one is
also recorded in the audit trail, without the ID, once the refusal has been
answered: until then both take the same steps (the same two queries).

This module looks sessions up by ID and owner and parses the headers and
query parameters that name them; who the caller is, and the database-free
path for a session's own credential, are :mod:`mcp_gateway.identity`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from mcp.server.streamable_http import LAST_EVENT_ID_HEADER, MCP_SESSION_ID_HEADER

from mcp_sessions.ids import hash_session_id, is_well_formed, public_ref
from mcp_sessions.models import AuditKind, McpSession

from .auth import Credential
from .conf import gateway_settings
from .exceptions import InvalidEventId, MalformedSessionId, MissingSessionId, SessionNotFound
from .http import GatewayRequest
from .sessions.events import EventId
from .worker import worker

logger = logging.getLogger("mcp_gateway")


@dataclass(frozen=True)
class BoundSession:
    pk: int
    ref: str
    channel_name: str


def session_id_from_query(request: GatewayRequest) -> str:
    """The ``session_id`` query parameter: exactly one, well formed."""
    values = request.query.get("session_id")
    if not values or values == [""]:
        raise MissingSessionId()
    if len(values) > 1 or not is_well_formed(values[0]):
        raise MalformedSessionId()
    return values[0]


def session_id_from_header(request: GatewayRequest) -> str | None:
    """The ``Mcp-Session-Id`` header (Streamable HTTP): None if absent, 400 if malformed."""
    value = request.headers.get(MCP_SESSION_ID_HEADER)
    if value is None:
        return None
    if not is_well_formed(value):
        raise MalformedSessionId()
    return value


def last_event_id(request: GatewayRequest) -> EventId | None:
    """Where a resuming stream picks up: the ``Last-Event-ID`` header, or ``last_event_id`` in the query.

    The query form is for browsers: an ``EventSource`` sends the header only
    on its own reconnections, so a page resuming with a fresh ticket opens a
    new one with ``?ticket=…&last_event_id=…``.
    """
    value = request.headers.get(LAST_EVENT_ID_HEADER)
    if value is None:
        values = request.query.get("last_event_id")
        if not values:
            return None
        if len(values) > 1:
            raise InvalidEventId()
        value = values[0]
    event_id = EventId.parse(value)
    if event_id is None:
        raise InvalidEventId()
    return event_id


async def bind(
    request: GatewayRequest,
    credential: Credential,
    session_id: str,
    *,
    server: str,
    transport: str,
    checked_at: float | None = None,
) -> BoundSession:
    """The caller's open session with this ID on this server, or :class:`SessionNotFound`.

    A session of this worker learns that its credential was confirmed, at ``checked_at`` if the check began
    earlier than now (``time.monotonic()``).
    """
    return await _bind(request, credential, {"id_hash": hash_session_id(session_id)}, server, transport, checked_at)


async def bind_ref(
    request: GatewayRequest, credential: Credential, ref: str, *, server: str, transport: str
) -> BoundSession:
    """The caller's open session whose public reference is ``ref`` (a resuming stream names it so)."""
    return await _bind(request, credential, {"id_hash__startswith": ref}, server, transport)


async def _bind(
    request: GatewayRequest,
    credential: Credential,
    match: dict[str, str],
    server: str,
    transport: str,
    checked_at: float | None = None,
) -> BoundSession:
    row, foreign = await database_sync_to_async(_lookup)(match, credential.user, server, transport)
    if row is not None:
        pk, id_hash, channel_name = row
        host = worker.local_host(pk)
        if host is not None:
            host.pin.confirm(credential, checked_at=checked_at)
        return BoundSession(pk=pk, ref=public_ref(id_hash), channel_name=channel_name)
    if foreign is None:
        raise SessionNotFound()
    # The same refusal, and the same work until it is answered: the event is recorded after the answer is sent.
    raise SessionNotFound().audited(
        AuditKind.FOREIGN_SESSION, session_ref=public_ref(foreign[0]), detail=f"owner {foreign[1]}"
    )


def _lookup(match: dict[str, str], user: Any, server: str, transport: str) -> tuple[Any, Any]:
    """The caller's matching open session, else (only then) whose it is: one thread hop for both."""
    sessions = (
        McpSession.objects.open()
        .leased(gateway_settings.LEASE_TIMEOUT)
        .filter(server=server, transport=transport, **match)
    )
    row = sessions.for_user(user).values_list("pk", "id_hash", "channel_name").first()
    foreign = None if row is not None else sessions.values_list("id_hash", "user_id").first()
    return row, foreign
