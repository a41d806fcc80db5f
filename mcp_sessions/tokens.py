"""Personal access tokens' operations: issuing, finding by secret, revoking (``AccessToken.objects``)."""

from __future__ import annotations

import hmac
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone

from . import audit
from .choices import TokenState
from .ids import (
    TOKEN_PREFIX_LENGTH,
    hash_token,
    is_token_shaped,
    new_token,
)
from .scoping import token_scopes

if TYPE_CHECKING:
    from .models import (
        AccessToken,
    )
from .audit import AuditKind
from .managers import OwnedQuerySet, _model, announce_credentials_revoked

LAST_USED_RESOLUTION = timedelta(minutes=1)


def _token_is_active(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> bool:
    """The one rule of an active token, for a row in memory; :func:`_active_token_q` says it to the database."""
    return revoked_at is None and (expires_at is None or expires_at > now)


def _active_token_q(now: datetime) -> models.Q:
    """:func:`_token_is_active` as a filter: not revoked, and no expiry or one still ahead."""
    return models.Q(revoked_at__isnull=True) & (models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class AccessTokenQuerySet(OwnedQuerySet["AccessToken"]):
    def active(self) -> AccessTokenQuerySet:
        """Neither revoked nor expired (:attr:`AccessToken.is_active`); whoever owns them."""
        return self.filter(_active_token_q(timezone.now()))

    def expired(self) -> AccessTokenQuerySet:
        """Not revoked, but past their expiry."""
        return self.filter(revoked_at__isnull=True, expires_at__lte=timezone.now())

    def revoked(self) -> AccessTokenQuerySet:
        return self.filter(revoked_at__isnull=False)

    def in_state(self, state: str) -> AccessTokenQuerySet:
        """The tokens in ``state`` (a :class:`TokenState`)."""
        by_state = {TokenState.ACTIVE: self.active, TokenState.EXPIRED: self.expired, TokenState.REVOKED: self.revoked}
        return by_state[TokenState(state)]()

    def usable(self) -> AccessTokenQuerySet:
        """Active, and owned by an active user: the tokens that authenticate."""
        return self.active().filter(user__is_active=True)

    def revoke(self) -> tuple[int, int]:
        """Revoke those not revoked yet and end the sessions opened with them: how many of each.

        A bulk update sends no ``post_save``, so the sessions are ended here
        (:meth:`McpSessionQuerySet.revoke`), not by the token receiver.
        """
        rows = list(self.filter(revoked_at__isnull=True).values_list("pk", "token_hash"))
        if not rows:
            return 0, 0
        pks = [pk for pk, _hash in rows]
        self.model._default_manager.filter(pk__in=pks).update(revoked_at=timezone.now())
        announce_credentials_revoked(token_hashes=[token_hash for _pk, token_hash in rows])
        return len(pks), _model("McpSession").objects.filter(token__in=pks).revoke()


_AccessTokenBaseManager = models.Manager.from_queryset(AccessTokenQuerySet)


class AccessTokenManager(_AccessTokenBaseManager["AccessToken"]):
    def issue(
        self,
        user: Any,
        name: str,
        expires_in: timedelta | None = None,
        *,
        expires_at: datetime | None = None,
        tools: Collection[str] = (),
        scopes: Collection[str] = (),
    ) -> tuple[AccessToken, str]:
        """Create a token, expiring after ``expires_in`` or at ``expires_at`` (or never); the secret is returned once.

        ``tools`` and ``scopes`` limit it (:func:`~mcp_sessions.scoping.token_scopes`; ``ValueError`` for an
        ill-formed scope): none, it reaches all its user may use. Only its prefix and hash are stored. Who may
        create a token for whom is the caller's to decide (the admin: :func:`mcp_sessions.admin.token_refusal`).
        """
        if expires_in is not None and expires_at is not None:
            raise ValueError("Give expires_in or expires_at, not both")
        scoped = token_scopes(tools, scopes)
        secret = new_token()
        token = self.create(
            scopes=scoped,
            user=user,
            name=name,
            prefix=secret[:TOKEN_PREFIX_LENGTH],
            token_hash=hash_token(secret),
            expires_at=timezone.now() + expires_in if expires_in else expires_at,
        )
        return token, secret

    def issue_own(
        self,
        user: Any,
        name: str,
        expires_in: timedelta | None = None,
        *,
        scopes: Collection[str] = (),
        remote_addr: str | None = None,
    ) -> tuple[AccessToken, str]:
        """:meth:`issue` a token for ``user`` by ``user`` themselves (Your MCP access), recorded in the audit trail.

        ``scopes`` limit it, as :meth:`issue`'s; which ones ``user`` may choose is the caller's to decide (the
        page offers :func:`~mcp_sessions.scoping.offered_scopes`). The row names the token by its stored prefix,
        never by its secret.
        """
        token, secret = self.issue(user, name, expires_in, scopes=scopes)
        audit.record(AuditKind.TOKEN_CREATED, user=user, remote_addr=remote_addr, detail=_token_detail(token))
        return token, secret

    def revoke_own(self, user: Any, pk: int, *, remote_addr: str | None = None) -> tuple[int, int]:
        """Revoke ``user``'s token ``pk`` and end its sessions (:meth:`AccessTokenQuerySet.revoke`), with an audit row.

        ``DoesNotExist`` if ``user`` has no token ``pk``: another user's token is not found, the same way as one
        that never was. One revoked already is left as it is, and recorded nowhere: ``(0, 0)``.
        """
        token = self.for_user(user).get(pk=pk)
        revoked = self.filter(pk=token.pk).revoke()
        if revoked[0]:
            audit.record(AuditKind.TOKEN_REVOKED, user=user, remote_addr=remote_addr, detail=_token_detail(token))
        return revoked

    def find_usable(self, secret: str) -> AccessToken | None:
        """The usable token with this secret, found by its hash and compared in constant time."""
        if not is_token_shaped(secret):
            return None
        digest = hash_token(secret)
        token = self.usable().select_related("user").filter(token_hash=digest).first()
        if token is None or not hmac.compare_digest(token.token_hash, digest):
            return None
        return token

    def authenticate(self, secret: str) -> AccessToken | None:
        """:meth:`find_usable`, noting the use at most once a minute (not a write per request)."""
        token = self.find_usable(secret)
        now = timezone.now()
        if token is not None and (token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION):
            self.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token


def _token_detail(token: AccessToken) -> str:
    """How an audit row names a token: its stored prefix and its name (never the secret)."""
    return f"{token.prefix}… {token.name}"
