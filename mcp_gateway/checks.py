"""System checks for the gateway's configuration.

Each message says what goes wrong if it is ignored, and its hint how to fix
it; each ID stands for one condition and is stable (the README lists them).
They run under the tag ``mcp_gateway`` (``manage.py check --tag mcp_gateway``);
the ``--deploy`` ones, tagged ``security`` as well, point out settings that
are fine on a laptop and unsafe in production.

Nothing here imports the models at module level, and the checks that need
modules importing them (authenticators, the routing) do not run without
``mcp_sessions`` installed: that is ``E004``, not a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .checks_deploy import deployment_warnings
from .checks_oauth import check_oauth
from .conf import gateway_settings

POSITIVE_NUMBERS = (
    "MAX_BODY_SIZE",
    "PING_INTERVAL",
    "OUTBOUND_QUEUE_SIZE",
    "INBOUND_QUEUE_SIZE",
    "MAX_REQUESTS_IN_FLIGHT",
    "STALL_TIMEOUT",
    "SESSION_RETENTION_DAYS",
    "AUDIT_RETENTION_DAYS",
    "AUDIT_ROWS_PER_MINUTE",
    "LEASE_TIMEOUT",
    "TICKET_LIFETIME",
    "EVENT_BUFFER_SIZE",
    "EVENT_BUFFER_BYTES",
    "REQUEST_STATE_MAX_AGE",
    "USAGE_FLUSH_INTERVAL",
    "USAGE_MAX_CLIENTS",
    "USAGE_RETENTION_DAYS",
    "OAUTH_ACCESS_TOKEN_LIFETIME",
    "OAUTH_CODE_LIFETIME",
    "CALL_RECORDS_PER_MINUTE",
)
# Zero is meaningful here: a dropped HTTP+SSE stream ends its session at once.
NON_NEGATIVE_NUMBERS = ("RESUME_TIMEOUT", "RECHECK_INTERVAL")
# None turns these off.
OPTIONAL_POSITIVE_NUMBERS = (
    "IDLE_TIMEOUT",
    "PARK_AFTER",
    "MAX_LIFETIME",
    "BODY_TIMEOUT",
    "OAUTH_REFRESH_TOKEN_LIFETIME",
)


class GatewayTags:
    """The tag the gateway's checks run under, next to Django's :class:`~django.core.checks.Tags`."""

    mcp_gateway = "mcp_gateway"


@register(GatewayTags.mcp_gateway)
def check_settings(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    errors += _check_prefix()
    errors += _check_channel_layer()
    errors += _check_origins()
    errors += _check_numbers()
    errors += _check_rate_limit()
    errors += _check_credential_cache()
    if not apps.is_installed("mcp_sessions"):
        # The server and the authenticators import modules that import the models: not without their app.
        errors.append(
            Error(
                "mcp_sessions is not in INSTALLED_APPS: sessions cannot be recorded or bound to users.",
                hint="Add 'mcp_sessions' to INSTALLED_APPS next to 'mcp_gateway'.",
                id="mcp_gateway.E004",
            )
        )
        return errors
    errors += _check_server()
    errors += _check_authenticators()
    errors += check_oauth()
    errors += _check_account_template()
    errors += _check_call_arguments()
    errors += _check_permission_cache()
    return errors


def _check_permission_cache() -> list[CheckMessage]:
    ttl = gateway_settings.PERMISSION_CACHE_TTL
    if ttl is None or (not isinstance(ttl, bool) and isinstance(ttl, int | float) and ttl >= 0):
        return []
    return [
        Error(
            f"MCP_GATEWAY_PERMISSION_CACHE_TTL must be a number ≥ 0 or None, not {ttl!r}.",
            hint="Seconds; 0 reads permissions again for every request, None follows MCP_GATEWAY_RECHECK_INTERVAL.",
            id="mcp_gateway.E017",
        )
    ]


def _check_call_arguments() -> list[CheckMessage]:
    path = gateway_settings.CALL_ARGUMENTS
    if path is None:
        return []
    try:
        hook = import_string(path) if isinstance(path, str) else None
    except ImportError as exc:
        hook, reason = None, str(exc)
    else:
        reason = "not a dotted path to a callable"
    if callable(hook):
        return []
    return [
        Error(
            f"MCP_GATEWAY_CALL_ARGUMENTS {path!r} names no redaction hook: {reason}",
            hint="A function (*, method, name, arguments, user) -> dict | None; or None to store no arguments.",
            id="mcp_gateway.E016",
        )
    ]


def _check_server() -> list[CheckMessage]:
    target = gateway_settings.SERVER
    if target is None:
        return [
            Warning(
                "MCP_GATEWAY_SERVER is not set: mcp_application() serves nothing unless given servers=.",
                hint="Set MCP_GATEWAY_SERVER to the dotted path of an MCPServer or low-level Server.",
                id="mcp_gateway.W002",
            )
        ]
    from .mounts import resolve_server

    try:
        resolve_server(target)
    except (ImportError, ImproperlyConfigured) as exc:
        return [
            Error(
                f"MCP_GATEWAY_SERVER does not name an MCP server: {exc}",
                hint="Point it at an MCPServer or mcp.server.lowlevel.Server instance, e.g. 'myapp.mcp.server'.",
                id="mcp_gateway.E001",
            )
        ]
    return []


def _check_prefix() -> list[CheckMessage]:
    prefix = gateway_settings.PREFIX
    if isinstance(prefix, str) and prefix.startswith("/") and prefix.endswith("/"):
        return []
    return [
        Error(
            f"MCP_GATEWAY_PREFIX {prefix!r} must start and end with '/': routes would not match.",
            hint="For example '/mcp/'.",
            id="mcp_gateway.E002",
        )
    ]


def _check_channel_layer() -> list[CheckMessage]:
    alias = gateway_settings.CHANNEL_LAYER
    if alias in getattr(settings, "CHANNEL_LAYERS", {}):
        return []
    return [
        Error(
            f"No channel layer {alias!r} in CHANNEL_LAYERS: POSTed messages cannot reach their session's stream.",
            hint="Configure CHANNEL_LAYERS (channels_redis in production, InMemoryChannelLayer for one process).",
            id="mcp_gateway.E003",
        )
    ]


def _check_origins() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for origin in gateway_settings.ALLOWED_ORIGINS:
        if origin == "*":
            messages.append(
                Warning(
                    "MCP_GATEWAY_ALLOWED_ORIGINS contains '*': any web page may open streams and post "
                    "messages with its visitors' credentials.",
                    hint="List the exact origins of the apps that need access.",
                    id="mcp_gateway.W001",
                )
            )
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            messages.append(
                Error(
                    f"MCP_GATEWAY_ALLOWED_ORIGINS entry {origin!r} is not an origin: it can never match.",
                    hint="Origins are 'scheme://host[:port]' with no path or trailing slash.",
                    id="mcp_gateway.E005",
                )
            )
    return messages


def _check_numbers() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for name in OPTIONAL_POSITIVE_NUMBERS:
        value = getattr(gateway_settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            messages.append(
                Error(
                    f"MCP_GATEWAY_{name} must be a positive number or None, not {value!r}.",
                    hint="A number of seconds, or None to turn it off.",
                    id="mcp_gateway.E009",
                )
            )
    for name in POSITIVE_NUMBERS:
        value = getattr(gateway_settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            messages.append(
                Error(
                    f"MCP_GATEWAY_{name} must be a positive number, not {value!r}.",
                    hint=f"Remove MCP_GATEWAY_{name} for its default, or give a number greater than 0 (not a string).",
                    id="mcp_gateway.E006",
                )
            )
    for name in NON_NEGATIVE_NUMBERS:
        value = getattr(gateway_settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            messages.append(
                Error(
                    f"MCP_GATEWAY_{name} must be a number ≥ 0, not {value!r}.",
                    hint="A number of seconds; 0 is allowed (see the README's settings).",
                    id="mcp_gateway.E010",
                )
            )
    return messages


def _check_credential_cache() -> list[CheckMessage]:
    """The cache of verified credentials: a size ≥ 0, and a lifetime ≥ 0 that stays within RECHECK_INTERVAL."""
    messages: list[CheckMessage] = []
    size = gateway_settings.CREDENTIAL_CACHE_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        messages.append(
            Error(
                f"MCP_GATEWAY_CREDENTIAL_CACHE_SIZE must be a whole number ≥ 0, not {size!r}.",
                hint="How many verified credentials a worker keeps; 0 turns the cache off.",
                id="mcp_gateway.E012",
            )
        )
    ttl = gateway_settings.CREDENTIAL_CACHE_TTL
    recheck = gateway_settings.RECHECK_INTERVAL
    if ttl is None:
        return messages
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
        messages.append(
            Error(
                f"MCP_GATEWAY_CREDENTIAL_CACHE_TTL must be a number ≥ 0 or None, not {ttl!r}.",
                hint="Seconds; 0 turns the cache off, None follows MCP_GATEWAY_RECHECK_INTERVAL.",
                id="mcp_gateway.E013",
            )
        )
    elif isinstance(recheck, int | float) and ttl > recheck:
        messages.append(
            Error(
                f"MCP_GATEWAY_CREDENTIAL_CACHE_TTL ({ttl!r}) exceeds MCP_GATEWAY_RECHECK_INTERVAL ({recheck!r}).",
                hint="RECHECK_INTERVAL is how stale any credential check may be; leave the TTL unset to follow it.",
                id="mcp_gateway.E014",
            )
        )
    return messages


def _check_account_template() -> list[CheckMessage]:
    """The base template of the account pages (``mcp_sessions.urls``) loads: else each of them answers 500."""
    from django.template import TemplateDoesNotExist, TemplateSyntaxError
    from django.template.loader import get_template

    name = gateway_settings.ACCOUNT_BASE_TEMPLATE
    try:
        if not isinstance(name, str) or not name:
            raise TemplateDoesNotExist(repr(name))
        get_template(name)
    except (TemplateDoesNotExist, TemplateSyntaxError) as exc:
        return [
            Error(
                f"MCP_GATEWAY_ACCOUNT_BASE_TEMPLATE {name!r} cannot be loaded ({type(exc).__name__}: {exc}): "
                "every page of Your MCP access would answer 500.",
                hint="Name a template of the site that defines the blocks title and content, or leave the "
                "setting unset for the package's own.",
                id="mcp_gateway.E015",
            )
        ]
    return []


def _check_authenticators() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    paths = gateway_settings.AUTHENTICATORS
    if not paths:
        messages.append(
            Error(
                "MCP_GATEWAY_AUTHENTICATORS is empty: every request would be refused with 401.",
                hint="Keep 'mcp_gateway.auth.SessionCookieAuthenticator' at least.",
                id="mcp_gateway.E007",
            )
        )
    for path in paths:
        try:
            import_string(path)
        except ImportError as exc:
            messages.append(
                Error(
                    f"Authenticator {path!r} in MCP_GATEWAY_AUTHENTICATORS cannot be imported: {exc}",
                    hint="An authenticator class's dotted path, e.g. 'mcp_gateway.auth.SessionCookieAuthenticator'.",
                    id="mcp_gateway.E011",
                )
            )
    return messages


def _check_rate_limit() -> list[CheckMessage]:
    limit = gateway_settings.RATE_LIMIT
    if limit is None:
        return []
    valid = (
        isinstance(limit, list | tuple)
        and len(limit) == 2
        and all(isinstance(n, int | float) and not isinstance(n, bool) and n > 0 for n in limit)
    )
    if valid:
        return []
    return [
        Error(
            f"MCP_GATEWAY_RATE_LIMIT must be None or (count, seconds), not {limit!r}.",
            hint="For example (600, 60): 600 POSTs per user per minute.",
            id="mcp_gateway.E008",
        )
    ]


@register(GatewayTags.mcp_gateway, Tags.security, deploy=True)
def check_deployment(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    return deployment_warnings()
