"""Session binding: a request reaches a session only if its caller owns it.

A session ID proves nothing by itself (it travels in URLs and leaks into logs
and Referer headers). Every request naming one is checked here against the
record of who opened it. Unknown, closed, lost (their worker missed its lease) and foreign sessions all raise the
same :class:`SessionNotFound`, so a probe learns nothing; a foreign one is
also recorded in the audit trail, without the ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from mcp_sessions.ids import is_well_formed, public_ref
from mcp_sessions.models import AuditKind, McpSession

from . import audit
from .auth import Credential
from .conf import gateway_settings
from .exceptions import MalformedSessionId, MissingSessionId, SessionNotFound
from .http import GatewayRequest


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


async def bind(
    request: GatewayRequest, credential: Credential, session_id: str, *, server: str, transport: str
) -> BoundSession:
    """The caller's open session with this ID on this server, or :class:`SessionNotFound`."""
    row, foreign = await database_sync_to_async(_lookup)(session_id, credential.user, server, transport)
    if row is not None:
        pk, id_hash, channel_name = row
        return BoundSession(pk=pk, ref=public_ref(id_hash), channel_name=channel_name)
    if foreign is not None:
        audit.record(
            AuditKind.FOREIGN_SESSION,
            user_id=credential.user.pk,
            remote_addr=request.client_ip,
            session_ref=public_ref(foreign[0]),
            detail=f"owner {foreign[1]}",
        )
    raise SessionNotFound()


def _lookup(session_id: str, user: Any, server: str, transport: str) -> tuple[Any, Any]:
    """The caller's matching open session, else (only then) whose it is: one thread hop for both."""
    sessions = (
        McpSession.objects.open()
        .leased(gateway_settings.LEASE_TIMEOUT)
        .with_session_id(session_id)
        .filter(server=server, transport=transport)
    )
    row = sessions.for_user(user).values_list("pk", "id_hash", "channel_name").first()
    foreign = None if row is not None else sessions.values_list("id_hash", "user_id").first()
    return row, foreign
