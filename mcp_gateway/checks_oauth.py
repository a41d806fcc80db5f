"""System checks of the OAuth settings (``MCP_GATEWAY_OAUTH_*``), run with the gateway's own (:mod:`.checks`).

Kept apart from the other checks (that module's size); the IDs continue its numbering.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.core.checks import CheckMessage, Error, Warning

from .conf import gateway_settings

OAUTH_AUTHENTICATOR = "mcp_oauth.auth.OAuthTokenAuthenticator"
BEARER_AUTHENTICATOR = "mcp_gateway.auth.BearerTokenAuthenticator"


def oauth_enabled() -> bool:
    """Whether OAuth tokens are accepted: the authenticator is configured."""
    return OAUTH_AUTHENTICATOR in gateway_settings.AUTHENTICATORS


def check_oauth() -> list[CheckMessage]:
    """The OAuth settings, when the authenticator is configured or the app installed."""
    if not (oauth_enabled() or apps.is_installed("mcp_oauth")):
        return []
    messages: list[CheckMessage] = []
    paths = list(gateway_settings.AUTHENTICATORS)
    if oauth_enabled() and not apps.is_installed("mcp_oauth"):
        messages.append(
            Error(
                f"{OAUTH_AUTHENTICATOR} is in MCP_GATEWAY_AUTHENTICATORS but mcp_oauth is not in INSTALLED_APPS: "
                "its tables do not exist and every OAuth request fails.",
                hint="Add 'mcp_oauth' to INSTALLED_APPS (pip install django-mcp-gateway[oauth]) and migrate.",
                id="mcp_gateway.E018",
            )
        )
    if (
        oauth_enabled()
        and BEARER_AUTHENTICATOR in paths
        and paths.index(BEARER_AUTHENTICATOR) < paths.index(OAUTH_AUTHENTICATOR)
    ):
        messages.append(
            Error(
                f"{BEARER_AUTHENTICATOR} comes before {OAUTH_AUTHENTICATOR}: it refuses every bearer token that is "
                "not a personal access token, so OAuth tokens never reach their authenticator.",
                hint="List the OAuth authenticator first.",
                id="mcp_gateway.E019",
            )
        )
    issuer = gateway_settings.OAUTH_ISSUER
    if issuer is not None and not _is_issuer(issuer):
        messages.append(
            Error(
                f"MCP_GATEWAY_OAUTH_ISSUER {issuer!r} is not an issuer identifier: clients refuse the metadata.",
                hint="An https URL with no query or fragment, e.g. 'https://site.example' (http on loopback only).",
                id="mcp_gateway.E020",
            )
        )
    for prefix in gateway_settings.OAUTH_RESOURCES or ():
        if not (isinstance(prefix, str) and prefix.startswith("/") and prefix.endswith("/")):
            messages.append(
                Error(
                    f"MCP_GATEWAY_OAUTH_RESOURCES entry {prefix!r} is not a mount prefix: no token is issued for it.",
                    hint="Mount prefixes start and end with '/', e.g. '/mcp/'.",
                    id="mcp_gateway.E021",
                )
            )
    return messages


def check_oauth_deployment() -> list[CheckMessage]:
    if not oauth_enabled():
        return []
    messages: list[CheckMessage] = []
    if gateway_settings.OAUTH_ISSUER is None:
        messages.append(
            Warning(
                "MCP_GATEWAY_OAUTH_ISSUER is not set: the issuer is each request's own origin, so a site reached "
                "under several names (or behind a proxy that rewrites Host) names several issuers.",
                hint="Set MCP_GATEWAY_OAUTH_ISSUER to the site's public origin, e.g. 'https://site.example'.",
                id="mcp_gateway.W012",
            )
        )
    if gateway_settings.OAUTH_CIMD_ALLOW_LOOPBACK:
        messages.append(
            Warning(
                "MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK is on: anyone can have the server fetch URLs on its own "
                "loopback interface (and over plain HTTP) by naming them as client IDs.",
                hint="It is for tests only: remove it.",
                id="mcp_gateway.W013",
            )
        )
    return messages


def _is_issuer(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    if parts.query or parts.fragment or not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and _loopback(parts.hostname)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
