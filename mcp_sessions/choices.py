"""The choices of the model app's fields, shared by the models and their managers."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class TokenState(models.TextChoices):
    """What an access token is now: :attr:`AccessToken.state`, and the admin's filter."""

    ACTIVE = "active", _("Active")
    EXPIRED = "expired", _("Expired")
    REVOKED = "revoked", _("Revoked")


class Transport(models.TextChoices):
    """How a session's client reaches it; ``LISTEN`` records a ``subscriptions/listen`` stream (no session ID)."""

    SSE = "sse", _("HTTP+SSE")
    STREAMABLE_HTTP = "streamable_http", _("Streamable HTTP")
    LISTEN = "listen", _("Listen stream (2026-07-28)")


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
    EVICTED = "evicted", _("Closed to make room for another session of its user")
    COMPLETE = "complete", _("Stream complete")
    REPLACED = "replaced", _("Stream replaced by another")
    BUSY = "busy", _("Session already has a stream")


class CredentialKind(models.TextChoices):
    """What a caller presented (``ClientUsage.credential_kind``): the site's login, an access token, another."""

    LOGIN = "login", _("Login")
    TOKEN = "token", _("Access token")
    OTHER = "other", _("Other")


class CallOutcome(models.TextChoices):
    """How a tools/call, resources/read or prompts/get ended (``CallRecord.outcome``)."""

    OK = "ok", _("OK")
    TOOL_ERROR = "tool_error", _("Tool error")
    REFUSED = "refused", _("Refused")
    FAILED = "failed", _("Failed")


class AuditKind(models.TextChoices):
    """What an audit event records (:class:`~mcp_sessions.models.AuditEvent`'s kind): see :mod:`mcp_sessions.audit`."""

    SESSION_OPENED = "session_opened", _("Session opened")
    SESSION_CLOSED = "session_closed", _("Session closed")
    SESSION_REVOKED = "session_revoked", _("Session revoked")
    FOREIGN_SESSION = "foreign_session", _("Another user's session named")
    ORIGIN_REFUSED = "origin_refused", _("Origin refused")
    HOST_REFUSED = "host_refused", _("Host refused")
    INVALID_TOKEN = "invalid_token", _("Invalid or revoked token")
    INVALID_TICKET = "invalid_ticket", _("Invalid, used or expired stream ticket")
    CSRF_FAILED = "csrf_failed", _("CSRF check failed")
    RATE_LIMITED = "rate_limited", _("Rate limited")
    SESSION_LIMIT = "session_limit", _("Session limit reached")
    PAYLOAD_TOO_LARGE = "payload_too_large", _("Body too large")
    REQUEST_STATE_REFUSED = "request_state_refused", _("Multi-round-trip request state refused")
    INSUFFICIENT_SCOPE = "insufficient_scope", _("OAuth token lacks a needed scope")
    TOKEN_CREATED = "token_created", _("Access token created")
    TOKEN_REVOKED = "token_revoked", _("Access token revoked")
    APP_REVOKED = "app_revoked", _("Connected app's access revoked")
