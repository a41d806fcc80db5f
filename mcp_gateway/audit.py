"""The audit trail: security events to the ``mcp_gateway.security`` logger and the database.

Every event is logged. Database rows are capped so that an attacker cannot
fill the table: at most ``MCP_GATEWAY_AUDIT_ROWS_PER_MINUTE`` rows per event
kind and client address per minute in each worker; events over the cap are
only logged (and counted in the log line). From the event loop, rows are
queued (at most ``MAX_PENDING``) and written in batches by a short-lived task,
one thread hop per batch, so refusals cost the request path no database work.
Rows still queued when a worker is killed are lost; the log has them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from mcp_sessions.models import AuditEvent, AuditKind

from .conf import gateway_settings

security_logger = logging.getLogger("mcp_gateway.security")

LIFECYCLE = frozenset({AuditKind.SESSION_OPENED, AuditKind.SESSION_CLOSED, AuditKind.SESSION_REVOKED})
MAX_PENDING = 10_000
FLUSH_DELAY = 0.2


class AuditTrail:
    def __init__(self) -> None:
        self._pending: list[AuditEvent] = []
        self._writer: asyncio.Task[None] | None = None
        self._minute = 0
        self._counts: Counter[tuple[str, str | None]] = Counter()
        self.suppressed = 0

    def record(
        self,
        kind: str,
        *,
        user_id: int | None = None,
        remote_addr: str | None = None,
        session_ref: str = "",
        detail: str = "",
    ) -> None:
        admitted = self._admit(kind, remote_addr)
        level = logging.INFO if kind in LIFECYCLE else logging.WARNING
        security_logger.log(
            level,
            "%s user=%s addr=%s session=%s %s%s",
            kind,
            user_id if user_id is not None else "-",
            remote_addr or "-",
            session_ref or "-",
            detail,
            "" if admitted else f" (not stored: over the per-minute cap, {self.suppressed} so far)",
            extra={"audit_kind": kind, "session_ref": session_ref, "user_id": user_id, "remote_addr": remote_addr},
        )
        if not admitted:
            return
        event = AuditEvent(
            kind=kind, user_id=user_id, remote_addr=remote_addr, session_ref=session_ref, detail=detail[:200]
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            _write([event])  # synchronous code (admin actions, signals): write now
            return
        if len(self._pending) >= MAX_PENDING:
            self.suppressed += 1
            return
        self._pending.append(event)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    def _admit(self, kind: str, remote_addr: str | None) -> bool:
        minute = int(time.monotonic() // 60)
        if minute != self._minute:
            self._minute, self._counts = minute, Counter()
        self._counts[kind, remote_addr] += 1
        if self._counts[kind, remote_addr] > gateway_settings.AUDIT_ROWS_PER_MINUTE:
            self.suppressed += 1
            return False
        return True

    async def _drain(self) -> None:
        """Write what is queued, in batches, until nothing is left; then end."""
        while self._pending:
            await asyncio.sleep(FLUSH_DELAY)
            batch, self._pending = self._pending, []
            try:
                await database_sync_to_async(_write)(batch)
            except Exception:
                security_logger.exception("Could not store %d audit events (they are in this log)", len(batch))


def _write(events: list[AuditEvent]) -> None:
    now = timezone.now()
    for event in events:
        event.created_at = min(event.created_at, now)
    try:
        with transaction.atomic():
            AuditEvent.objects.bulk_create(events)
    except IntegrityError:
        # A user was deleted while their events were queued: keep the events, without the user.
        user_ids = {event.user_id for event in events if event.user_id is not None}
        existing = set(get_user_model()._default_manager.filter(pk__in=user_ids).values_list("pk", flat=True))
        for event in events:
            if event.user_id not in existing:
                event.user_id = None
        AuditEvent.objects.bulk_create(events)


trail = AuditTrail()
record = trail.record


def record_refusal(exc: Any, request: Any, user: Any = None) -> None:
    """Record a refusal that is worth an audit row (the exception says which kind, if any)."""
    kind = getattr(exc, "audit_kind", None)
    if kind is not None:
        record(kind, user_id=getattr(user, "pk", None), remote_addr=request.client_ip, detail=request.path[:200])
