"""Ending live sessions from anywhere: admin actions, logouts, deactivated users, revoked tokens.

What ends a user's sessions also voids their unused stream tickets that the
same credential asked for, so that none opens a stream afterwards, and
announces the credential revoked
(:func:`~mcp_sessions.managers.announce_credentials_revoked`), so that workers
that verified it a moment ago, for requests of no session, stop trusting it.

:func:`revoke` (:meth:`~mcp_sessions.models.McpSessionQuerySet.revoke`) marks
the records closed in the database, which already makes every later POST to
them 404, and, once that has committed, sends
:data:`~mcp_sessions.signals.sessions_revoked` with the closed records' pks by
the channel-layer address of the worker running them. The gateway receives it
and tells each of those workers to end them (``mcp_gateway.receivers``): one
message per worker, which reaches it even from another process. If that
message is lost (a full channel, a Redis hiccup), the worker still notices at
its next sweep, when it finds the records closed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

from .managers import announce_credentials_revoked
from .models import CloseReason, McpSession, McpSessionQuerySet, StreamTicket


def login_session_hash(session_key: str) -> str:
    return hashlib.sha256(session_key.encode()).hexdigest()


def revoke(sessions: McpSessionQuerySet[McpSession], reason: str = CloseReason.REVOKED) -> int:
    """Close the open ones among ``sessions`` now; returns how many (see :meth:`McpSessionQuerySet.revoke`)."""
    return sessions.revoke(reason)


def revoke_for_user(user: Any, *, cookie_only: bool = False) -> int:
    """End ``user``'s sessions (with ``cookie_only``, those not opened with a token) and void their tickets alike."""
    sessions = McpSession.objects.filter(user=user)
    tickets = StreamTicket.objects.filter(user=user)
    if cookie_only:
        sessions = sessions.filter(token__isnull=True)
        tickets = tickets.filter(token__isnull=True)
    tickets.delete()
    announce_credentials_revoked(user=user, keep_tokens=cookie_only)
    return revoke(sessions)


def revoke_issued(refs: Collection[str], *, token_hashes: Collection[str] = ()) -> int:
    """End what credentials issued by ``refs`` opened (``credential_ref``: an OAuth grant), and void their tickets.

    ``token_hashes`` are those credentials' digests, announced revoked
    (:func:`~mcp_sessions.managers.announce_credentials_revoked`) so that no worker goes on trusting them.
    """
    refs = [ref for ref in refs if ref]
    if not refs:
        return 0
    StreamTicket.objects.filter(credential_ref__in=refs).delete()
    announce_credentials_revoked(token_hashes=token_hashes)
    return revoke(McpSession.objects.filter(credential_ref__in=refs))


def revoke_login(session_key: str, user: Any = None) -> int:
    """End what the login with this session key opened: its sessions, and its tickets (never usable again)."""
    login_hash = login_session_hash(session_key)
    tickets = StreamTicket.objects.filter(login_session_hash=login_hash)
    if getattr(user, "pk", None) is not None:
        tickets = tickets.filter(user=user)  # the user's index narrows the search; the hash alone decides
    tickets.delete()
    announce_credentials_revoked(login_hashes=[login_hash])
    return revoke(McpSession.objects.filter(login_session_hash=login_hash))
