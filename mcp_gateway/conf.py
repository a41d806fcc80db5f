"""The gateway's settings, read lazily from ``django.conf.settings``.

Every setting is a top-level Django setting prefixed ``MCP_GATEWAY_``; this
module is the only place that reads them, so defaults live in one table and
``override_settings`` works in tests.

``gateway_settings.<NAME>`` is typed: each setting is a :class:`Setting`
declared once below with its type, default and meaning. A value is read from
Django's settings at its first use and then kept in the instance (the next
read is a plain attribute lookup); any ``setting_changed`` (``override_settings``
in tests) forgets them all, so a test always sees its own values. A name that
is no setting is an AttributeError, and a type error for the type checker. The
types say what a setting should hold; :mod:`mcp_gateway.checks` verifies it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Generic, TypeVar, overload

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

T = TypeVar("T")


class Setting(Generic[T]):
    """One ``MCP_GATEWAY_<NAME>`` setting: its default, and its type for the type checker.

    A non-data descriptor: the value it reads is stored in the instance's
    ``__dict__`` under the same name, which then shadows it until
    :meth:`GatewaySettings.reload`.
    """

    def __init__(self, default: T) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Setting[T]: ...
    @overload
    def __get__(self, instance: GatewaySettings, owner: type | None = None) -> T: ...
    def __get__(self, instance: GatewaySettings | None, owner: type | None = None) -> T | Setting[T]:
        if instance is None:
            return self
        value: T = getattr(django_settings, f"MCP_GATEWAY_{self.name}", self.default)
        instance.__dict__[self.name] = value
        return value


class GatewaySettings:
    """Attribute access to ``MCP_GATEWAY_<NAME>`` settings with defaults: one typed attribute per setting."""

    # Dotted path to the MCP server object (an ``MCPServer`` or a low-level ``Server``).
    SERVER = Setting[str | None](None)
    # URL prefix the routes are mounted under; must start and end with "/".
    PREFIX = Setting[str]("/mcp/")
    # Extra origins (``scheme://host[:port]``) allowed besides the site's own.
    ALLOWED_ORIGINS = Setting[Sequence[str]](())
    # Largest accepted request body in bytes (POST; GET and DELETE take none); larger ones get 413 unbuffered.
    MAX_BODY_SIZE = Setting[int](4 * 1024 * 1024)
    # Seconds a request to the gateway may take to arrive whole, headers and body, under python -m
    # mcp_gateway.daphne; later it gets 408 and its connection is closed. Streams are not affected (a GET has
    # arrived once its headers have). None: no bound.
    BODY_TIMEOUT = Setting[float | None](30.0)
    # Authenticators tried in order; the first that recognises a credential wins.
    AUTHENTICATORS = Setting[Sequence[str]](
        ("mcp_gateway.auth.BearerTokenAuthenticator", "mcp_gateway.auth.SessionCookieAuthenticator")
    )
    # Channel layer alias used to reach a session's stream.
    CHANNEL_LAYER = Setting[str]("default")
    # Seconds between keep-alive comments on an idle stream. It also paces each worker's housekeeping sweep, and
    # so: how often activity counts are saved, how late an idle session (IDLE_TIMEOUT) is closed, how soon a
    # session whose revocation message was lost finds its record closed, and how far ahead a session's deadline
    # (MAX_LIFETIME, its token's expiry) gets a timer of its own (two intervals).
    PING_INTERVAL = Setting[float](15.0)
    # Server messages a session may have waiting for a slow client.
    OUTBOUND_QUEUE_SIZE = Setting[int](32)
    # Client requests a session may have in progress; more are answered with an error.
    MAX_REQUESTS_IN_FLIGHT = Setting[int](32)
    # Client messages a session may have waiting for the MCP server.
    INBOUND_QUEUE_SIZE = Setting[int](64)
    # Events kept per session for clients resuming a dropped stream with Last-Event-ID.
    EVENT_BUFFER_SIZE = Setting[int](100)
    # Bytes of event data kept per session for those clients, oldest dropped first; a request's reply sent as a
    # plain JSON response is never kept, and an event larger than this is sent but not kept.
    EVENT_BUFFER_BYTES = Setting[int](4 * 1024 * 1024)
    # Seconds an HTTP+SSE session waits for its dropped stream to be resumed before it is closed.
    RESUME_TIMEOUT = Setting[float](30.0)
    # Seconds a stream may stay unwritable before it is closed as stalled.
    STALL_TIMEOUT = Setting[float](10.0)
    # Seconds a handshake-era session may sit idle (no request in progress, nothing queued) before its MCP
    # server loop is stopped and only its state kept (it resumes with the next message); None: never park.
    PARK_AFTER = Setting[float | None](10.0)
    # Seconds without a client message before a session is closed; None: never.
    IDLE_TIMEOUT = Setting[float | None](3600.0)
    # Seconds a session may live at most (a token's own expiry may end it sooner); None: no limit.
    MAX_LIFETIME = Setting[float | None](86400.0)
    # Open sessions a user may have at once; None: no limit.
    MAX_SESSIONS_PER_USER = Setting[int | None](20)
    # Seconds a request to a session running in the worker that takes it may rely on the last database check
    # of its credential, when it presents the very credential that opened the session (revoking that credential
    # ends the session at once anyway); 0: check the database on every request.
    RECHECK_INTERVAL = Setting[float](5.0)
    # Seconds a worker may reuse its last database check of a credential for a request that names no session
    # (2026-07-28's per-request POSTs, an initialize): logout, a password change, deactivation, deletion
    # and token revocation drop it from every worker's cache at once; a change that bypasses those signals (a bulk
    # ``update()``) is seen within this many seconds. None: RECHECK_INTERVAL, which bounds it; 0: no cache.
    CREDENTIAL_CACHE_TTL = Setting[float | None](None)
    # Verified credentials a worker keeps at most, the least recently used dropped first; 0: no cache.
    CREDENTIAL_CACHE_SIZE = Setting[int](1000)
    # Seconds a multi-round-trip request's ``requestState`` (2026-07-28, SEP-2322) stays valid: the client must
    # repeat the request with the inputs asked for within this time.
    REQUEST_STATE_MAX_AGE = Setting[float](300.0)
    # POSTs a user may make: (count, seconds), e.g. 600 per 60 s; None: no limit.
    RATE_LIMIT = Setting[tuple[int, float] | None]((600, 60))
    # Cache alias counting POSTs; must be shared by all workers (Redis, Memcached, database).
    CACHE = Setting[str]("default")
    # Seconds a stream ticket stays valid.
    TICKET_LIFETIME = Setting[float](60.0)
    # Require a ticket for every stream opened by a browser (a GET carrying an Origin header).
    REQUIRE_TICKET_FOR_BROWSERS = Setting[bool](False)
    # Seconds a worker may go without a heartbeat before its sessions count as lost (it beats every third).
    LEASE_TIMEOUT = Setting[float](45.0)
    # Days a closed session's record is kept before clear_mcp_sessions deletes it.
    SESSION_RETENTION_DAYS = Setting[float](30)
    # Days audit events are kept before clear_mcp_sessions deletes them.
    AUDIT_RETENTION_DAYS = Setting[float](90)
    # Refusal rows stored per kind and client address per minute in each worker; the rest are only logged.
    # Session events (opened, closed, revoked) are always stored.
    AUDIT_ROWS_PER_MINUTE = Setting[int](30)
    # Seconds between two saves of each worker's client usage counts (who calls with which client); the counts of
    # the last interval are lost if a worker is killed (a clean shutdown saves them).
    USAGE_FLUSH_INTERVAL = Setting[float](60.0)
    # Distinct (user, credential, client, version, protocol) a worker counts per interval; requests of further
    # ones are only counted as a total, and logged.
    USAGE_MAX_CLIENTS = Setting[int](10_000)
    # Days a client usage row is kept after it was last seen, before clear_mcp_sessions deletes it.
    USAGE_RETENTION_DAYS = Setting[float](90)
    # The template the "Your MCP access" pages (``mcp_sessions.urls``) extend, so they take the site's look; it
    # must define the blocks ``title`` and ``content``. The default is a bare page of the package's own.
    ACCOUNT_BASE_TEMPLATE = Setting[str]("mcp_sessions/account/base.html")
    # Seconds a worker may reuse a user it read to decide permissions (mcp_gateway.permcache): a change to the
    # user, their groups or permissions drops it from every worker at once; what no signal tells (a custom
    # backend's own data, a bulk update()) is seen within this many seconds. None: RECHECK_INTERVAL; 0: read the
    # user and their permissions again for every request.
    PERMISSION_CACHE_TTL = Setting[float | None](None)
    # Store a record of every tools/call, resources/read and prompts/get (mcp_sessions.models.CallRecord); off,
    # the call_recorded signal is still sent for each.
    CALL_RECORDS = Setting[bool](True)
    # Call records stored per user per minute in each worker; the rest are counted in the log (and still signalled).
    CALL_RECORDS_PER_MINUTE = Setting[int](600)
    # Dotted path to the site's redaction hook ``(*, method, name, arguments, user) -> dict | None``: what a call
    # record stores of the arguments (None: nothing). Unset: no record stores argument values, only their digest.
    CALL_ARGUMENTS = Setting[str | None](None)

    # OAuth 2.1 (the optional app mcp_oauth: pip install django-mcp-gateway[oauth]).
    # The authorization server's issuer identifier (RFC 8414), e.g. "https://site.example"; None: the origin of
    # each request (fine on one host; set it behind several names or a proxy, check W012).
    OAUTH_ISSUER = Setting[str | None](None)
    # Mount prefixes OAuth tokens may be issued for (the resource parameter, RFC 8707, names one); None: (PREFIX,).
    OAUTH_RESOURCES = Setting[Sequence[str] | None](None)
    # Seconds an access token lives; a session opened with it ends then too (clients refresh and reconnect).
    OAUTH_ACCESS_TOKEN_LIFETIME = Setting[float](3600.0)
    # Seconds a refresh token lives (each use replaces it by a new one); None: until revoked.
    OAUTH_REFRESH_TOKEN_LIFETIME = Setting[float | None](30 * 86400.0)
    # Seconds an authorization code is valid (it is single-use anyway).
    OAUTH_CODE_LIFETIME = Setting[float](60.0)
    # Dynamic Client Registration (RFC 7591): its endpoint, advertised only when on.
    OAUTH_DYNAMIC_REGISTRATION = Setting[bool](True)
    # Client ID Metadata Documents: a client_id that is an https URL names the client's own metadata document.
    OAUTH_CLIENT_ID_METADATA_DOCUMENTS = Setting[bool](True)
    # Hosts whose metadata documents are accepted as client IDs, e.g. ("claude.ai", "chatgpt.com"); "*": any.
    OAUTH_CLIENT_ID_METADATA_HOSTS = Setting[Sequence[str]](("*",))
    # Dotted path to a callable ``(request, metadata) -> bool`` deciding whether a client may register (DCR) or
    # be admitted from its metadata document (CIMD); None: every client whose metadata is valid.
    OAUTH_CLIENT_POLICY = Setting[str | None](None)
    # Whether "Allow" with "remember" checked skips the consent page for the same client, resource and scopes.
    OAUTH_REMEMBER_CONSENT = Setting[bool](True)
    # Tests only: fetch client metadata documents from loopback addresses, over plain HTTP too (check W013).
    OAUTH_CIMD_ALLOW_LOOPBACK = Setting[bool](False)

    def reload(self) -> None:
        """Forget the values read: the next access reads Django's settings again."""
        self.__dict__.clear()


# Every setting's name and default (for tools and docs; the class above is the table).
DEFAULTS: dict[str, Any] = {
    name: value.default for name, value in vars(GatewaySettings).items() if isinstance(value, Setting)
}

gateway_settings = GatewaySettings()


def _reload(**kwargs: Any) -> None:
    gateway_settings.reload()


setting_changed.connect(_reload, dispatch_uid="mcp_gateway.conf.reload")


@functools.cache
def settings_available() -> bool:
    """Whether this process has Django settings; asked once, then remembered.

    The launcher (:mod:`mcp_gateway.daphne`) serves any ASGI application, Django or not: without settings its
    access log and request limits use the defaults, and must not pay an ``ImproperlyConfigured`` per request to
    find that out. A process gets its settings before it serves (the application is loaded first).
    """
    try:
        django_settings.INSTALLED_APPS  # noqa: B018  # the read that configures them, or raises
    except ImproperlyConfigured:
        return False
    return True
