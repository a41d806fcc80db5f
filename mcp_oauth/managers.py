"""The OAuth models' operations: managers own what is done to the records (views, admin and the server call these).

Models are looked up through the app registry where an operation reaches
another model, so that this module and the models do not import each other.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.db import models, transaction
from django.utils import timezone

from mcp_sessions import audit
from mcp_sessions.audit import AuditKind
from mcp_sessions.revocation import revoke_issued

from .choices import ClientKind, RevokeReason
from .secrets import ACCESS_TAG, CODE_TAG, REFRESH_TAG, hash_token, is_shaped, new_secret

if TYPE_CHECKING:
    from .models import (
        AuthorizationCode,
        Consent,  # noqa: F401  (named in a string: ``models.Manager["Consent"]``)
        Grant,
        OAuthAccessToken,
        OAuthClient,
        OAuthRefreshToken,
    )

LAST_USED_RESOLUTION = timedelta(minutes=1)


def _model(name: str) -> Any:
    return apps.get_model("mcp_oauth", name)


def _after(seconds: float | None) -> datetime | None:
    return None if seconds is None else timezone.now() + timedelta(seconds=seconds)


class ClientQuerySet(models.QuerySet["OAuthClient"]):
    def active(self) -> ClientQuerySet:
        return self.filter(disabled_at__isnull=True)

    def disable(self) -> int:
        """Disable these clients and revoke every grant of theirs (ending its sessions); how many were disabled."""
        pks = list(self.active().values_list("pk", flat=True))
        if not pks:
            return 0

        with transaction.atomic():
            self.model._default_manager.filter(pk__in=pks).update(disabled_at=timezone.now())
            _model("Grant").objects.filter(client__in=pks).revoke(RevokeReason.CLIENT_DISABLED)
        return len(pks)


class ClientManager(models.Manager.from_queryset(ClientQuerySet)["OAuthClient"]):  # type: ignore[misc]
    def find(self, client_id: str) -> OAuthClient | None:
        """The active client with this ID, if any."""
        client: OAuthClient | None = self.active().filter(client_id=client_id).first()
        return client

    def register(self, fields: dict[str, Any], *, secret: str | None, registered_by: Any = None) -> OAuthClient:
        """Record a dynamically registered client (``fields`` validated already); only the secret's hash is kept."""

        client: OAuthClient = self.create(
            kind=ClientKind.DYNAMIC,
            secret_hash=hash_token(secret) if secret else "",
            registered_by=registered_by if getattr(registered_by, "pk", None) else None,
            **fields,
        )
        return client

    def from_document(self, client_id: str, fields: dict[str, Any], *, fresh_until: datetime) -> OAuthClient | None:
        """The client a metadata document describes, saved (created or refreshed); None if an admin disabled it."""

        client, _created = self.update_or_create(
            client_id=client_id,
            defaults={"kind": ClientKind.METADATA_DOCUMENT, "metadata_expires_at": fresh_until, **fields},
        )
        return None if client.disabled_at is not None else client


class ConsentManager(models.Manager["Consent"]):
    def covers(self, user: Any, client: OAuthClient, resource: str, scope: str) -> bool:
        """Whether the user's remembered consent for this client and resource includes every scope asked for."""
        consent = self.filter(user=user, client=client, resource=resource).first()
        return consent is not None and set(scope.split()) <= set(consent.scope.split())

    def remember(self, user: Any, client: OAuthClient, resource: str, scope: str) -> None:
        self.update_or_create(user=user, client=client, resource=resource, defaults={"scope": scope})

    def withdraw(self, user: Any, client: OAuthClient) -> int:
        """Forget the user's consents to ``client`` and revoke its grants (ending their sessions); grants revoked."""

        with transaction.atomic():
            self.filter(user=user, client=client).delete()
            revoked: int = _model("Grant").objects.filter(user=user, client=client).revoke(RevokeReason.USER)
        return revoked

    def withdraw_own(self, user: Any, client_pk: int, *, remote_addr: str | None = None) -> tuple[OAuthClient, int]:
        """:meth:`withdraw` by ``user`` themselves (Your MCP access), recorded in the audit trail; the client, and
        how many grants were revoked.

        ``DoesNotExist`` unless ``user`` ever allowed client ``client_pk`` (has a grant of it): a client only others
        allowed is not found, as one that never was. One withdrawn already is recorded nowhere: ``(client, 0)``.
        """
        granted = _model("Grant").objects.for_user(user).values("client")
        client: OAuthClient = _model("OAuthClient").objects.filter(pk__in=granted).get(pk=client_pk)
        revoked = self.withdraw(user, client)
        if revoked:
            detail = f"{client.client_id} {client.name}".strip()
            audit.record(AuditKind.APP_REVOKED, user=user, remote_addr=remote_addr, detail=detail)
        return client, revoked


class GrantQuerySet(models.QuerySet["Grant"]):
    def active(self) -> GrantQuerySet:
        return self.filter(revoked_at__isnull=True)

    def for_user(self, user: Any) -> GrantQuerySet:
        if not getattr(user, "is_authenticated", False):
            return self.none()
        return self.filter(user=user)

    def revoke(self, reason: str) -> int:
        """Revoke these grants and all their tokens, and end the sessions those opened (any process); how many.

        The sessions are ended through :func:`mcp_sessions.revocation.revoke_issued`: their records close,
        each worker is told to end them, and every worker's credential cache forgets the access tokens.
        """
        pks = list(self.active().values_list("pk", flat=True))
        if not pks:
            return 0
        now = timezone.now()
        access = _model("OAuthAccessToken").objects.filter(grant__in=pks)
        hashes = list(access.filter(revoked_at__isnull=True).values_list("token_hash", flat=True))
        with transaction.atomic():
            self.model._default_manager.filter(pk__in=pks).update(revoked_at=now, revoke_reason=reason)
            access.filter(revoked_at__isnull=True).update(revoked_at=now)
            _model("OAuthRefreshToken").objects.filter(grant__in=pks, revoked_at__isnull=True).update(revoked_at=now)
            revoke_issued([f"oauth:{pk}" for pk in pks], token_hashes=hashes)
        return len(pks)


class GrantManager(models.Manager.from_queryset(GrantQuerySet)["Grant"]):  # type: ignore[misc]
    def clear_expired(self, days: float) -> int:
        """Delete the grants revoked more than ``days`` ago (their codes and tokens with them); how many."""
        deleted, _ = self.filter(revoked_at__lt=timezone.now() - timedelta(days=days)).delete()
        return int(deleted)

    def issue_tokens(
        self, grant: Grant, *, access_lifetime: float, refresh_lifetime: float | None, refresh: bool
    ) -> dict[str, Any]:
        """New tokens of ``grant``, stored hashed: the token response's secrets and lifetimes (returned once)."""
        access_secret = new_secret(ACCESS_TAG)
        _model("OAuthAccessToken").objects.create(
            grant=grant,
            prefix=access_secret[:12],
            token_hash=hash_token(access_secret),
            expires_at=_after(access_lifetime),
        )
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": access_secret,
            "expires_in": int(access_lifetime),
            "scope": grant.scope,
        }
        if refresh:
            refresh_secret = new_secret(REFRESH_TAG)
            _model("OAuthRefreshToken").objects.create(
                grant=grant,
                prefix=refresh_secret[:12],
                token_hash=hash_token(refresh_secret),
                expires_at=_after(refresh_lifetime),
            )
            token["refresh_token"] = refresh_secret
        return token


class AuthorizationCodeManager(models.Manager["AuthorizationCode"]):
    def store(
        self, secret: str, grant: Grant, *, redirect_uri: str, challenge: str, method: str, lifetime: float
    ) -> None:
        """Keep the code ``secret`` (made by :func:`~mcp_oauth.secrets.new_secret`) of ``grant``, hashed."""
        self.create(
            grant=grant,
            code_hash=hash_token(secret),
            redirect_uri=redirect_uri,
            code_challenge=challenge,
            code_challenge_method=method,
            expires_at=timezone.now() + timedelta(seconds=lifetime),
        )

    def redeem(self, secret: str, client: OAuthClient) -> AuthorizationCode | None:
        """The unexpired code of ``client`` with this secret, now used up; else None.

        A code presented again revokes its grant, and so every token issued with it (RFC 6749 section 4.1.2).
        """

        if not is_shaped(secret, CODE_TAG):
            return None
        code = self.select_related("grant", "grant__user").filter(code_hash=hash_token(secret)).first()
        if (
            code is None
            or code.grant.client_id != client.pk
            or not hmac.compare_digest(code.code_hash, hash_token(secret))
        ):
            return None
        # The conditional update is what makes a code single-use under concurrency.
        if not self.filter(pk=code.pk, used_at__isnull=True).update(used_at=timezone.now()):
            _model("Grant").objects.filter(pk=code.grant_id).revoke(RevokeReason.CODE_REUSE)
            return None
        if code.expires_at <= timezone.now() or code.grant.revoked_at is not None:
            return None
        return code

    def clear_expired(self) -> int:
        deleted, _ = self.filter(expires_at__lt=timezone.now() - timedelta(days=1)).delete()
        return deleted


class AccessTokenManager(models.Manager["OAuthAccessToken"]):
    def authenticate(self, secret: str) -> OAuthAccessToken | None:
        """The usable access token with this secret: unexpired, unrevoked, its grant and client active, its user
        active; its grant's use noted at most once a minute."""
        if not is_shaped(secret, ACCESS_TAG):
            return None
        digest = hash_token(secret)
        now = timezone.now()
        token = (
            self.select_related("grant", "grant__user", "grant__client")
            .filter(
                token_hash=digest,
                revoked_at__isnull=True,
                grant__revoked_at__isnull=True,
                grant__client__disabled_at__isnull=True,
                grant__user__is_active=True,
            )
            .filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))
            .first()
        )
        if token is None or not hmac.compare_digest(token.token_hash, digest):
            return None
        grant = token.grant
        if grant.last_used_at is None or now - grant.last_used_at > LAST_USED_RESOLUTION:
            _model("Grant").objects.filter(pk=grant.pk).update(last_used_at=now)
            grant.last_used_at = now
        return token

    def clear_expired(self, days: float) -> int:
        """Delete the access tokens expired or revoked more than ``days`` ago; how many."""
        before = timezone.now() - timedelta(days=days)
        deleted, _ = self.filter(models.Q(expires_at__lt=before) | models.Q(revoked_at__lt=before)).delete()
        return deleted

    def find(self, secret: str) -> OAuthAccessToken | None:
        """The token with this secret, whatever its state (the revocation endpoint's lookup)."""
        if not is_shaped(secret, ACCESS_TAG):
            return None
        found: OAuthAccessToken | None = self.select_related("grant").filter(token_hash=hash_token(secret)).first()
        return found

    def revoke(self, tokens: Iterable[OAuthAccessToken]) -> None:
        """Revoke these access tokens, ending the sessions of their grants (the sessions know grants, not tokens)."""
        tokens = list(tokens)
        self.filter(pk__in=[t.pk for t in tokens], revoked_at__isnull=True).update(revoked_at=timezone.now())
        revoke_issued({t.grant.ref for t in tokens}, token_hashes=[t.token_hash for t in tokens])


class RefreshTokenManager(models.Manager["OAuthRefreshToken"]):
    def clear_expired(self, days: float) -> int:
        """Delete the refresh tokens expired, used or revoked more than ``days`` ago; how many.

        A used one is kept that long to notice its reuse (which revokes its grant).
        """
        before = timezone.now() - timedelta(days=days)
        stale = models.Q(expires_at__lt=before) | models.Q(used_at__lt=before) | models.Q(revoked_at__lt=before)
        deleted, _ = self.filter(stale).delete()
        return deleted

    def find(self, secret: str) -> OAuthRefreshToken | None:
        if not is_shaped(secret, REFRESH_TAG):
            return None
        found: OAuthRefreshToken | None = (
            self.select_related("grant", "grant__user", "grant__client").filter(token_hash=hash_token(secret)).first()
        )
        return found

    def redeem(self, secret: str, client: OAuthClient) -> OAuthRefreshToken | None:
        """The usable refresh token of ``client`` with this secret, now used up (rotation); else None.

        One used already (rotated away) revokes its whole family: its grant, every token, their sessions.
        """

        token = self.find(secret)
        if token is None or token.grant.client_id != client.pk:
            return None
        if token.revoked_at is not None or token.grant.revoked_at is not None:
            return None
        if not self.filter(pk=token.pk, used_at__isnull=True).update(used_at=timezone.now()):
            _model("Grant").objects.filter(pk=token.grant_id).revoke(RevokeReason.REFRESH_REUSE)
            return None
        if token.is_expired() or not token.grant.user.is_active or token.grant.client.disabled_at is not None:
            return None
        return token
