"""Opening a session: its record, bound to the caller, then its host in this worker.

The record names this worker (its lease) and the worker's address on the
channel layer, so that any worker can reach the session. A record must never
be left open without a host: one written for a caller that went away
meanwhile is closed at once (and, if that fails too, by the worker's lease
heartbeat). Nor is one written for a client already gone when its turn for
the database comes (:class:`ClientGone`): under more opens than the worker
can take, the queue would otherwise be worked through for clients that gave
up waiting, and every open would wait for all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer
from django.db import IntegrityError
from django.utils import timezone

from mcp_sessions import audit
from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import AuditKind, CloseReason, McpSession, SessionLimitReached, Transport, error_summary

from .auth import Credential
from .conf import gateway_settings
from .exceptions import TooManySessions
from .http import GatewayRequest
from .sessions.host import SessionHost
from .worker import worker

logger = logging.getLogger("mcp_gateway")


class Mount(Protocol):
    """Where the session is opened (a :class:`~mcp_gateway.routing.Mount`)."""

    @property
    def prefix(self) -> str: ...

    @property
    def session_server(self) -> Any: ...  # the MCP server as sessions run it: the SDK's servers share no base class


class ClientGone(Exception):
    """The client closed its connection before its session's record was written: none was, nothing to answer."""


async def open_session(
    *,
    layer: BaseChannelLayer,
    mount: Mount,
    request: GatewayRequest,
    credential: Credential,
    transport: str,
) -> tuple[SessionHost, str]:
    """Record a new session bound to the caller and create its host here; returns it and the secret ID.

    The host is not started: the caller attaches its connection first, so
    that nothing the session sends can miss it. :class:`ClientGone` if the
    client left before the record was written.
    """
    inbox = await worker.inbox.address(layer)
    session_id = new_session_id()
    fields = {
        "limit": gateway_settings.MAX_SESSIONS_PER_USER,
        "lease": gateway_settings.LEASE_TIMEOUT,
        "id_hash": hash_session_id(session_id),
        "server": mount.prefix,
        "transport": transport,
        "channel_name": inbox,
        "worker_id": await worker.lease.ensure(),
        "remote_addr": request.client_ip,
        "user_agent": request.user_agent,  # cleaned and cut to their columns by open_for
        "origin": request.origin or "",
        "token_id": credential.token_id,
        "login_session_hash": credential.login_session_hash,
        "credential_ref": credential.credential_ref,
        "in_use": transport == Transport.SSE,  # its stream, the caller's, is attached before anything else happens
    }
    record = await insert_record(credential.user, fields, gone=request.client_gone)
    audit.record(
        AuditKind.SESSION_OPENED,
        user=credential.user,
        remote_addr=request.client_ip,
        session_ref=record.ref,
        detail=f"{credential.scheme} {transport} {mount.prefix}",
    )
    host = SessionHost(
        site=worker,
        layer=layer,
        inbox=inbox,
        record=record,
        credential=credential,
        server=mount.session_server,
        deadline=deadline_for(credential),
        resume_timeout=gateway_settings.RESUME_TIMEOUT if transport == Transport.SSE else None,
    )
    return host, session_id


async def insert_record(user: Any, fields: dict[str, Any], *, gone: Callable[[], bool] = lambda: False) -> McpSession:
    """Write the record of what ``user`` opens (``McpSessionManager.open_for``'s ``fields``), within their cap.

    :class:`TooManySessions` when the cap is reached (counted in the database, exactly under concurrency);
    :class:`ClientGone`, and no record, if ``gone()`` says so when the database thread takes the write up.
    """
    opening = asyncio.ensure_future(_write_record(user, fields, gone))
    try:
        # Shielded: a cancelled caller (its client left, the server is stopping) cannot stop the insert in its
        # thread, only stop waiting for it; the record it writes is then closed here rather than left open.
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_abandoned)
        raise
    except SessionLimitReached:
        raise TooManySessions() from None


async def _write_record(user: Any, fields: dict[str, Any], gone: Callable[[], bool]) -> McpSession:
    def write(user: Any, **fields: Any) -> McpSession:
        if gone():  # checked in the thread: the wait for it is where an open spends its time under load
            raise ClientGone()
        return McpSession.objects.open_for(user, **fields)

    open_for = database_sync_to_async(write)
    try:
        record: McpSession = await open_for(user, **fields)
    except IntegrityError:
        # This worker's row is gone (the database was restored or flushed): register again, once.
        await worker.lease.register()
        record = await open_for(user, **fields)
    return record


def _close_abandoned(opening: asyncio.Future[McpSession]) -> None:
    """The record written for a caller that was cancelled meanwhile: it will have no host, so close it now."""
    if opening.cancelled() or opening.exception() is not None:
        return
    worker.start(_close_hostless(opening.result()))


async def _close_hostless(record: McpSession) -> None:
    try:
        reason = await database_sync_to_async(McpSession.objects.close)(record.pk, CloseReason.HOST_LOST, None)
    except Exception as exc:
        # Still open, on this worker, with no host: the worker's heartbeat closes it (see mcp_gateway.lease).
        logger.error(
            "Could not close MCP session %s, whose opening request went away (%s)", record.ref, error_summary(exc)
        )
        return
    audit.session_closed(user_id=record.user_id, remote_addr=record.remote_addr, session_ref=record.ref, reason=reason)


def deadline_for(credential: Credential) -> datetime | None:
    """When a session must close: its maximum lifetime, or its token's expiry if sooner."""
    lifetime = gateway_settings.MAX_LIFETIME
    candidates = [credential.expires_at]
    if lifetime is not None:
        candidates.append(timezone.now() + timedelta(seconds=lifetime))
    return min((c for c in candidates if c is not None), default=None)
