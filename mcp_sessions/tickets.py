"""Stream tickets' operations: issuing, redeeming once, clearing (``StreamTicket.objects``)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone

from .ids import (
    hash_token,
    is_ticket_shaped,
    new_ticket,
)

if TYPE_CHECKING:
    from .models import (
        StreamTicket,
    )


def _session_auth_digests(user: Any) -> list[str]:
    """SHA-256 digests of the session auth hashes ``user`` has now: with ``SECRET_KEY`` first, then its fallbacks.

    A ticket stores a digest, not the hash: the hash is what a login session
    keeps to prove it predates no password change. Empty for a user model
    without session auth hashes (Django then verifies none either).
    """
    if not hasattr(user, "get_session_auth_hash"):
        return []
    hashes = [user.get_session_auth_hash()]
    if hasattr(user, "get_session_auth_fallback_hash"):
        hashes.extend(user.get_session_auth_fallback_hash())
    return [hashlib.sha256(value.encode()).hexdigest() for value in hashes]


class StreamTicketManager(models.Manager["StreamTicket"]):
    def clear_expired(self) -> int:
        """Delete the tickets past their expiry, used or not (a used one can never be used again anyway); how many."""
        deleted, _ = self.filter(expires_at__lt=timezone.now()).delete()
        return deleted

    def issue(
        self,
        user: Any,
        *,
        origin: str,
        lifetime: float,
        token_id: int | None,
        login_session_hash: str,
        credential_ref: str = "",
    ) -> str:
        """A new ticket for ``user``, bound to ``origin`` (possibly empty); returned once, stored hashed.

        It remembers the credential that asked for it, so that logging out or
        revoking that token also ends the stream the ticket opens; asked for
        with a login, also the user's session auth hash, so that a password
        change since voids it (as it logs out the user's other logins).
        """
        secret = new_ticket()
        auth_digests = _session_auth_digests(user) if login_session_hash else []
        self.create(
            user=user,
            ticket_hash=hash_token(secret),
            origin=origin,
            expires_at=timezone.now() + timedelta(seconds=lifetime),
            token_id=token_id,
            login_session_hash=login_session_hash,
            credential_ref=credential_ref,
            session_auth_hash=auth_digests[0] if auth_digests else "",
        )
        return secret

    def redeem(self, secret: str, origin: str) -> StreamTicket | None:
        """A valid, unused, unexpired ticket, now used up; else None.

        A ticket asked for from an origin is refused when presented with another
        ``Origin``. One presented with none is accepted: browsers send no Origin on
        a same-origin ``EventSource``, while cross-origin ones always carry it.
        One asked for with a token is refused once the token is not active; with a
        login, once the user's session auth hash changed (a password change, even
        one saved without signals). Logging out deletes the login's tickets.
        """
        if not is_ticket_shaped(secret):
            return None
        now = timezone.now()
        usable = self.filter(ticket_hash=hash_token(secret), used_at__isnull=True, expires_at__gt=now)
        ticket = usable.select_related("user", "token").first()
        if ticket is None or not ticket.user.is_active:
            return None
        if ticket.origin and origin and not hmac.compare_digest(ticket.origin, origin):
            return None
        if ticket.token is not None and not ticket.token.is_active:
            return None
        if ticket.login_session_hash and not _login_still_holds(ticket):
            return None
        # The conditional update is what makes a ticket single-use under concurrency.
        if not usable.filter(pk=ticket.pk).update(used_at=now):
            return None
        return ticket


def _login_still_holds(ticket: StreamTicket) -> bool:
    """Whether the user's session auth hash is still the one the ticket was issued under (no password change)."""
    current = _session_auth_digests(ticket.user)
    if not current:
        return not ticket.session_auth_hash
    return any(hmac.compare_digest(ticket.session_auth_hash, digest) for digest in current)
