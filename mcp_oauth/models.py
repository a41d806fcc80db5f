"""OAuth clients, consents, grants, codes and tokens: every secret stored only as its SHA-256.

A :class:`Grant` is one authorization: a user allowed a client to use one MCP
resource (a mount, RFC 8707) with some scopes. Its authorization code and all
the tokens issued from it, refresh after refresh, are its family: revoking it
(by the user, an admin, a reused refresh token or code) ends them all, and
every session they opened (``McpSession.credential_ref`` is :attr:`Grant.ref`).
A :class:`Consent` is the remembered "Allow" that lets the next authorization
of the same client, resource and scopes skip the page.

The methods named ``get_*`` and ``check_*`` are what authlib asks of its
models (``ClientMixin``, ``AuthorizationCodeMixin``, ``TokenMixin``).
"""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .choices import ClientKind as ClientKind
from .choices import RevokeReason as RevokeReason
from .managers import (
    AccessTokenManager,
    AuthorizationCodeManager,
    ClientManager,
    ConsentManager,
    GrantManager,
    RefreshTokenManager,
)
from .redirects import redirect_uri_matches
from .secrets import hash_token

PREFIX_LENGTH = 12


class OAuthClient(models.Model):
    """An OAuth client: registered dynamically, or known by the metadata document its ``client_id`` names."""

    client_id = models.CharField(_("client ID"), max_length=500, unique=True)
    kind = models.CharField(_("kind"), max_length=20, choices=ClientKind.choices)
    name = models.CharField(_("name"), max_length=200, blank=True)
    client_uri = models.CharField(_("client URI"), max_length=500, blank=True)
    logo_uri = models.CharField(_("logo URI"), max_length=500, blank=True)
    redirect_uris = models.JSONField(_("redirect URIs"), default=list)
    grant_types = models.JSONField(_("grant types"), default=list)
    token_endpoint_auth_method = models.CharField(_("token endpoint authentication"), max_length=40, default="none")
    secret_hash = models.CharField(_("secret hash"), max_length=64, blank=True, editable=False)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    metadata_expires_at = models.DateTimeField(
        _("metadata fresh until"), null=True, blank=True, help_text=_("When its metadata document is fetched again.")
    )
    disabled_at = models.DateTimeField(_("disabled"), null=True, blank=True)

    objects = ClientManager()

    class Meta:
        verbose_name = _("OAuth client")
        verbose_name_plural = _("OAuth clients")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.name or self.client_id

    # authlib's ClientMixin
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = list(self.redirect_uris)
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this server knows (unknown ones are dropped: RFC 6749 section 3.3); all if none."""
        from .scopes import scopes_supported

        supported = scopes_supported()
        requested = [s for s in (scope or "").split() if s in supported]
        return " ".join(dict.fromkeys(requested or supported))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri_matches(redirect_uri, list(self.redirect_uris))

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.secret_hash) and hmac.compare_digest(self.secret_hash, hash_token(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token") and grant_type in self.grant_types


class Consent(models.Model):
    """A remembered "Allow": the user's next authorization of this client, resource and scopes skips the page."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mcp_oauth_consents")
    client = models.ForeignKey(OAuthClient, on_delete=models.CASCADE, related_name="consents")
    resource = models.CharField(_("resource"), max_length=500)
    scope = models.CharField(_("scope"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("given"), default=timezone.now)

    objects = ConsentManager()

    class Meta:
        verbose_name = _("OAuth consent")
        verbose_name_plural = _("OAuth consents")
        constraints = [models.UniqueConstraint(fields=("user", "client", "resource"), name="mcp_oauth_consent_unique")]

    def __str__(self) -> str:
        return f"{self.user} → {self.client} ({self.resource})"


class Grant(models.Model):
    """One authorization and the family of tokens issued from it; revoking it ends them and their sessions."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mcp_oauth_grants")
    client = models.ForeignKey(OAuthClient, on_delete=models.CASCADE, related_name="grants")
    resource = models.CharField(_("resource"), max_length=500)
    scope = models.CharField(_("scope"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    revoke_reason = models.CharField(_("revoked because"), max_length=30, choices=RevokeReason.choices, blank=True)

    objects = GrantManager()

    class Meta:
        verbose_name = _("OAuth grant")
        verbose_name_plural = _("OAuth grants")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.user} → {self.client} ({self.resource})"

    @property
    def ref(self) -> str:
        """The non-secret reference its sessions and tickets record (``credential_ref``)."""
        return f"oauth:{self.pk}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuthorizationCode(models.Model):
    """A grant's authorization code: single-use, short-lived, bound to its redirect URI and PKCE challenge."""

    grant = models.ForeignKey(Grant, on_delete=models.CASCADE, related_name="codes")
    code_hash = models.CharField(max_length=64, unique=True, editable=False)
    redirect_uri = models.CharField(max_length=2000)
    code_challenge = models.CharField(max_length=128)
    code_challenge_method = models.CharField(max_length=10, default="S256")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    objects = AuthorizationCodeManager()

    class Meta:
        verbose_name = _("OAuth authorization code")
        verbose_name_plural = _("OAuth authorization codes")

    def __str__(self) -> str:
        return f"code of grant {self.grant_id}"

    # authlib's AuthorizationCodeMixin
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.grant.scope


class _Token(models.Model):
    """What access and refresh tokens share; authlib's ``TokenMixin`` for the revocation endpoint."""

    grant = models.ForeignKey(Grant, on_delete=models.CASCADE, related_name="+")
    prefix = models.CharField(_("prefix"), max_length=PREFIX_LENGTH, editable=False)
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True, db_index=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.grant})"

    def check_client(self, client: Any) -> bool:
        return bool(self.grant.client_id == client.pk)

    def get_scope(self) -> str:
        return self.grant.scope

    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def is_revoked(self) -> bool:
        return self.revoked_at is not None or self.grant.revoked_at is not None

    def get_user(self) -> Any:
        return self.grant.user

    def get_client(self) -> OAuthClient:
        return self.grant.client


class OAuthAccessToken(_Token):
    grant = models.ForeignKey(Grant, on_delete=models.CASCADE, related_name="access_tokens")

    objects = AccessTokenManager()

    class Meta:
        verbose_name = _("OAuth access token")
        verbose_name_plural = _("OAuth access tokens")
        ordering = ("-created_at",)


class OAuthRefreshToken(_Token):
    grant = models.ForeignKey(Grant, on_delete=models.CASCADE, related_name="refresh_tokens")
    # Set when it was exchanged for new tokens (rotation): presented again, it revokes its grant.
    used_at = models.DateTimeField(_("used"), null=True, blank=True)

    objects = RefreshTokenManager()

    class Meta:
        verbose_name = _("OAuth refresh token")
        verbose_name_plural = _("OAuth refresh tokens")
        ordering = ("-created_at",)
