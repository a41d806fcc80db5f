"""System checks: each fires on its misconfiguration, and the demo configuration is clean."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import override_settings

# All checks run, the models' too: from Django 6.1 a JSONField's check asks each database what it supports.
pytestmark = pytest.mark.django_db


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
    ("zero-usage-flush-interval", {"MCP_GATEWAY_USAGE_FLUSH_INTERVAL": 0}, "mcp_gateway.E006"),
    ("no-usage-clients", {"MCP_GATEWAY_USAGE_MAX_CLIENTS": None}, "mcp_gateway.E006"),
    ("string-usage-retention", {"MCP_GATEWAY_USAGE_RETENTION_DAYS": "90"}, "mcp_gateway.E006"),
    ("zero-idle-timeout", {"MCP_GATEWAY_IDLE_TIMEOUT": 0}, "mcp_gateway.E009"),
    ("string-lifetime", {"MCP_GATEWAY_MAX_LIFETIME": "1d"}, "mcp_gateway.E009"),
    ("negative-resume-timeout", {"MCP_GATEWAY_RESUME_TIMEOUT": -1}, "mcp_gateway.E010"),
    ("negative-recheck-interval", {"MCP_GATEWAY_RECHECK_INTERVAL": -0.5}, "mcp_gateway.E010"),
    ("negative-credential-cache-size", {"MCP_GATEWAY_CREDENTIAL_CACHE_SIZE": -1}, "mcp_gateway.E012"),
    ("fractional-credential-cache-size", {"MCP_GATEWAY_CREDENTIAL_CACHE_SIZE": 1.5}, "mcp_gateway.E012"),
    ("negative-credential-cache-ttl", {"MCP_GATEWAY_CREDENTIAL_CACHE_TTL": -1}, "mcp_gateway.E013"),
    ("string-credential-cache-ttl", {"MCP_GATEWAY_CREDENTIAL_CACHE_TTL": "2"}, "mcp_gateway.E013"),
    (
        "credential-cache-ttl-over-recheck-interval",
        {"MCP_GATEWAY_CREDENTIAL_CACHE_TTL": 10, "MCP_GATEWAY_RECHECK_INTERVAL": 5},
        "mcp_gateway.E014",
    ),
    ("zero-request-state-max-age", {"MCP_GATEWAY_REQUEST_STATE_MAX_AGE": 0}, "mcp_gateway.E006"),
    ("no-authenticators", {"MCP_GATEWAY_AUTHENTICATORS": []}, "mcp_gateway.E007"),
    ("bad-authenticator", {"MCP_GATEWAY_AUTHENTICATORS": ["nowhere.Auth"]}, "mcp_gateway.E011"),
    (
        "oauth-app-missing",
        {
            "INSTALLED_APPS": [
                "daphne", "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
                "mcp_gateway", "mcp_sessions",
            ],
            # The demo's base template goes with the demo app.
            "MCP_GATEWAY_ACCOUNT_BASE_TEMPLATE": "mcp_sessions/account/base.html",
        },
        "mcp_gateway.E018",
    ),
    (
        "oauth-after-personal-tokens",
        {
            "MCP_GATEWAY_AUTHENTICATORS": [
                "mcp_gateway.auth.BearerTokenAuthenticator", "mcp_oauth.auth.OAuthTokenAuthenticator",
            ]
        },
        "mcp_gateway.E019",
    ),
    ("oauth-issuer-plain-http", {"MCP_GATEWAY_OAUTH_ISSUER": "http://site.example"}, "mcp_gateway.E020"),
    ("oauth-issuer-with-query", {"MCP_GATEWAY_OAUTH_ISSUER": "https://site.example/?x=1"}, "mcp_gateway.E020"),
    ("oauth-resource-not-a-prefix", {"MCP_GATEWAY_OAUTH_RESOURCES": ["mcp"]}, "mcp_gateway.E021"),
    ("zero-oauth-code-lifetime", {"MCP_GATEWAY_OAUTH_CODE_LIFETIME": 0}, "mcp_gateway.E006"),
    ("zero-oauth-refresh-lifetime", {"MCP_GATEWAY_OAUTH_REFRESH_TOKEN_LIFETIME": 0}, "mcp_gateway.E009"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_fires(settings: dict[str, Any], expected: str) -> None:
    """Each case gives its ID and no other: one ID per condition."""
    assert ids(**settings) - {"mcp_gateway.W002"} == {expected} - {"mcp_gateway.W002"}
    if expected == "mcp_gateway.W002":
        assert ids(**settings) == {expected}


def test_demo_configuration_is_clean() -> None:
    assert ids() == set()


def test_lowlevel_server_is_accepted() -> None:
    assert ids(MCP_GATEWAY_SERVER="tests.servers.lowlevel") == set()


SECURE = {
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}},
    "CACHES": {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://x"}},
    "MCP_GATEWAY_OAUTH_ISSUER": "https://site.example",
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
    ("asgi-application-missing", {"ASGI_APPLICATION": "tests.asgi.nothing"}, "mcp_gateway.W011"),
    ("any-host-allowed", {"ALLOWED_HOSTS": ["*"]}, "mcp_gateway.W010"),
    ("any-host-allowed-among-others", {"ALLOWED_HOSTS": ["mcp.example.com", "*"]}, "mcp_gateway.W010"),
    ("session-limit-off", {"MCP_GATEWAY_MAX_SESSIONS_PER_USER": None}, "mcp_gateway.W008"),
    ("rate-limit-off", {"MCP_GATEWAY_RATE_LIMIT": None}, "mcp_gateway.W008"),
    ("idle-timeout-off", {"MCP_GATEWAY_IDLE_TIMEOUT": None}, "mcp_gateway.W008"),
    ("lifetime-off", {"MCP_GATEWAY_MAX_LIFETIME": None}, "mcp_gateway.W008"),
    ("rate-limit-in-process-cache", {"CACHES": LOCMEM_CACHE}, "mcp_gateway.W009"),
    ("rate-limit-malformed", {"MCP_GATEWAY_RATE_LIMIT": 600}, "mcp_gateway.E008"),
    ("rate-limit-zero-window", {"MCP_GATEWAY_RATE_LIMIT": (600, 0)}, "mcp_gateway.E008"),
    ("oauth-issuer-unset", {"MCP_GATEWAY_OAUTH_ISSUER": None}, "mcp_gateway.W012"),
    ("oauth-cimd-loopback", {"MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK": True}, "mcp_gateway.W013"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "expected"), [c[1:] for c in DEPLOY_CASES], ids=[c[0] for c in DEPLOY_CASES])
def test_deploy_check_fires(settings: dict[str, Any], expected: str) -> None:
    """Each case gives its ID and no other: one ID per condition."""
    assert deploy_ids(**settings) == {expected}


@pytest.mark.parametrize("asgi", ["tests.asgi.application", "tests.asgi.routed_application"])
def test_secure_deployment_is_clean(asgi: str) -> None:
    assert deploy_ids(ASGI_APPLICATION=asgi) == set()


def test_deploy_checks_stay_out_of_plain_check() -> None:
    assert ids(SESSION_COOKIE_SECURE=False, MCP_GATEWAY_RATE_LIMIT=None) == set()


def test_every_message_has_a_hint_and_the_gateways_tag() -> None:
    """Every case of both tables at once: each message has a hint, and all run under the tag ``mcp_gateway``."""
    from django.core.checks import Tags

    seen: set[str] = set()
    for _, settings, _expected in [*CASES, *DEPLOY_CASES]:
        with override_settings(**{**SECURE, **settings}):
            tagged = run_checks(tags=["mcp_gateway"], include_deployment_checks=True)
            compatibility = run_checks(tags=[Tags.compatibility], include_deployment_checks=True)
        ours = [m for m in tagged if m.id and m.id.startswith("mcp_gateway.")]
        assert all(m.hint for m in ours), [m.id for m in ours if not m.hint]
        assert not [m for m in compatibility if m.id and m.id.startswith("mcp_gateway.")]
        seen |= {m.id for m in ours if m.id}
    assert seen == {c[2] for c in [*CASES, *DEPLOY_CASES]}


def test_the_demo_on_redis_counts_its_rate_limit_there() -> None:
    """``REDIS_URL`` puts the demo's rate limit in Redis too: check --deploy has no W009 for it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo.settings", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    done = subprocess.run(
        [sys.executable, "-m", "django", "check", "--deploy", "--tag", "mcp_gateway"],
        cwd=root, env={**env, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "mcp_gateway.W003" not in done.stderr, done.stderr  # the Redis layer is on
    assert "mcp_gateway.W009" not in done.stderr, done.stderr
    without = subprocess.run(
        [sys.executable, "-m", "django", "check", "--deploy", "--tag", "mcp_gateway"],
        cwd=root, env={**env, "REDIS_URL": "", "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "mcp_gateway.W009" in without.stderr, without.stderr  # the check itself runs there


def test_without_the_sessions_app_the_check_says_so_instead_of_failing(tmp_path: Any) -> None:
    """``manage.py check`` in a fresh process without mcp_sessions: E004, not the models' RuntimeError."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "without_sessions.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        # (mcp_oauth goes too: its models build on mcp_sessions')
        "INSTALLED_APPS = [app for app in INSTALLED_APPS if app not in ('mcp_sessions', 'mcp_oauth')]  # noqa: F405\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "without_sessions", "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}
    for deploy in ([], ["--deploy"]):
        done = subprocess.run(
            [sys.executable, "-m", "django", "check", "--tag", "mcp_gateway", *deploy],
            cwd=root, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1 and "mcp_gateway.E004" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
