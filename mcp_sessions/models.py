"""The ownership record of every MCP session.

A row is written when a stream opens and closed when it ends. It ties the
session to the user who opened it (the binding checked on every request) and
to the channel-layer address of the worker that runs it. The session ID itself
is never stored: only its SHA-256 (:mod:`mcp_sessions.ids`).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .batched_models import CallerColumns as CallerColumns
from .batched_models import CallRecord as CallRecord
from .batched_models import ClientUsage as ClientUsage
from .choices import AuditKind as AuditKind  # part of the models' API: the kind column's choices
from .choices import CallOutcome as CallOutcome
from .choices import CloseReason as CloseReason
from .choices import CredentialKind as CredentialKind
from .choices import TokenState as TokenState
from .choices import Transport as Transport
from .ids import TOKEN_PREFIX_LENGTH, public_ref
from .lengths import DETAIL_LENGTH, USERNAME_LENGTH
from .managers import AuditEventManager, McpSessionManager
from .managers import McpSessionQuerySet as McpSessionQuerySet
from .managers import SessionLimitReached as SessionLimitReached
from .managers import error_summary as error_summary
from .tickets import StreamTicketManager
from .tokens import AccessTokenManager, _token_is_active
from .tokens import AccessTokenQuerySet as AccessTokenQuerySet
from .usage import ClientUsageQuerySet as ClientUsageQuerySet
from .usage import UsageRow as UsageRow

logger = logging.getLogger("mcp_gateway")


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
    scopes = models.JSONField(
        _("scopes"),
        default=list,
        blank=True,
        help_text=_(
            "What the token may reach besides its user's permissions: mcp:tools:<name> for one tool, mcp:tools, "
            "mcp:resources, mcp:prompts, mcp. Empty: everything its user may use."
        ),
    )

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
    def scope_set(self) -> frozenset[str] | None:
        """The token's scopes, or None when it has none (it reaches what its user may use)."""
        return frozenset(self.scopes) if self.scopes else None

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
    credential_ref = models.CharField(
        _("credential reference"),
        max_length=64,
        blank=True,
        db_index=True,
        editable=False,
        help_text=_(
            "What issued the credential that opened it, when neither a token nor a login (an OAuth grant), "
            "so that revoking it ends the session."
        ),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    last_seen_at = models.DateTimeField(_("last seen"), default=timezone.now)
    closed_at = models.DateTimeField(_("closed"), null=True, blank=True, db_index=True)
    close_reason = models.CharField(_("close reason"), max_length=30, choices=CloseReason.choices, blank=True)
    messages_in = models.PositiveBigIntegerField(_("messages in"), default=0)
    messages_out = models.PositiveBigIntegerField(_("messages out"), default=0)
    in_use = models.BooleanField(
        _("in use"),
        default=False,
        editable=False,
        help_text=_(
            "Holds an open stream, or had a request in progress when its worker last looked: never closed to make "
            "room for another session of its user."
        ),
    )
    # Of a listen stream (transport "listen") only: what it subscribed to, and when it was last sent an event.
    listen_filter = models.JSONField(
        _("listen filter"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The events a listen stream subscribed to (the filter its server acknowledged)."),
    )
    last_event_at = models.DateTimeField(_("last event"), null=True, blank=True)

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


class StreamTicket(models.Model):
    """A short-lived, single-use credential for opening one stream (what a browser's EventSource can carry)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name=_("user")
    )
    ticket_hash = models.CharField(_("ticket hash"), max_length=64, unique=True, editable=False)
    origin = models.CharField(_("origin"), max_length=400, blank=True)
    token = models.ForeignKey(AccessToken, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    login_session_hash = models.CharField(max_length=64, blank=True, editable=False)
    # What issued the credential that asked for it (see McpSession.credential_ref): revoking that voids it.
    credential_ref = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
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
