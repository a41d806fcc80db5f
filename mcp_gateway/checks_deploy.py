"""The gateway's ``--deploy`` system checks, run by :func:`.checks.check_deployment` (tagged ``security`` too).

Kept apart from the other checks (that module's size); the IDs share its
numbering. Each points out a setting that is fine on a laptop and unsafe in
production; nothing here imports the models at module level (the routing,
which does, is imported only with ``mcp_sessions`` installed).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Warning
from django.utils.module_loading import import_string

from .checks_oauth import check_oauth_deployment
from .conf import gateway_settings


def deployment_warnings() -> list[CheckMessage]:
    """Settings that are fine on a laptop and unsafe in production (what ``check --deploy`` adds)."""
    messages: list[CheckMessage] = []
    if "*" in settings.ALLOWED_HOSTS:
        messages.append(
            Warning(
                "ALLOWED_HOSTS contains '*': the gateway's Host check (421 host_not_allowed) admits every Host, "
                "so a DNS-rebinding page can reach the MCP routes under its own name.",
                hint="List the site's host names in ALLOWED_HOSTS.",
                id="mcp_gateway.W010",
            )
        )
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get(gateway_settings.CHANNEL_LAYER, {})
    if layer.get("BACKEND") == "channels.layers.InMemoryChannelLayer":
        messages.append(
            Warning(
                "The MCP gateway uses the in-memory channel layer: with more than one worker process, a POST "
                "landing on another worker cannot reach its session, and revoking a session from the admin "
                "(another process) cannot close its stream.",
                hint="Use channels_redis.core.RedisChannelLayer in CHANNEL_LAYERS.",
                id="mcp_gateway.W003",
            )
        )
    if not settings.SESSION_COOKIE_SECURE:
        messages.append(
            Warning(
                "SESSION_COOKIE_SECURE is off: the login cookie that authenticates MCP streams can travel "
                "over plain HTTP and be captured.",
                hint="Set SESSION_COOKIE_SECURE = True and serve the site over HTTPS.",
                id="mcp_gateway.W004",
            )
        )
    if not settings.CSRF_COOKIE_SECURE:
        messages.append(
            Warning(
                "CSRF_COOKIE_SECURE is off: the CSRF token that guards cookie-authenticated MCP POSTs can "
                "travel over plain HTTP.",
                hint="Set CSRF_COOKIE_SECURE = True.",
                id="mcp_gateway.W005",
            )
        )
    if str(settings.SESSION_COOKIE_SAMESITE).lower() == "none":
        messages.append(
            Warning(
                "SESSION_COOKIE_SAMESITE is 'None': browsers send the login cookie on requests from any "
                "site, so only the Origin and CSRF checks stand between other sites and your users' MCP sessions.",
                hint="Use 'Lax' (Django's default) or 'Strict'.",
                id="mcp_gateway.W006",
            )
        )
    messages += check_oauth_deployment()
    if apps.is_installed("mcp_sessions"):  # the routing imports the models; without them, E004 says so
        messages += _check_mounted()
    disabled = [n for n in ("MAX_SESSIONS_PER_USER", "RATE_LIMIT", "IDLE_TIMEOUT", "MAX_LIFETIME") if
                getattr(gateway_settings, n) is None]  # fmt: skip
    if disabled:
        names = ", ".join(f"MCP_GATEWAY_{n}" for n in disabled)
        messages.append(
            Warning(
                f"{names} disabled: one user (or a stolen credential) can hold sessions and send requests "
                "without bound.",
                hint="Set a limit; the defaults suit most sites.",
                id="mcp_gateway.W008",
            )
        )
    cache = getattr(settings, "CACHES", {}).get(gateway_settings.CACHE, {})
    if gateway_settings.RATE_LIMIT is not None and cache.get("BACKEND", "").endswith("LocMemCache"):
        messages.append(
            Warning(
                f"The MCP rate limit is counted in the in-process cache {gateway_settings.CACHE!r}: each worker "
                "counts on its own, so N workers allow N times the limit.",
                hint="Point MCP_GATEWAY_CACHE at a shared cache (Redis, Memcached, database).",
                id="mcp_gateway.W009",
            )
        )
    return messages


def _check_mounted() -> list[CheckMessage]:
    """Is the gateway in front of ASGI_APPLICATION? Without it the MCP routes fall through to Django."""
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return []
    from .routing import McpRouter

    try:
        app = import_string(path)
    except ImportError as exc:
        return [
            Warning(
                f"ASGI_APPLICATION {path!r} cannot be imported: {exc}",
                hint="Point ASGI_APPLICATION at the application object in your asgi.py.",
                id="mcp_gateway.W011",
            )
        ]
    if _contains_router(app, McpRouter, depth=6):
        return []
    return [
        Warning(
            f"ASGI_APPLICATION {path!r} is not wrapped by mcp_application(): MCP requests reach Django itself, "
            "unauthenticated routes included, instead of the gateway.",
            hint="In asgi.py: application = mcp_application(get_asgi_application()).",
            id="mcp_gateway.W007",
        )
    ]


def _contains_router(app: Any, router: type, depth: int) -> bool:
    if isinstance(app, router):
        return True
    if depth == 0:
        return False
    inner = [getattr(app, name, None) for name in ("app", "application", "inner", "handler")]
    inner += list(getattr(app, "application_mapping", {}).values())
    return any(_contains_router(a, router, depth - 1) for a in inner if a is not None and a is not app)
