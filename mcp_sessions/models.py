"""The ownership record of every MCP session.

A row is written when a stream opens and closed when it ends. It ties the
session to the user who opened it (the binding checked on every request) and
to the channel-layer address of the worker that runs it. The session ID itself
is never stored: only its SHA-256 (:mod:`mcp_sessions.ids`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import audit
from .audit import DETAIL_LENGTH, USERNAME_LENGTH
from .audit import AuditKind as AuditKind  # part of the models' API: the kind column's choices
from .ids import (
    TOKEN_PREFIX_LENGTH,
    hash_token,
    is_ticket_shaped,
    is_token_shaped,
    new_ticket,
    new_token,
    public_ref,
)
from .signals import sessions_revoked
from .text import clean_fields

logger = logging.getLogger("mcp_gateway")

LAST_USED_RESOLUTION = timedelta(minutes=1)


def error_summary(exc: BaseException) -> str:
    """A database error's class and first line, for logs.

    Not the rest: PostgreSQL details a refused row with all its values
    (``Failing row contains (...)``), hashes of credentials among them.
    """
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


_M = TypeVar("_M", bound=models.Model)


class OwnedQuerySet(models.QuerySet[_M]):
    def for_user(self, user: Any) -> Any:
        """Rows owned by ``user``; nobody else's ever leaves this queryset."""
        if not getattr(user, "is_authenticated", False):
            return self.none()
        return self.filter(user=user)


class TokenState(models.TextChoices):
    """What an access token is now: :attr:`AccessToken.state`, and the admin's filter."""

    ACTIVE = "active", _("Active")
    EXPIRED = "expired", _("Expired")
    REVOKED = "revoked", _("Revoked")


def _token_is_active(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> bool:
    """The one rule of an active token, for a row in memory; :func:`_active_token_q` says it to the database."""
    return revoked_at is None and (expires_at is None or expires_at > now)


def _active_token_q(now: datetime) -> models.Q:
    """:func:`_token_is_active` as a filter: not revoked, and no expiry or one still ahead."""
    return models.Q(revoked_at__isnull=True) & (models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class AccessTokenQuerySet(OwnedQuerySet["AccessToken"]):
    def active(self) -> AccessTokenQuerySet:
        """Neither revoked nor expired (:attr:`AccessToken.is_active`); whoever owns them."""
        return self.filter(_active_token_q(timezone.now()))

    def expired(self) -> AccessTokenQuerySet:
        """Not revoked, but past their expiry."""
        return self.filter(revoked_at__isnull=True, expires_at__lte=timezone.now())

    def revoked(self) -> AccessTokenQuerySet:
        return self.filter(revoked_at__isnull=False)

    def in_state(self, state: str) -> AccessTokenQuerySet:
        """The tokens in ``state`` (a :class:`TokenState`)."""
        by_state = {TokenState.ACTIVE: self.active, TokenState.EXPIRED: self.expired, TokenState.REVOKED: self.revoked}
        return by_state[TokenState(state)]()

    def usable(self) -> AccessTokenQuerySet:
        """Active, and owned by an active user: the tokens that authenticate."""
        return self.active().filter(user__is_active=True)

    def revoke(self) -> tuple[int, int]:
        """Revoke those not revoked yet and end the sessions opened with them: how many of each.

        A bulk update sends no ``post_save``, so the sessions are ended here
        (:meth:`McpSessionQuerySet.revoke`), not by the token receiver.
        """
        pks = list(self.filter(revoked_at__isnull=True).values_list("pk", flat=True))
        if not pks:
            return 0, 0
        self.model._default_manager.filter(pk__in=pks).update(revoked_at=timezone.now())
        return len(pks), McpSession.objects.filter(token__in=pks).revoke()


_AccessTokenBaseManager = models.Manager.from_queryset(AccessTokenQuerySet)


class AccessTokenManager(_AccessTokenBaseManager["AccessToken"]):
    def issue(
        self, user: Any, name: str, expires_in: timedelta | None = None, *, expires_at: datetime | None = None
    ) -> tuple[AccessToken, str]:
        """Create a token, expiring after ``expires_in`` or at ``expires_at`` (or never); the secret is returned once.

        Only its prefix and hash are stored. Who may create a token for whom is
        the caller's to decide (the admin: :func:`mcp_sessions.admin.token_refusal`).
        """
        if expires_in is not None and expires_at is not None:
            raise ValueError("Give expires_in or expires_at, not both")
        secret = new_token()
        token = self.create(
            user=user,
            name=name,
            prefix=secret[:TOKEN_PREFIX_LENGTH],
            token_hash=hash_token(secret),
            expires_at=timezone.now() + expires_in if expires_in else expires_at,
        )
        return token, secret

    def find_usable(self, secret: str) -> AccessToken | None:
        """The usable token with this secret, found by its hash and compared in constant time."""
        if not is_token_shaped(secret):
            return None
        digest = hash_token(secret)
        token = self.usable().select_related("user").filter(token_hash=digest).first()
        if token is None or not hmac.compare_digest(token.token_hash, digest):
            return None
        return token

    def authenticate(self, secret: str) -> AccessToken | None:
        """:meth:`find_usable`, noting the use at most once a minute (not a write per request)."""
        token = self.find_usable(secret)
        now = timezone.now()
        if token is not None and (token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION):
            self.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token


class AccessToken(models.Model):
    """A personal access token: a bearer credential owned by one user, for clients without a browser."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mcp_tokens", verbose_name=_("user")
    )
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=TOKEN_PREFIX_LENGTH, editable=False)
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    objects = AccessTokenManager()

    class Meta:
        verbose_name = _("MCP access token")
        verbose_name_plural = _("MCP access tokens")
        ordering = ("-created_at",)
        permissions = [("issue_token_for_others", _("Can create MCP access tokens for other users"))]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        """Neither revoked nor expired: the rule of :meth:`AccessTokenQuerySet.active`, for this row."""
        return _token_is_active(self.revoked_at, self.expires_at, timezone.now())

    @property
    def state(self) -> TokenState:
        if self.revoked_at is not None:
            return TokenState.REVOKED
        return TokenState.ACTIVE if self.is_active else TokenState.EXPIRED


class Worker(models.Model):
    """A gateway process that holds streams. Its heartbeat is the lease of every session it runs."""

    id = models.CharField(_("id"), max_length=32, primary_key=True)
    hostname = models.CharField(_("host"), max_length=200)
    pid = models.PositiveIntegerField(_("process id"))
    started_at = models.DateTimeField(_("started"), default=timezone.now)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("gateway worker")
        verbose_name_plural = _("gateway workers")

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class Transport(models.TextChoices):
    SSE = "sse", _("HTTP+SSE")
    STREAMABLE_HTTP = "streamable_http", _("Streamable HTTP")


class CloseReason(models.TextChoices):
    """Why a session ended (``McpSession.close_reason``), or why one of its streams did (the last three).

    ``COMPLETE``, ``REPLACED`` and ``BUSY`` end a stream, not its session: its
    answers are all sent, another stream took its place, or the session already
    has one. They are the reasons the gateway gives its stream outlets, and are
    members here so that every reason is spelled once.
    """

    CLIENT_DISCONNECT = "client_disconnect", _("Client disconnected")
    SERVER_SHUTDOWN = "server_shutdown", _("Server shut down")
    SERVER_ENDED = "server_ended", _("MCP server ended the session")
    SERVER_ERROR = "server_error", _("MCP server failed")
    STALLED = "stalled", _("Client stopped reading")
    REVOKED = "revoked", _("Revoked")
    EXPIRED = "expired", _("Expired")
    WORKER_LOST = "worker_lost", _("Worker stopped answering")
    TERMINATED = "terminated", _("Ended by the client")
    EVENTS_LOST = "events_lost", _("Missed events could not be replayed")
    HOST_LOST = "host_lost", _("No live session in its worker")
    COMPLETE = "complete", _("Stream complete")
    REPLACED = "replaced", _("Stream replaced by another")
    BUSY = "busy", _("Session already has a stream")


class McpSessionQuerySet(OwnedQuerySet["McpSession"]):
    def open(self) -> McpSessionQuerySet:
        return self.filter(closed_at__isnull=True)

    def closed(self) -> McpSessionQuerySet:
        return self.filter(closed_at__isnull=False)

    def leased(self, lease: float) -> McpSessionQuerySet:
        """Sessions whose worker has sent a heartbeat within ``lease`` seconds (or that have no worker)."""
        fresh = timezone.now() - timedelta(seconds=lease)
        return self.filter(models.Q(worker__isnull=True) | models.Q(worker__heartbeat_at__gte=fresh))

    def orphaned(self, lease: float) -> McpSessionQuerySet:
        """Open sessions whose worker has missed its lease: it crashed or hangs."""
        stale = timezone.now() - timedelta(seconds=lease)
        return self.open().filter(models.Q(worker__heartbeat_at__lt=stale))

    def revoke(self, reason: str = CloseReason.REVOKED) -> int:
        """Close the open ones among these sessions now, and have their live sessions ended; returns how many.

        The records are marked closed, which already makes every later POST
        to them 404, and each is recorded in the audit trail; once that has
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
            audit.record(AuditKind.SESSION_REVOKED, user_id=user_id, session_ref=public_ref(id_hash), detail=reason)
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
    sessions_revoked.send_robust(McpSession, by_worker=by_worker, reason=reason)


class SessionLimitReached(Exception):
    """The user already has as many open sessions as allowed."""


_McpSessionBaseManager = models.Manager.from_queryset(McpSessionQuerySet)


class McpSessionManager(_McpSessionBaseManager["McpSession"]):
    """Every write of a session record cleans its values first (:mod:`mcp_sessions.text`): many are the client's."""

    def open_for(self, user: Any, *, limit: int | None, lease: float, **fields: Any) -> McpSession:
        """Record a new session for ``user``, unless they already have ``limit`` open ones.

        Counting and inserting happen in one transaction with the user's row
        locked, so concurrent opens on several workers cannot overshoot.
        """
        fields = clean_fields(self.model, fields)
        with transaction.atomic():
            if limit is not None:
                get_user_model()._default_manager.select_for_update().filter(pk=user.pk).exists()
                if self.filter(user=user).open().leased(lease).count() >= limit:
                    raise SessionLimitReached()
            return self.create(user=user, **fields)

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

    def close_hostless(self, worker_id: str, live: Collection[int], created_before: datetime) -> list[McpSession]:
        """Close (``host_lost``) the records open on ``worker_id`` created before ``created_before``, but ``live``.

        ``live`` are the pks of the sessions the worker runs. A record open on
        it with no live session will never be closed by it otherwise: its
        session was lost between the insert and its host, or after the host.
        Returns the records closed, as they were (for the audit).
        """
        open_here = self.open().filter(worker_id=worker_id, created_at__lt=created_before)
        lost = [pk for pk in open_here.values_list("pk", flat=True) if pk not in live]
        closed: list[McpSession] = []
        now = timezone.now()
        for start in range(0, len(lost), 500):  # within every database's limit on query parameters
            for record in self.filter(pk__in=lost[start : start + 500]).only("pk", "id_hash", "user_id", "remote_addr"):
                # One row at a time: only what this call closed is returned, not a record revoked meanwhile.
                if self.filter(pk=record.pk, closed_at__isnull=True).update(
                    closed_at=now, close_reason=CloseReason.HOST_LOST
                ):
                    closed.append(record)
        return closed


class McpSession(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="mcp_sessions",
        verbose_name=_("user"),
    )
    id_hash = models.CharField(_("session ID hash"), max_length=64, unique=True, editable=False)
    # Named "server" in the public model API; it holds the mount's URL prefix, not the MCP server object.
    server = models.CharField(
        _("mount prefix"),
        max_length=200,
        help_text=_("URL prefix of the mount that serves the session, e.g. /mcp/ (not the MCP server itself)."),
    )
    transport = models.CharField(_("transport"), max_length=20, choices=Transport.choices)
    channel_name = models.CharField(
        _("worker channel"),
        max_length=200,
        editable=False,
        help_text=_("Channel-layer address of the worker that runs the session (its inbox)."),
    )
    worker = models.ForeignKey(
        Worker,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="sessions",
        verbose_name=_("worker"),
        help_text=_("The process running the session; its heartbeat is the session's lease."),
    )
    client_name = models.CharField(_("client name"), max_length=200, blank=True)
    client_version = models.CharField(_("client version"), max_length=100, blank=True)
    protocol_version = models.CharField(_("protocol version"), max_length=40, blank=True)
    remote_addr = models.GenericIPAddressField(_("remote address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=400, blank=True)
    origin = models.CharField(_("origin"), max_length=400, blank=True)
    token = models.ForeignKey(
        AccessToken,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="sessions",
        verbose_name=_("access token"),
        help_text=_("The token the session was opened with; empty for the login cookie."),
    )
    login_session_hash = models.CharField(
        _("login session hash"),
        max_length=64,
        blank=True,
        db_index=True,
        editable=False,
        help_text=_("SHA-256 of the Django session key that opened it, so logging out ends it."),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    last_seen_at = models.DateTimeField(_("last seen"), default=timezone.now)
    closed_at = models.DateTimeField(_("closed"), null=True, blank=True, db_index=True)
    close_reason = models.CharField(_("close reason"), max_length=30, choices=CloseReason.choices, blank=True)
    messages_in = models.PositiveBigIntegerField(_("messages in"), default=0)
    messages_out = models.PositiveBigIntegerField(_("messages out"), default=0)

    objects = McpSessionManager()

    class Meta:
        verbose_name = _("MCP session")
        verbose_name_plural = _("MCP sessions")
        ordering = ("-created_at",)
        permissions = [("revoke_mcpsession", _("Can revoke MCP sessions"))]
        indexes = [models.Index(fields=("user", "closed_at"), name="mcp_session_user_open")]

    def __str__(self) -> str:
        return f"{self.ref} ({self.transport})"

    @property
    def ref(self) -> str:
        """Non-secret handle for logs and admin."""
        return public_ref(self.id_hash)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class AuditEventManager(models.Manager["AuditEvent"]):
    def clear_expired(self, days: float) -> int:
        """Delete the events older than ``days``; how many."""
        deleted, _ = self.filter(created_at__lt=timezone.now() - timedelta(days=days)).delete()
        return deleted


class AuditEvent(models.Model):
    """A security-relevant event: a refusal, or a session opened, closed or revoked.

    Sessions are named by their public reference (a prefix of the ID's hash),
    never by ID; no credential or message body is ever recorded.
    """

    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    kind = models.CharField(_("event"), max_length=30, choices=AuditKind.choices, db_index=True)
    # No database constraint: an audit row written while its user is being deleted must never block or break
    # the deletion. ``username`` keeps the row readable once the user is gone.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        verbose_name=_("user"),
    )
    username = models.CharField(_("username"), max_length=USERNAME_LENGTH, blank=True)
    remote_addr = models.GenericIPAddressField(_("remote address"), null=True, blank=True)
    session_ref = models.CharField(_("session"), max_length=12, blank=True)
    detail = models.CharField(_("detail"), max_length=DETAIL_LENGTH, blank=True)

    objects = AuditEventManager()

    class Meta:
        verbose_name = _("MCP audit event")
        verbose_name_plural = _("MCP audit events")
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.created_at:%Y-%m-%d %H:%M:%S}"


def _session_auth_digests(user: Any) -> list[str]:
    """SHA-256 digests of the session auth hashes ``user`` has now: with ``SECRET_KEY`` first, then its fallbacks.

    A ticket stores a digest, not the hash: the hash is what a login session
    keeps to prove it predates no password change. Empty for a user model
    without session auth hashes (Django then verifies none either).
    """
    if not hasattr(user, "get_session_auth_hash"):
        return []
    hashes = [user.get_session_auth_hash()]
    if hasattr(user, "get_session_auth_fallback_hash"):
        hashes.extend(user.get_session_auth_fallback_hash())
    return [hashlib.sha256(value.encode()).hexdigest() for value in hashes]


class StreamTicketManager(models.Manager["StreamTicket"]):
    def clear_expired(self) -> int:
        """Delete the tickets past their expiry, used or not (a used one can never be used again anyway); how many."""
        deleted, _ = self.filter(expires_at__lt=timezone.now()).delete()
        return deleted

    def issue(self, user: Any, *, origin: str, lifetime: float, token_id: int | None, login_session_hash: str) -> str:
        """A new ticket for ``user``, bound to ``origin`` (possibly empty); returned once, stored hashed.

        It remembers the credential that asked for it, so that logging out or
        revoking that token also ends the stream the ticket opens; asked for
        with a login, also the user's session auth hash, so that a password
        change since voids it (as it logs out the user's other logins).
        """
        secret = new_ticket()
        auth_digests = _session_auth_digests(user) if login_session_hash else []
        self.create(
            user=user,
            ticket_hash=hash_token(secret),
            origin=origin,
            expires_at=timezone.now() + timedelta(seconds=lifetime),
            token_id=token_id,
            login_session_hash=login_session_hash,
            session_auth_hash=auth_digests[0] if auth_digests else "",
        )
        return secret

    def redeem(self, secret: str, origin: str) -> StreamTicket | None:
        """A valid, unused, unexpired ticket, now used up; else None.

        A ticket asked for from an origin is refused when presented with another
        ``Origin``. One presented with none is accepted: browsers send no Origin on
        a same-origin ``EventSource``, while cross-origin ones always carry it.
        One asked for with a token is refused once the token is not active; with a
        login, once the user's session auth hash changed (a password change, even
        one saved without signals). Logging out deletes the login's tickets.
        """
        if not is_ticket_shaped(secret):
            return None
        now = timezone.now()
        usable = self.filter(ticket_hash=hash_token(secret), used_at__isnull=True, expires_at__gt=now)
        ticket = usable.select_related("user", "token").first()
        if ticket is None or not ticket.user.is_active:
            return None
        if ticket.origin and origin and not hmac.compare_digest(ticket.origin, origin):
            return None
        if ticket.token is not None and not ticket.token.is_active:
            return None
        if ticket.login_session_hash and not _login_still_holds(ticket):
            return None
        # The conditional update is what makes a ticket single-use under concurrency.
        if not usable.filter(pk=ticket.pk).update(used_at=now):
            return None
        return ticket


def _login_still_holds(ticket: StreamTicket) -> bool:
    """Whether the user's session auth hash is still the one the ticket was issued under (no password change)."""
    current = _session_auth_digests(ticket.user)
    if not current:
        return not ticket.session_auth_hash
    return any(hmac.compare_digest(ticket.session_auth_hash, digest) for digest in current)


class StreamTicket(models.Model):
    """A short-lived, single-use credential for opening one stream (what a browser's EventSource can carry)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name=_("user")
    )
    ticket_hash = models.CharField(_("ticket hash"), max_length=64, unique=True, editable=False)
    origin = models.CharField(_("origin"), max_length=400, blank=True)
    token = models.ForeignKey(AccessToken, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    login_session_hash = models.CharField(max_length=64, blank=True, editable=False)
    # SHA-256 of the user's session auth hash when the ticket was issued: a password change since voids it.
    session_auth_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires"), db_index=True)
    used_at = models.DateTimeField(_("used"), null=True, blank=True)

    objects = StreamTicketManager()

    class Meta:
        verbose_name = _("MCP stream ticket")
        verbose_name_plural = _("MCP stream tickets")

    def __str__(self) -> str:
        return f"stream ticket for {self.user} ({'used' if self.used_at else 'unused'})"
