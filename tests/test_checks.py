"""System checks: each fires on its misconfiguration, and the demo configuration is clean."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import override_settings


def ids(**settings: Any) -> set[str]:
    with override_settings(**settings):
        return {m.id for m in run_checks() if m.id and m.id.startswith("mcp_gateway.")}


CASES = [
    ("server-unset", {"MCP_GATEWAY_SERVER": None}, "mcp_gateway.W002"),
    ("server-missing-module", {"MCP_GATEWAY_SERVER": "nowhere.server"}, "mcp_gateway.E001"),
    ("server-wrong-type", {"MCP_GATEWAY_SERVER": "demo.models.Note"}, "mcp_gateway.E001"),
    ("prefix-without-slashes", {"MCP_GATEWAY_PREFIX": "mcp"}, "mcp_gateway.E002"),
    ("no-channel-layer", {"CHANNEL_LAYERS": {}}, "mcp_gateway.E003"),
    (
        "sessions-app-missing",
        {"INSTALLED_APPS": ["daphne", "django.contrib.auth", "django.contrib.contenttypes", "mcp_gateway"]},
        "mcp_gateway.E004",
    ),
    ("wildcard-origin", {"MCP_GATEWAY_ALLOWED_ORIGINS": ["*"]}, "mcp_gateway.W001"),
    ("origin-with-path", {"MCP_GATEWAY_ALLOWED_ORIGINS": ["https://app.example/"]}, "mcp_gateway.E005"),
    ("origin-without-scheme", {"MCP_GATEWAY_ALLOWED_ORIGINS": ["app.example"]}, "mcp_gateway.E005"),
    ("zero-body-size", {"MCP_GATEWAY_MAX_BODY_SIZE": 0}, "mcp_gateway.E006"),
    ("string-ping-interval", {"MCP_GATEWAY_PING_INTERVAL": "15"}, "mcp_gateway.E006"),
    ("zero-event-buffer", {"MCP_GATEWAY_EVENT_BUFFER_SIZE": 0}, "mcp_gateway.E006"),
    ("zero-event-buffer-bytes", {"MCP_GATEWAY_EVENT_BUFFER_BYTES": 0}, "mcp_gateway.E006"),
    ("negative-resume-timeout", {"MCP_GATEWAY_RESUME_TIMEOUT": -1}, "mcp_gateway.E006"),
    ("no-authenticators", {"MCP_GATEWAY_AUTHENTICATORS": []}, "mcp_gateway.E007"),
    ("bad-authenticator", {"MCP_GATEWAY_AUTHENTICATORS": ["nowhere.Auth"]}, "mcp_gateway.E007"),
]


@pytest.mark.parametrize(("settings", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_fires(settings: dict[str, Any], expected: str) -> None:
    assert expected in ids(**settings)


def test_demo_configuration_is_clean() -> None:
    assert ids() == set()


def test_lowlevel_server_is_accepted() -> None:
    assert ids(MCP_GATEWAY_SERVER="tests.servers.lowlevel") == set()


SECURE = {
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}},
    "CACHES": {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://x"}},
}


def deploy_ids(**settings: Any) -> set[str]:
    with override_settings(**{**SECURE, **settings}):
        return {m.id for m in run_checks(include_deployment_checks=True) if m.id and m.id.startswith("mcp_gateway.")}


IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
LOCMEM_CACHE = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEPLOY_CASES = [
    ("in-memory-channel-layer", {"CHANNEL_LAYERS": IN_MEMORY_LAYER}, "mcp_gateway.W003"),
    ("session-cookie-not-secure", {"SESSION_COOKIE_SECURE": False}, "mcp_gateway.W004"),
    ("csrf-cookie-not-secure", {"CSRF_COOKIE_SECURE": False}, "mcp_gateway.W005"),
    ("samesite-none", {"SESSION_COOKIE_SAMESITE": "None"}, "mcp_gateway.W006"),
    ("gateway-not-mounted", {"ASGI_APPLICATION": "tests.asgi.django_asgi_app"}, "mcp_gateway.W007"),
    ("asgi-application-missing", {"ASGI_APPLICATION": "tests.asgi.nothing"}, "mcp_gateway.W007"),
    ("session-limit-off", {"MCP_GATEWAY_MAX_SESSIONS_PER_USER": None}, "mcp_gateway.W008"),
    ("rate-limit-off", {"MCP_GATEWAY_RATE_LIMIT": None}, "mcp_gateway.W008"),
    ("idle-timeout-off", {"MCP_GATEWAY_IDLE_TIMEOUT": None}, "mcp_gateway.W008"),
    ("lifetime-off", {"MCP_GATEWAY_MAX_LIFETIME": None}, "mcp_gateway.W008"),
    ("rate-limit-in-process-cache", {"CACHES": LOCMEM_CACHE}, "mcp_gateway.W009"),
    ("rate-limit-malformed", {"MCP_GATEWAY_RATE_LIMIT": 600}, "mcp_gateway.E008"),
    ("rate-limit-zero-window", {"MCP_GATEWAY_RATE_LIMIT": (600, 0)}, "mcp_gateway.E008"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "expected"), [c[1:] for c in DEPLOY_CASES], ids=[c[0] for c in DEPLOY_CASES])
def test_deploy_check_fires(settings: dict[str, Any], expected: str) -> None:
    assert expected in deploy_ids(**settings)


@pytest.mark.parametrize("asgi", ["tests.asgi.application", "tests.asgi.routed_application"])
def test_secure_deployment_is_clean(asgi: str) -> None:
    assert deploy_ids(ASGI_APPLICATION=asgi) == set()


def test_deploy_checks_stay_out_of_plain_check() -> None:
    assert ids(SESSION_COOKIE_SECURE=False, MCP_GATEWAY_RATE_LIMIT=None) == set()
