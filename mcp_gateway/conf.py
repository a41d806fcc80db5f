"""The gateway's settings, read lazily from ``django.conf.settings``.

Every setting is a top-level Django setting prefixed ``MCP_GATEWAY_``; this
module is the only place that reads them, so defaults live in one table and
``override_settings`` works in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # Dotted path to the MCP server object (an ``MCPServer`` or a low-level ``Server``).
    "SERVER": None,
    # URL prefix the routes are mounted under; must start and end with "/".
    "PREFIX": "/mcp/",
    # Extra origins (``scheme://host[:port]``) allowed besides the site's own.
    "ALLOWED_ORIGINS": (),
    # Largest accepted request body in bytes (POST; GET and DELETE take none); larger ones get 413 unbuffered.
    "MAX_BODY_SIZE": 4 * 1024 * 1024,
    # Seconds a request to the gateway may take to arrive whole, headers and body, under python -m
    # mcp_gateway.daphne; later it gets 408 and its connection is closed. Streams are not affected (a GET has
    # arrived once its headers have). None: no bound.
    "BODY_TIMEOUT": 30.0,
    # Authenticators tried in order; the first that recognises a credential wins.
    "AUTHENTICATORS": (
        "mcp_gateway.auth.BearerTokenAuthenticator",
        "mcp_gateway.auth.SessionCookieAuthenticator",
    ),
    # Channel layer alias used to reach a session's stream.
    "CHANNEL_LAYER": "default",
    # Seconds between keep-alive comments on an idle stream.
    "PING_INTERVAL": 15.0,
    # Server messages a session may have waiting for a slow client.
    "OUTBOUND_QUEUE_SIZE": 32,
    # Client requests a session may have in progress; more are answered with an error.
    "MAX_REQUESTS_IN_FLIGHT": 32,
    # Client messages a session may have waiting for the MCP server.
    "INBOUND_QUEUE_SIZE": 64,
    # Events kept per session for clients resuming a dropped stream with Last-Event-ID.
    "EVENT_BUFFER_SIZE": 100,
    # Bytes of event data kept per session for those clients, oldest dropped first; a request's reply sent as a
    # plain JSON response is never kept, and an event larger than this is sent but not kept.
    "EVENT_BUFFER_BYTES": 4 * 1024 * 1024,
    # Seconds an HTTP+SSE session waits for its dropped stream to be resumed before it is closed.
    "RESUME_TIMEOUT": 30.0,
    # Seconds a stream may stay unwritable before it is closed as stalled.
    "STALL_TIMEOUT": 10.0,
    # Seconds without a client message before a session is closed; None: never.
    "IDLE_TIMEOUT": 3600.0,
    # Seconds a session may live at most (a token's own expiry may end it sooner); None: no limit.
    "MAX_LIFETIME": 86400.0,
    # Open sessions a user may have at once; None: no limit.
    "MAX_SESSIONS_PER_USER": 20,
    # Seconds a request to a session running in the worker that takes it may rely on the last database check
    # of its credential, when it presents the very credential that opened the session (revoking that credential
    # ends the session at once anyway); 0: check the database on every request.
    "RECHECK_INTERVAL": 5.0,
    # POSTs a user may make: (count, seconds), e.g. 600 per 60 s; None: no limit.
    "RATE_LIMIT": (600, 60),
    # Cache alias counting POSTs; must be shared by all workers (Redis, Memcached, database).
    "CACHE": "default",
    # Seconds a stream ticket stays valid.
    "TICKET_LIFETIME": 60.0,
    # Require a ticket for every stream opened by a browser (a GET carrying an Origin header).
    "REQUIRE_TICKET_FOR_BROWSERS": False,
    # Seconds a worker may go without a heartbeat before its sessions count as lost (it beats every third).
    "LEASE_TIMEOUT": 45.0,
    # Days a closed session's record is kept before clear_mcp_sessions deletes it.
    "SESSION_RETENTION_DAYS": 30,
    # Days audit events are kept before clear_mcp_sessions deletes them.
    "AUDIT_RETENTION_DAYS": 90,
    # Audit rows stored per event kind and client address per minute in each worker; the rest are only logged.
    "AUDIT_ROWS_PER_MINUTE": 30,
}


class GatewaySettings:
    """Attribute access to ``MCP_GATEWAY_<NAME>`` settings with defaults.

    Values are read from Django's settings on first access and kept; a change
    of any setting (``override_settings`` in tests sends ``setting_changed``)
    clears them, so a test always sees its own values.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"No gateway setting named {name!r}")
        try:
            return self._cache[name]
        except KeyError:
            value = self._cache[name] = getattr(django_settings, f"MCP_GATEWAY_{name}", DEFAULTS[name])
            return value

    def reload(self) -> None:
        self._cache.clear()


gateway_settings = GatewaySettings()


def _reload(**kwargs: Any) -> None:
    gateway_settings.reload()


setting_changed.connect(_reload, dispatch_uid="mcp_gateway.conf.reload")
