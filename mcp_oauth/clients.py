"""Which clients the server knows: registered ones (RFC 7591), and those a Client ID Metadata Document describes.

:func:`client_fields` turns a client's metadata, registered or fetched, into
the columns of :class:`~mcp_oauth.models.OAuthClient` after checking it:
redirect URIs registrable (:func:`~mcp_oauth.redirects.registrable`), only the
grants and the response type this server has, text cleaned as the gateway
cleans client text. ``MCP_GATEWAY_OAUTH_CLIENT_POLICY`` then has the last word.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from mcp_gateway.conf import gateway_settings
from mcp_sessions.text import clean_text, escape

from . import cimd
from .models import OAuthClient
from .redirects import registrable

logger = logging.getLogger("mcp_gateway")

GRANT_TYPES = ("authorization_code", "refresh_token")
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")


class ClientRefused(Exception):
    """The client's metadata is not acceptable here (the message says why, for an ``invalid_client_metadata``)."""


def client_fields(metadata: dict[str, Any], *, document: bool) -> dict[str, Any]:
    """The columns of the client ``metadata`` describes; :class:`ClientRefused` if it is not acceptable."""
    uris = metadata.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > 20 or not all(registrable(u) for u in uris):
        raise ClientRefused("redirect_uris must list https URIs, http loopback URIs or an app's own scheme")
    grant_types = metadata.get("grant_types", ["authorization_code"])
    if not isinstance(grant_types, list) or "authorization_code" not in grant_types:
        raise ClientRefused("grant_types must include authorization_code")
    response_types = metadata.get("response_types", ["code"])
    if not isinstance(response_types, list) or "code" not in response_types:
        raise ClientRefused("response_types must include code")
    method = metadata.get("token_endpoint_auth_method", "none" if document else "client_secret_basic")
    if method not in (("none",) if document else AUTH_METHODS):
        raise ClientRefused(f"token_endpoint_auth_method {method!r} is not supported")
    grants = [g for g in GRANT_TYPES if g in grant_types]
    if "refresh_token" not in grants:
        grants.append("refresh_token")  # MCP clients refresh; a client that never does is not hurt
    return {
        "name": _text(metadata.get("client_name"), 200),
        "client_uri": _uri(metadata.get("client_uri")),
        "logo_uri": _uri(metadata.get("logo_uri")),
        "redirect_uris": list(uris),
        "grant_types": grants,
        "token_endpoint_auth_method": method,
        "metadata": {k: v for k, v in metadata.items() if k not in ("client_secret",)},
    }


def admitted(request: Any, metadata: dict[str, Any]) -> bool:
    """``MCP_GATEWAY_OAUTH_CLIENT_POLICY``'s verdict on a client (every valid one when unset)."""
    policy = gateway_settings.OAUTH_CLIENT_POLICY
    return True if policy is None else bool(import_string(policy)(request, metadata))


def find_client(client_id: str, request: Any = None) -> OAuthClient | None:
    """The client with this ID: a registered one, or the one its metadata document (fetched, or still fresh) names.

    None for an unknown, disabled or refused client: the authorization endpoint then shows an error page, the
    token endpoint answers 401 ``invalid_client`` (a client that registered dynamically registers again).
    """
    if not isinstance(client_id, str) or not client_id or len(client_id) > 500:
        return None
    if not cimd.is_document_url(client_id):
        return OAuthClient.objects.find(client_id)  # registered ones stay usable when registration is turned off
    if not gateway_settings.OAUTH_CLIENT_ID_METADATA_DOCUMENTS:
        return None
    known = OAuthClient.objects.filter(client_id=client_id).first()
    if known is not None and known.disabled_at is not None:
        return None
    if known is not None and known.metadata_expires_at is not None and known.metadata_expires_at > timezone.now():
        return known  # type: ignore[no-any-return]  # (django-stubs: first() of a from_queryset manager)
    try:
        document = cimd.fetch(client_id)
        fields = client_fields(document.metadata, document=True)
    except (cimd.DocumentRefused, ClientRefused) as exc:
        logger.info("Client metadata document %s refused: %s", escape(client_id), exc)
        return None
    if not admitted(request, document.metadata):
        logger.info("Client metadata document %s refused by MCP_GATEWAY_OAUTH_CLIENT_POLICY", escape(client_id))
        return None
    client: OAuthClient | None = OAuthClient.objects.from_document(client_id, fields, fresh_until=document.fresh_until)
    return client


def _text(value: Any, length: int) -> str:
    return clean_text(value, length) if isinstance(value, str) else ""


def _uri(value: Any) -> str:
    return value if isinstance(value, str) and value.startswith("https://") and len(value) <= 500 else ""
