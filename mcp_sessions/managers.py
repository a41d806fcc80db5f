"""The model app's operations on sessions and audit events, and what every record's manager shares.

Querysets and managers own what is done to the records: views, the admin,
management commands and the gateway call them (``for_user``, ``revoke``,
``clear_expired``, ``open_for``, …) rather than writing queries of their own.
Tokens' operations are in :mod:`mcp_sessions.tokens`, stream tickets' in
:mod:`mcp_sessions.tickets`, client usage's in :mod:`mcp_sessions.usage`,
call records' in :mod:`mcp_sessions.calls`. Models are looked up through the app registry where an
operation reaches another model, and the querysets and managers are generic in
their own model, so that this module does not import the models, which import it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, Self, TypeVar

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import OperationalError, models, transaction
from django.utils import timezone

from . import audit
from .audit import AuditKind as AuditKind  # part of the models' API: the kind column's choices
from .choices import CloseReason
from .eviction import SessionLimitReached as SessionLimitReached  # raised by open_for, named by the models
from .eviction import make_room
from .ids import (
    public_ref,
)
from .signals import credentials_revoked, sessions_revoked
from .text import clean_fields

logger = logging.getLogger("mcp_gateway")


def _model(name: str) -> Any:
    """The app's model ``name``, from the app registry (the models import this module)."""
    return apps.get_model("mcp_sessions", name)


def error_summary(exc: BaseException) -> str:
    """A database error's class and first line, for logs.

    Not the rest: PostgreSQL details a refused row with all its values
    (``Failing row contains (...)``), hashes of credentials among them.
    """
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


# The model of a queryset or manager here: generic in it, as the models import this module and not the reverse.
_M = TypeVar("_M", bound=models.Model)


class OwnedQuerySet(models.QuerySet[_M]):
    def for_user(self, user: Any) -> Any:
        """Rows owned by ``user``; nobody else's ever leaves this queryset."""
        if not getattr(user, "is_authenticated", False):
            return self.none()
        return self.filter(user=user)


class McpSessionQuerySet(OwnedQuerySet[_M]):
    """Sessions' operations; generic in its model (:class:`~mcp_sessions.models.McpSession`), which imports this."""

    def open(self) -> Self:
        return self.filter(closed_at__isnull=True)

    def closed(self) -> Self:
        return self.filter(closed_at__isnull=False)

    def leased(self, lease: float) -> Self:
        """Sessions whose worker has sent a heartbeat within ``lease`` seconds (or that have no worker)."""
        fresh = timezone.now() - timedelta(seconds=lease)
        return self.filter(models.Q(worker__isnull=True) | models.Q(worker__heartbeat_at__gte=fresh))

    def orphaned(self, lease: float) -> Self:
        """Open sessions whose worker has missed its lease: it crashed or hangs."""
        stale = timezone.now() - timedelta(seconds=lease)
        return self.open().filter(models.Q(worker__heartbeat_at__lt=stale))

    def revoke(self, reason: str = CloseReason.REVOKED, *, remote_addr: str | None = None) -> int:
        """Close the open ones among these sessions now, and have their live sessions ended; returns how many.

        The records are marked closed, which already makes every later POST
        to them 404, and each is recorded in the audit trail (with
        ``remote_addr``, the address of whoever revoked them, if given); once that has
        committed, :data:`~mcp_sessions.signals.sessions_revoked` says which
        pks closed, by the channel-layer address of the worker running them
        (the gateway ends them there). A worker that is not told finds its
        records closed at its next sweep.
        """
        targets = list(self.open().values_list("pk", "id_hash", "channel_name", "user_id"))
        if not targets:
            return 0
        self.model._default_manager.filter(pk__in=[t[0] for t in targets], closed_at__isnull=True).update(
            closed_at=timezone.now(), close_reason=reason
        )
        by_worker: dict[str, list[int]] = {}
        for pk, _id_hash, channel, _user_id in targets:
            by_worker.setdefault(channel, []).append(pk)
        transaction.on_commit(lambda: _announce_revoked(by_worker, reason))
        for _pk, id_hash, _channel, user_id in targets:
            audit.record(
                AuditKind.SESSION_REVOKED,
                user_id=user_id,
                remote_addr=remote_addr,
                session_ref=public_ref(id_hash),
                detail=reason,
            )
        return len(targets)

    def clear_expired(self, days: float) -> int:
        """Delete the records closed more than ``days`` ago (open ones never); how many."""
        deleted, _ = self.closed().filter(closed_at__lt=timezone.now() - timedelta(days=days)).delete()
        return deleted


def _announce_revoked(by_worker: dict[str, list[int]], reason: str) -> None:
    """Send :data:`~mcp_sessions.signals.sessions_revoked`, robustly: a receiver that fails is logged, not raised.

    The records are closed already; a worker that is not told finds them
    closed at its next sweep.
    """
    sessions_revoked.send_robust(_model("McpSession"), by_worker=by_worker, reason=reason)


def announce_credentials_revoked(
    *,
    token_hashes: Collection[str] = (),
    login_hashes: Collection[str] = (),
    user: Any = None,
    keep_tokens: bool = False,
) -> None:
    """Send :data:`~mcp_sessions.signals.credentials_revoked` once the transaction commits (at once in autocommit).

    Not before: a worker told too early could check the credential again, see the old rows and trust it anew.
    """
    user_pk = None if getattr(user, "pk", None) is None else str(user.pk)
    tokens, logins = list(token_hashes), list(login_hashes)
    transaction.on_commit(
        lambda: credentials_revoked.send_robust(
            _model("AccessToken"), token_hashes=tokens, login_hashes=logins, user_pk=user_pk, keep_tokens=keep_tokens
        )
    )


_McpSessionBaseManager = models.Manager.from_queryset(McpSessionQuerySet)


class McpSessionManager(_McpSessionBaseManager[_M]):
    """Every write of a session record cleans its values first (:mod:`mcp_sessions.text`): many are the client's."""

    def open_for(self, user: Any, *, limit: int | None, lease: float, **fields: Any) -> _M:
        """Record a new session for ``user``, closing one of theirs first if they already have ``limit`` open ones.

        The one closed (``evicted``) is the least recently active that is not
        in use (:mod:`mcp_sessions.eviction`); :class:`SessionLimitReached` if
        every one is. Counting, evicting and inserting happen in one
        transaction with the user's row locked, so concurrent opens on several
        workers cannot overshoot, nor evict one session twice. A database
        without row locks (SQLite) is not asked for one: the ``SELECT`` would
        lock nothing there, a query for nothing on every open, and SQLite
        serializes writers itself (with ``IMMEDIATE`` transactions at their
        ``BEGIN``; otherwise the second of two that counted cannot write).
        """
        fields = clean_fields(self.model, fields)
        with transaction.atomic():
            if limit is not None:
                if transaction.get_connection().features.has_select_for_update:
                    get_user_model()._default_manager.select_for_update().filter(pk=user.pk).exists()
                mine = self.filter(user=user).open()
                # Under the cap counting every open record, it is under it counting the leased ones: nothing to
                # evict. That count is the ``(user, closed_at)`` index's alone, and stops at ``limit``; the
                # leased count joins each record's worker, which cost an open 5 ms at 8,000 of its user's.
                if mine.order_by()[:limit].count() >= limit:
                    make_room(mine.leased(lease), limit)
            return self.create(user=user, **fields)

    def end_own(self, user: Any, pk: int, *, remote_addr: str | None = None) -> int:
        """End ``user``'s session ``pk`` as the admin's revoke does (live, from any process): 1, or 0 if it had ended.

        ``DoesNotExist`` if ``user`` has no session ``pk``: another user's session is not found, the same way as
        one that never was.
        """
        session = self.for_user(user).get(pk=pk)
        return self.filter(pk=session.pk).revoke(remote_addr=remote_addr)

    def end_others(self, user: Any, *, keep_login_hash: str, remote_addr: str | None = None) -> int:
        """End every open session of ``user``'s but those opened with the login ``keep_login_hash``; how many.

        ``keep_login_hash`` is the :func:`~mcp_sessions.revocation.login_session_hash` of the login asking
        (this browser); sessions opened with tokens, or with the user's other logins, all end.
        """
        others = self.for_user(user).open()
        if keep_login_hash:
            others = others.exclude(login_session_hash=keep_login_hash)
        return int(others.revoke(remote_addr=remote_addr))

    def mark_in_use(self, pk: int, in_use: bool) -> None:
        """Note whether the open session ``pk`` is in use (:mod:`mcp_sessions.eviction`); a closed one is left as is."""
        self.filter(pk=pk, closed_at__isnull=True).update(in_use=in_use)

    def record_activity(self, changes: dict[int, dict[str, Any] | None]) -> tuple[set[int], set[int]]:
        """Save live sessions' new activity (by pk): which of them are still open, and whose changes were written.

        Each session's write stands alone. One that fails (a value its row
        refuses) is logged with the session's reference and left out of the
        written ones, so that it is tried again at the next sweep, while the
        others are saved and the session still counts as open. A lost
        connection is no one row's fault: it is raised, and the next sweep
        tries them all again.
        """
        pks = list(changes)
        refs: dict[int, str] = {}
        for start in range(0, len(pks), 500):  # within every database's limit on query parameters
            chunk = pks[start : start + 500]
            refs.update(self.filter(pk__in=chunk, closed_at__isnull=True).values_list("pk", "id_hash"))
        still_open, written = set(refs), set()
        for pk, fields in changes.items():
            if not fields or pk not in still_open:
                continue
            try:
                with self._isolated():
                    updated = self.filter(pk=pk, closed_at__isnull=True).update(**clean_fields(self.model, fields))
            except OperationalError:
                raise
            except Exception as exc:
                logger.error(
                    "Could not save the activity of MCP session %s (%s); retrying at the next sweep",
                    public_ref(refs[pk]),
                    error_summary(exc),
                )
                continue
            if updated:
                written.add(pk)
            else:
                still_open.discard(pk)  # closed since the query above
        return still_open, written

    def _isolated(self) -> contextlib.AbstractContextManager[object]:
        """A savepoint when called inside a transaction, which one failed statement would otherwise abort.

        In autocommit, each statement is a transaction of its own already:
        no extra round trips per row for the sweep.
        """
        if transaction.get_connection(self.db).in_atomic_block:
            return transaction.atomic(using=self.db)
        return contextlib.nullcontext()

    def close(self, pk: int, reason: str, changes: dict[str, Any] | None) -> str:
        """Close the record for ``reason`` unless already closed; the reason it ends up with."""
        changes = clean_fields(self.model, changes or {})
        if self.filter(pk=pk, closed_at__isnull=True).update(closed_at=timezone.now(), close_reason=reason, **changes):
            return reason
        if changes:
            self.filter(pk=pk).update(**changes)
        return self.filter(pk=pk).values_list("close_reason", flat=True).first() or reason

    def close_hostless(self, worker_id: str, live: Collection[int], created_before: datetime) -> list[_M]:
        """Close (``host_lost``) the records open on ``worker_id`` created before ``created_before``, but ``live``.

        ``live`` are the pks of the sessions the worker runs. A record open on
        it with no live session will never be closed by it otherwise: its
        session was lost between the insert and its host, or after the host.
        Returns the records closed, as they were (for the audit).
        """
        open_here = self.open().filter(worker_id=worker_id, created_at__lt=created_before)
        lost = [pk for pk in open_here.values_list("pk", flat=True) if pk not in live]
        closed: list[_M] = []
        now = timezone.now()
        for start in range(0, len(lost), 500):  # within every database's limit on query parameters
            for record in self.filter(pk__in=lost[start : start + 500]).only("pk", "id_hash", "user_id", "remote_addr"):
                # One row at a time: only what this call closed is returned, not a record revoked meanwhile.
                if self.filter(pk=record.pk, closed_at__isnull=True).update(
                    closed_at=now, close_reason=CloseReason.HOST_LOST
                ):
                    closed.append(record)
        return closed


class AuditEventManager(models.Manager[_M]):
    def clear_expired(self, days: float) -> int:
        """Delete the events older than ``days``; how many."""
        deleted, _ = self.filter(created_at__lt=timezone.now() - timedelta(days=days)).delete()
        return deleted
