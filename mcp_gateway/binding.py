"""Session binding: a request reaches a session only if its caller owns it.

A session ID proves nothing by itself (it travels in URLs and leaks into logs
and Referer headers). Every request naming one is checked here against the
record of who opened it. Unknown, closed, lost (their worker missed its lease) and foreign sessions all raise the
same :class:`SessionNotFound`, so a probe learns nothing; a foreign one is
also recorded in the audit trail, without the ID, once the refusal has been
answered: until then both take the same steps (the same two queries).

Most requests reach the worker running their session and carry the credential
that opened it. :func:`pinned_session` admits those without the database: the
live session knows its owner and the fingerprint of that credential, and
revoking the credential (logout, password change, deactivation, deletion,
token revocation) ends the session at once. A change that bypasses those
signals (a bulk ``update()``, a deleted login session row) is still seen
within ``RECHECK_INTERVAL`` seconds, when the database is asked again: in
the background, started by a request that finds the last check in its last
quarter, so the requests of an active client do not wait for it. Any other
request (another worker, another credential, a check older than the
interval) takes the full path: :func:`~mcp_gateway.auth.authenticate`, then
:func:`bind`.

Either way the request's credential is ambient (it needs the CSRF check) by
what the request presents, not by what opened the session: a session opened
with a stream ticket issued to a login is reached with that login's cookie.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.db import DatabaseError

from mcp_sessions.ids import hash_session_id, is_well_formed, public_ref
from mcp_sessions.models import AuditKind, McpSession

from . import audit
from .auth import Credential, authenticate, presented_credential
from .conf import gateway_settings
from .exceptions import GatewayError, InvalidEventId, MalformedSessionId, MissingSessionId, SessionNotFound
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
    value = request.headers.get("mcp-session-id")
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
    value = request.headers.get("last-event-id")
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


def pinned_session(
    request: GatewayRequest, session_id: str | None, *, server: str, transport: str
) -> tuple[Credential, BoundSession] | None:
    """The caller and their session, if this worker can vouch for both without the database; else None."""
    if session_id is None:
        return None
    host = worker.local_host_by_id_hash(hash_session_id(session_id))
    if host is None:
        return None
    presented = presented_credential(request)
    if presented is None or not host.admits(presented.fingerprint, server=server, transport=transport):
        return None
    if host.pin.renewal_due():
        host.pin.renewing = True
        task = asyncio.get_running_loop().create_task(_renew(host, request, session_id, server, transport))
        _renewals.add(task)
        task.add_done_callback(_renewals.discard)
    credential = host.credential
    if credential.ambient != presented.ambient:
        credential = dataclasses.replace(credential, ambient=presented.ambient)
    return credential, BoundSession(pk=host.pk, ref=host.ref, channel_name=host.inbox)


_renewals: set[asyncio.Task[None]] = set()


async def _renew(host: Any, request: GatewayRequest, session_id: str, server: str, transport: str) -> None:
    """The full check of a pinned request, off its path: if it passes, the pin counts from when it began."""
    started = time.monotonic()
    try:
        credential = await authenticate(request)
        try:
            await _bind(request, credential, {"id_hash": hash_session_id(session_id)}, server, transport, started)
        except SessionNotFound as exc:
            audit.record_refusal(exc, request, credential.user)  # a foreign session is recorded here too
            raise
    except (GatewayError, DatabaseError) as exc:
        # Not renewed: the pin lapses on time, and the next request takes the full path and gets its answer.
        logger.debug("Pinned credential of session %s not renewed: %r", host.ref, exc)
    finally:
        host.pin.renewing = False


async def identify(
    request: GatewayRequest, session_id: str | None, *, server: str, transport: str
) -> tuple[Credential, BoundSession | None]:
    """The caller, and their session when this worker vouches for both without the database.

    The session is None on the full path: the caller then names it to :func:`bind`.
    """
    pinned = pinned_session(request, session_id, server=server, transport=transport)
    if pinned is not None:
        return pinned
    return await authenticate(request), None


async def bind(
    request: GatewayRequest, credential: Credential, session_id: str, *, server: str, transport: str
) -> BoundSession:
    """The caller's open session with this ID on this server, or :class:`SessionNotFound`."""
    return await _bind(request, credential, {"id_hash": hash_session_id(session_id)}, server, transport)


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
