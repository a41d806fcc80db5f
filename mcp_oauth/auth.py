"""The gateway's side of OAuth: accepting the access tokens this site issues, as any other credential.

Add it to ``MCP_GATEWAY_AUTHENTICATORS`` before the personal token
authenticator (which refuses every bearer token not its own, check E019)::

    MCP_GATEWAY_AUTHENTICATORS = [
        "mcp_oauth.auth.OAuthTokenAuthenticator",
        "mcp_gateway.auth.BearerTokenAuthenticator",
        "mcp_gateway.auth.SessionCookieAuthenticator",
    ]

It recognises only its own tokens (``mcpa_…``): any other bearer token goes on
to the next authenticator. A token of its own that is unknown, expired or
revoked, or whose grant, client or user is not active, is 401
``invalid_token``; one issued for another resource (RFC 8707 audience: the
mount's URL) is 401 ``invalid_token`` too; one lacking a scope the mount
needs is 403 ``insufficient_scope`` naming it. Its challenge names the
mount's protected resource metadata (RFC 9728), which it also gives the
gateway to serve. The credential goes through the same pipeline as a
personal token's: binding, limits, audit, the per-worker cache (bound to its
audience) and revocation (the sessions it opens record its grant).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from mcp_gateway.auth import Credential, token_fingerprint
from mcp_gateway.conf import gateway_settings
from mcp_gateway.exceptions import InsufficientScope, InvalidToken
from mcp_gateway.http import GatewayRequest
from mcp_gateway.resource import metadata_url, resource_url

from .secrets import ACCESS_TAG, hash_token, is_shaped


def _oauth_mount(request: GatewayRequest) -> bool:
    """Whether tokens may be issued for the mount ``request`` is for (``MCP_GATEWAY_OAUTH_RESOURCES``)."""
    prefixes = gateway_settings.OAUTH_RESOURCES or (gateway_settings.PREFIX,)
    return request.mount_prefix in prefixes


def _bearer(request: GatewayRequest) -> str | None:
    kind, _, secret = request.headers.get("authorization", "").partition(" ")
    return secret.strip() if kind.lower() == "bearer" else None


class OAuthTokenAuthenticator:
    scheme = "oauth"
    ambient = False

    def challenge(self) -> str:
        return 'Bearer realm="mcp"'

    def challenge_for(self, request: GatewayRequest, error: str = "") -> str:
        """``Bearer`` naming the mount's metadata and the scopes it needs (and ``error``, if any)."""
        if not _oauth_mount(request):
            return self.challenge() + (f', error="{error}"' if error else "")
        from .scopes import required_scopes

        params = ['realm="mcp"']
        if error:
            params.append(f'error="{error}"')
        params.append(f'resource_metadata="{metadata_url(request)}"')
        params.append(f'scope="{" ".join(required_scopes(request.mount_prefix or ""))}"')
        return "Bearer " + ", ".join(params)

    def protected_resource_metadata(self, request: GatewayRequest) -> dict[str, Any] | None:
        if not _oauth_mount(request):
            return None
        from .metadata import protected_resource_metadata

        return protected_resource_metadata(request)

    def fingerprint(self, request: GatewayRequest) -> str | None:
        secret = _bearer(request)
        if secret is None or not secret.startswith(ACCESS_TAG):
            return None
        return token_fingerprint(hash_token(secret)) if is_shaped(secret, ACCESS_TAG) else ""

    async def authenticate(self, request: GatewayRequest) -> Credential | None:
        secret = _bearer(request)
        if secret is None or not secret.startswith(ACCESS_TAG):
            return None
        from .models import OAuthAccessToken

        token = await database_sync_to_async(OAuthAccessToken.objects.authenticate)(secret)
        if token is None:
            raise self._invalid(request, "Invalid, expired or revoked OAuth access token")
        grant = token.grant
        audience = resource_url(request)
        if not _oauth_mount(request) or grant.resource != audience:
            raise self._invalid(request, "OAuth access token not issued for this resource")
        from .scopes import grants_access, required_scopes

        granted = frozenset(grant.scope.split())
        if not grants_access(granted):
            raise InsufficientScope(" ".join(required_scopes(request.mount_prefix or "")))
        return Credential(
            user=grant.user,
            scheme=self.scheme,
            ambient=self.ambient,
            expires_at=token.expires_at,
            fingerprint=token_fingerprint(token.token_hash),
            credential_ref=grant.ref,
            scopes=granted,
            audience=audience,
            # Beyond its scopes, 403 insufficient_scope naming the one needed (mcp_gateway.scopes.step_up).
            step_up=True,
            client_id=grant.client.client_id,
        )

    def _invalid(self, request: GatewayRequest, message: str) -> InvalidToken:
        return InvalidToken(
            message, headers=[(b"www-authenticate", self.challenge_for(request, "invalid_token").encode())]
        )
