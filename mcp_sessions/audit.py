"""The audit trail: security events to the ``mcp_gateway.security`` loggers and the database.

It writes the model app's :class:`~mcp_sessions.models.AuditEvent` rows, so it
lives here, below the models: it looks the model up when it writes, so that the
models' own operations (a revocation) can record events; the events' kinds
(:class:`~mcp_sessions.choices.AuditKind`) and the columns' lengths
(:mod:`mcp_sessions.lengths`) are the models' as well, in modules of their own. The gateway
calls it for the refusals it answers and the sessions it
opens and closes. A refusal logs on a logger of its own exception class,
``mcp_gateway.security.<ClassName>`` (as Django's own security events log on
``django.security.<ClassName>``), so a site can route or silence one kind of
refusal; every other event logs on ``mcp_gateway.security`` itself.

Every event is logged. Refusals' rows are capped so that an attacker cannot
fill the table: at most ``MCP_GATEWAY_AUDIT_ROWS_PER_MINUTE`` rows per refusal
kind and client address per minute in each worker; refusals over the cap are
only logged (and counted in the log line). Session events (opened, closed,
revoked) are always stored: they are the sessions' own record, and they are
bounded by what may be opened (the per-user session cap and rate limit). So
are a user's own changes to their tokens (created, revoked) and connected apps (access revoked), made on a page
behind the login and CSRF checks. An
admin revoking a hundred sessions at once, or the sweep closing a thousand
idle ones, must leave a row for each. From the event loop, rows are
queued (at most ``MAX_PENDING``) and written in batches by a short-lived task,
one thread hop per batch, so refusals cost the request path no database work.
Rows still queued when a worker is killed are lost; the log has them.

What a client chose (the path it asked for, and any other detail) is escaped
here, once, for both the log line and the row (:func:`mcp_sessions.text.escape`):
a path with ``%0d%0a`` cannot add a forged line to the log.

Each row keeps its user's username, taken from the user object when the
caller has one, else looked up by the batch writer (one query per batch),
so a row stays readable after its user is deleted. The row's user column has
no database constraint: a row written while its user is being deleted never
blocks or breaks the deletion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from mcp_gateway.conf import gateway_settings

from .choices import AuditKind as AuditKind  # the events' kinds, named here by every caller
from .lengths import DETAIL_LENGTH, USERNAME_LENGTH
from .text import clean_address, escape

if TYPE_CHECKING:
    from .models import AuditEvent

SECURITY_LOGGER = "mcp_gateway.security"
security_logger = logging.getLogger(SECURITY_LOGGER)


# Events of what a user or the gateway did, not refusals: always stored, logged at INFO.
LIFECYCLE = frozenset(
    {
        AuditKind.SESSION_OPENED,
        AuditKind.SESSION_CLOSED,
        AuditKind.SESSION_REVOKED,
        AuditKind.TOKEN_CREATED,
        AuditKind.TOKEN_REVOKED,
        AuditKind.APP_REVOKED,
    }
)
MAX_PENDING = 10_000
FLUSH_DELAY = 0.2
# Seconds between a refusal's answer and its record (see record_refusal_after_answer).
REFUSAL_DELAY = 0.05


def _model() -> type[AuditEvent]:
    """The AuditEvent model, looked up when needed: the models import this module."""
    return apps.get_model("mcp_sessions", "AuditEvent")


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
        user: Any = None,
        user_id: int | None = None,
        remote_addr: str | None = None,
        session_ref: str = "",
        detail: str = "",
        logger: logging.Logger = security_logger,
    ) -> None:
        """Log the event (on ``logger``) and queue its row; ``user`` (an object) or ``user_id`` names who, if anyone."""
        if user is not None:
            user_id = user.pk
        username = user.get_username()[:USERNAME_LENGTH] if user is not None else ""
        detail = escape(detail)
        # A client's address may be anything it put in X-Forwarded-For (behind --proxy-headers): stored as the
        # other records store it, else one bad row would lose its whole batch, and each value would count apart.
        remote_addr = clean_address(remote_addr)
        admitted = self._admit(kind, remote_addr)
        level = logging.INFO if kind in LIFECYCLE else logging.WARNING
        logger.log(
            level,
            "%s user=%s addr=%s session=%s %s%s",
            kind,
            user_id if user_id is not None else "-",
            escape(remote_addr) if remote_addr else "-",
            escape(session_ref) if session_ref else "-",
            detail,
            "" if admitted else f" (not stored: over the per-minute cap, {self.suppressed} so far)",
            extra={"audit_kind": kind, "session_ref": session_ref, "user_id": user_id, "remote_addr": remote_addr},
        )
        if not admitted:
            return
        event = _model()(
            kind=kind,
            user_id=user_id,
            username=username,
            remote_addr=remote_addr,
            session_ref=session_ref,
            detail=detail[:DETAIL_LENGTH],
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
        if kind in LIFECYCLE:
            return True
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
    """Store ``events``; those of users already gone keep their username but no user, as SET NULL would leave them.

    A user deleted between the lookup and the insert leaves a row naming a
    user that no longer exists: no constraint refuses it, and its username
    still says who it was.
    """
    now = timezone.now()
    for event in events:
        event.created_at = min(event.created_at, now)
    user_ids = {event.user_id for event in events if event.user_id is not None}
    if user_ids:
        user_model = get_user_model()
        names = dict(user_model._default_manager.filter(pk__in=user_ids).values_list("pk", user_model.USERNAME_FIELD))
        for event in events:
            if event.user_id is None:
                continue
            if not event.username and event.user_id in names:
                event.username = str(names[event.user_id])[:USERNAME_LENGTH]
            if event.user_id not in names:
                event.user_id = None
    with transaction.atomic():
        _model().objects.bulk_create(events)


trail = AuditTrail()
record = trail.record


def session_closed(
    *, user: Any = None, user_id: int | None = None, remote_addr: str | None, session_ref: str, reason: str
) -> None:
    """Record that a session or listen stream closed for ``reason``, as its record's close wrote it.

    The one row every close the gateway writes leaves: by its host, its
    listen stream, a cancelled opening, or the lease of a worker that lost it.
    """
    record(
        AuditKind.SESSION_CLOSED,
        user=user,
        user_id=user_id,
        remote_addr=remote_addr,
        session_ref=session_ref,
        detail=reason,
    )


def refusal_logger(exc: BaseException) -> logging.Logger:
    """The logger of a refusal: ``mcp_gateway.security.<its class name>``, as Django logs ``django.security.<name>``."""
    return logging.getLogger(f"{SECURITY_LOGGER}.{type(exc).__name__}")


def record_refusal(exc: Any, request: Any, user: Any = None) -> None:
    """Record a refusal that is worth an audit row (the exception says which kind, if any, and what else to say).

    It is logged on :func:`refusal_logger`'s logger for the exception's class.
    """
    kind = getattr(exc, "audit_kind", None)
    if kind is None:
        return
    fields: dict[str, Any] = {"detail": request.path, **getattr(exc, "audit_fields", {})}
    record(kind, user=user, remote_addr=request.client_ip, logger=refusal_logger(exc), **fields)


def record_refusal_after_answer(exc: Any, request: Any, user: Any = None) -> None:
    """:func:`record_refusal`, ``REFUSAL_DELAY`` seconds after the answer just sent: the same step for every refusal.

    Every refusal, recorded or not, schedules this one timer and nothing else,
    so a refusal that is recorded (another user's session) answers after the
    very steps of one that is not (an unknown session), and its recording
    does not compete with the answer for the processor either: on a busy
    machine, recording at the next turn of the loop (a zero-delay timer)
    still delayed the client's receipt of the answer measurably
    (``bench/probe_timing.py``). A probe cannot tell the two apart by timing.
    """
    asyncio.get_running_loop().call_later(REFUSAL_DELAY, record_refusal, exc, request, user)
