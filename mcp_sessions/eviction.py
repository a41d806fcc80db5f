"""Making room under the per-user session cap: which open session gives way to a new one, and why that one.

The cap (``MCP_GATEWAY_MAX_SESSIONS_PER_USER``) protects the server from one
user's sessions, not the user from their own clients. Clients such as the MCP
Inspector and mcp-remote end without ``DELETE``, so their Streamable HTTP
sessions would stay open until ``IDLE_TIMEOUT`` and, after a few runs, lock
their owner out with 429. So a user at the cap who opens a session gets it,
and the least recently active of their sessions that is not in use is closed
to make room (``evicted``): its record is closed through the revocation path
(:meth:`~mcp_sessions.models.McpSessionQuerySet.revoke`: an audit row, then
``sessions_revoked``, then ``mcp.close`` to whichever worker runs it, from any
process), and its client, if it comes back, gets 404 and initialises again,
as the protocol says a client does. 429 is left for a user all of whose
sessions are in use.

*In use* means holding an open stream or having a request in progress, which
only the worker running the session knows, while the open may land on any
worker. Asking that worker on every open would hold the user's row locked
across a channel-layer round trip; writing the state on every request would
cost a write per request. So the record carries ``in_use``, which the worker
writes only when it changes and only at rare moments: when the session's
``GET`` stream is attached or dropped, at once (streams are long-lived, and a
stream-holding session must never be taken), and, for requests, at its
housekeeping sweep (every ``PING_INTERVAL``), so that a long request counts as
use while a short one, the usual kind, costs nothing. Recency is the record's
``last_seen_at``, which the sweep already renews.

What the record cannot know is a request that began since the last sweep.
The session chosen is the least recently active one, so that is rare; and the
choice is not undone: the host of an evicted session that turns out to be
busy does not refuse, because the record is already closed and the new
session counted, which is what keeps the cap exact (refusing would mean
reopening the record, one session over the cap). It finishes instead: it
takes no new message and answers the requests it has in progress, for a short
while (:data:`mcp_gateway.sessions.site.EVICTION_GRACE`), before it closes.

HTTP+SSE sessions are never chosen: their stream is the session, so one whose
stream is open is in use by definition, and one whose stream dropped closes
on its own within ``RESUME_TIMEOUT``. Nor are listen streams (2026-07-28),
for the same reason: their record is written in use, and closed with the stream.

Choosing and closing happen in :meth:`~mcp_sessions.models.McpSessionManager.open_for`'s
transaction, with the user's row locked: concurrent opens on any number of
workers each see the others' evictions and insertions, so the cap stays exact
and no session is evicted twice.
"""

from __future__ import annotations

from typing import Any, Protocol

from .choices import CloseReason, Transport


class Sessions(Protocol):
    """What eviction uses of a queryset of sessions (a :class:`~mcp_sessions.managers.McpSessionQuerySet`).

    A protocol: the managers call this module, and it must not import them back.
    """

    def count(self) -> int: ...
    def filter(self, *args: Any, **kwargs: Any) -> Sessions: ...
    def exclude(self, *args: Any, **kwargs: Any) -> Sessions: ...
    def order_by(self, *field_names: str) -> Sessions: ...
    def values_list(self, *fields: str, flat: bool = ..., named: bool = ...) -> Any: ...
    def revoke(self, reason: str = ..., *, remote_addr: str | None = None) -> int: ...


class SessionLimitReached(Exception):
    """The user already has as many open sessions as allowed, and every one of them is in use."""


def evictable(sessions: Sessions) -> Sessions:
    """Those of ``sessions`` that may be closed to make room: not in use, nor HTTP+SSE or listen (see the module)."""
    return sessions.filter(in_use=False).exclude(transport__in=(Transport.SSE, Transport.LISTEN))


def make_room(open_sessions: Sessions, limit: int) -> int:
    """Close enough of a user's ``open_sessions`` for one more to fit under ``limit``; how many were closed.

    The least recently active evictable ones go first (the oldest first among
    equals). :class:`SessionLimitReached` if not enough of them may be closed;
    then none is. The caller holds the user's row locked.
    """
    excess = open_sessions.count() - limit + 1
    if excess <= 0:
        return 0
    victims = list(evictable(open_sessions).order_by("last_seen_at", "pk").values_list("pk", flat=True)[:excess])
    if len(victims) < excess:
        raise SessionLimitReached()
    return open_sessions.filter(pk__in=victims).revoke(CloseReason.EVICTED)
