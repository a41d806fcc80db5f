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
