"""The rows the workers write in batches about who called: client usage and the call records.

Split from :mod:`mcp_sessions.models`, which imports them from here (import
them from there): both are named by their caller (:class:`CallerColumns`)
and written off the request's path, by :mod:`mcp_sessions.usage` and
:mod:`mcp_sessions.calls`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from .calls import CallRecordManager
from .choices import CallOutcome, CredentialKind, Transport
from .lengths import ARGUMENTS_DIGEST_LENGTH, NAME_LENGTH, USERNAME_LENGTH
from .usage import ClientUsageManager


class CallerColumns(models.Model):
    """Who a batched row is about: its user (with a username snapshot) and the credential they used.

    No database constraints, as for audit events: a batch written while its
    user (or token) is being deleted must never fail or block the deletion;
    ``username`` keeps the row readable once the user is gone. A credential
    is named by its kind and the start of its digest, never by a secret.
    """

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
    credential_kind = models.CharField(_("credential"), max_length=10, choices=CredentialKind.choices)
    credential_ref = models.CharField(
        _("credential reference"),
        max_length=12,
        blank=True,
        help_text=_("Start of the credential's digest: tells a user's logins and tokens apart, reveals neither."),
    )
    token = models.ForeignKey(
        "mcp_sessions.AccessToken",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        verbose_name=_("access token"),
    )

    class Meta:
        abstract = True


class ClientUsage(CallerColumns):
    """How much one user called MCP with one credential and one client: who uses MCP without sessions.

    Written in batches by the workers (:mod:`mcp_sessions.usage`), never per
    request. The credential is named by its kind and a short prefix of its
    digest (a login's is the prefix of the ``login_session_hash`` its sessions
    store), never by a secret; a token's row also links the token.
    """

    client_name = models.CharField(_("client name"), max_length=200, blank=True)
    client_version = models.CharField(_("client version"), max_length=100, blank=True)
    protocol_version = models.CharField(_("protocol version"), max_length=40, blank=True)
    first_seen = models.DateTimeField(_("first seen"), default=timezone.now)
    last_seen = models.DateTimeField(_("last seen"), default=timezone.now, db_index=True)
    requests = models.PositiveBigIntegerField(_("requests"), default=0)
    refusals = models.PositiveBigIntegerField(
        _("refusals"), default=0, help_text=_("How many of these requests the gateway refused.")
    )

    objects = ClientUsageManager()

    class Meta:
        verbose_name = _("MCP client usage")
        verbose_name_plural = _("MCP client usage")
        ordering = ("-last_seen", "-pk")
        constraints = [
            models.UniqueConstraint(
                fields=("user", "credential_ref", "client_name", "client_version", "protocol_version"),
                name="mcp_client_usage_unique",
            )
        ]

    def __str__(self) -> str:
        client = " ".join(filter(None, (self.client_name, self.client_version))) or "?"
        return f"{self.username or '?'} with {Truncator(client).chars(30)}"


class CallRecord(CallerColumns):
    """One ``tools/call``, ``resources/read`` or ``prompts/get``: who, with what credential, what, how it ended.

    Written in batches by the workers (:mod:`mcp_sessions.calls`), never on the request's path. The arguments are
    named by a digest (SHA-256 of their canonical JSON); they are stored only through the site's redaction hook
    (``MCP_GATEWAY_CALL_ARGUMENTS``). No secret, no credential, no result is stored: the result's size is.
    """

    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    client_id = models.CharField(_("OAuth client"), max_length=200, blank=True)
    session_ref = models.CharField(
        _("session"), max_length=12, blank=True, help_text=_("Empty for a 2026-07-28 request, which has none.")
    )
    request_id = models.CharField(_("request id"), max_length=40, blank=True)
    server = models.CharField(_("mount"), max_length=200)
    transport = models.CharField(_("transport"), max_length=20, choices=Transport.choices)
    protocol_version = models.CharField(_("protocol version"), max_length=40, blank=True)
    method = models.CharField(_("method"), max_length=20)
    name = models.CharField(_("name"), max_length=NAME_LENGTH, db_index=True, help_text=_("Tool, prompt or URI."))
    arguments_digest = models.CharField(_("arguments digest"), max_length=ARGUMENTS_DIGEST_LENGTH)
    arguments = models.JSONField(
        _("arguments"),
        null=True,
        blank=True,
        help_text=_("Only what the site's redaction hook kept, when MCP_GATEWAY_CALL_ARGUMENTS names one."),
    )
    outcome = models.CharField(_("outcome"), max_length=10, choices=CallOutcome.choices, db_index=True)
    error_code = models.IntegerField(_("JSON-RPC error code"), null=True, blank=True)
    duration_ms = models.FloatField(_("duration (ms)"))
    result_size = models.PositiveIntegerField(_("result size (bytes)"), default=0)

    objects = CallRecordManager()

    class Meta:
        verbose_name = _("MCP call")
        verbose_name_plural = _("MCP calls")
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return f"{Truncator(self.name).chars(40)} by {self.username or '?'} at {self.created_at:%Y-%m-%d %H:%M:%S}"
