"""The metadata documents: the authorization server's (RFC 8414) and each mount's as a protected resource (RFC 9728).

The issuer is ``MCP_GATEWAY_OAUTH_ISSUER``, or the request's own origin; the
endpoints are this app's URLs (``mcp_oauth.urls``) on the issuer's origin. A
registration endpoint is advertised only while registration is on: ChatGPT
breaks on an advertised endpoint that refuses it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.urls import reverse

from mcp_gateway.conf import gateway_settings
from mcp_gateway.http import GatewayRequest
from mcp_gateway.resource import resource_url

from .scopes import scopes_supported


def issuer_for(request: Any) -> str:
    """The issuer identifier: the setting, or the origin of ``request`` (a Django request)."""
    configured = gateway_settings.OAUTH_ISSUER
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.get_host()}"


def _endpoint(issuer: str, name: str) -> str:
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}{reverse(name)}"


def authorization_server_metadata(request: Any) -> dict[str, Any]:
    """RFC 8414 metadata, with what MCP clients look for (CIMD support, ``none``, ``iss``, S256)."""
    issuer = issuer_for(request)
    metadata: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": _endpoint(issuer, "mcp_oauth:authorize"),
        "token_endpoint": _endpoint(issuer, "mcp_oauth:token"),
        "revocation_endpoint": _endpoint(issuer, "mcp_oauth:revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes_supported(),
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": gateway_settings.OAUTH_CLIENT_ID_METADATA_DOCUMENTS,
    }
    if gateway_settings.OAUTH_DYNAMIC_REGISTRATION:
        metadata["registration_endpoint"] = _endpoint(issuer, "mcp_oauth:register")
    return metadata


def protected_resource_metadata(request: GatewayRequest) -> dict[str, Any]:
    """RFC 9728 metadata of the mount ``request`` is for: its identifier, this site as its authorization server."""
    prefix = request.mount_prefix or gateway_settings.PREFIX
    return {
        "resource": resource_url(request),
        "authorization_servers": [issuer_for(request.django_request)],
        "scopes_supported": scopes_supported(prefix),
        "bearer_methods_supported": ["header"],
        "resource_name": f"MCP server at {prefix}",
    }
