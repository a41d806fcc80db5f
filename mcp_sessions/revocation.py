"""Ending live sessions from anywhere: admin actions, logouts, deactivated users, revoked tokens.

What ends a user's sessions also voids their unused stream tickets that the
same credential asked for, so that none opens a stream afterwards.

:func:`revoke` marks the records closed in the database, which already makes
every later POST to them 404, and then tells each worker running some of them
to end them, through the channel layer, which reaches that worker even from
another process: one message per worker, at its address stored with the
records. If that message is lost (a full channel, a Redis hiccup), the worker
still notices at its next sweep, when it finds the records closed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from typing import Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from mcp_gateway import audit
from mcp_gateway.conf import gateway_settings

from .ids import public_ref
from .models import AuditKind, CloseReason, McpSession, StreamTicket

logger = logging.getLogger("mcp_gateway")


def login_session_hash(session_key: str) -> str:
    return hashlib.sha256(session_key.encode()).hexdigest()


def revoke(sessions: QuerySet[McpSession], reason: str = CloseReason.REVOKED) -> int:
    """Close the open ones among ``sessions`` now; returns how many."""
    targets = list(sessions.open().values_list("pk", "id_hash", "channel_name", "user_id"))
    if not targets:
        return 0
    McpSession.objects.filter(pk__in=[t[0] for t in targets], closed_at__isnull=True).update(
        closed_at=timezone.now(), close_reason=reason
    )
    by_worker: dict[str, list[int]] = defaultdict(list)
    for pk, _, channel, _ in targets:
        by_worker[channel].append(pk)
    transaction.on_commit(lambda: _tell_streams(by_worker, reason))
    for _, id_hash, _, user_id in targets:
        audit.record(AuditKind.SESSION_REVOKED, user_id=user_id, session_ref=public_ref(id_hash), detail=reason)
    return len(targets)


def _tell_streams(by_worker: dict[str, list[int]], reason: str) -> None:
    """Tell each worker running some of the sessions to end them: one message per worker."""
    layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
    if layer is None:
        return
    for channel, pks in by_worker.items():
        try:
            async_to_sync(layer.send)(channel, {"type": "mcp.close", "sessions": pks, "reason": reason})
        except ChannelFull:
            pass  # the worker finds the records closed at its next sweep
        except Exception:
            logger.exception("Could not reach a worker to close its MCP sessions; they close at its next sweep")


def revoke_for_user(user: Any, *, cookie_only: bool = False) -> int:
    """End ``user``'s sessions (with ``cookie_only``, those not opened with a token) and void their tickets alike."""
    sessions = McpSession.objects.filter(user=user)
    tickets = StreamTicket.objects.filter(user=user)
    if cookie_only:
        sessions = sessions.filter(token__isnull=True)
        tickets = tickets.filter(token__isnull=True)
    tickets.delete()
    return revoke(sessions)


def revoke_login(session_key: str, user: Any = None) -> int:
    """End what the login with this session key opened: its sessions, and its tickets (never usable again)."""
    login_hash = login_session_hash(session_key)
    tickets = StreamTicket.objects.filter(login_session_hash=login_hash)
    if getattr(user, "pk", None) is not None:
        tickets = tickets.filter(user=user)  # the user's index narrows the search; the hash alone decides
    tickets.delete()
    return revoke(McpSession.objects.filter(login_session_hash=login_hash))
