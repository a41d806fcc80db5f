"""The credential pin: how a live session admits its owner's requests without asking the database.

A session remembers the fingerprint of the credential that opened it and when
the database last confirmed that credential. A request presenting the same
credential within ``RECHECK_INTERVAL`` of that check is admitted at once
(:func:`~mcp_gateway.binding.pinned_session`); any other goes through the
database, whose answer renews the pin (:meth:`CredentialPin.confirm`).
Revoking the credential closes the session, so a pin never outlives it by
more than one interval.
"""

from __future__ import annotations

import hmac
import math
import time

from ..auth import Credential
from ..conf import gateway_settings


class CredentialPin:
    """The credential a session was opened with, and when the database last vouched for it."""

    # Slots: every open session holds one.
    __slots__ = ("checked_at", "fingerprint", "renewing")

    def __init__(self, credential: Credential) -> None:
        self.fingerprint = credential.fingerprint
        # ``time.monotonic()`` of the last confirmation (the credential's own, which the cache of verified
        # credentials may have served). Never, for a credential the database vouched for only in the past (a login
        # ticket): no pin until confirmed.
        self.checked_at = credential.checked_at if credential.verified else -math.inf
        self.renewing = False  # a check of the pinned credential is under way off the requests' path

    def admits(self, fingerprint: str) -> bool:
        """Whether ``fingerprint`` is the pinned credential's, confirmed less than ``RECHECK_INTERVAL`` ago."""
        if not self.fingerprint or not hmac.compare_digest(self.fingerprint, fingerprint):
            return False
        interval: float = gateway_settings.RECHECK_INTERVAL
        return time.monotonic() - self.checked_at < interval

    def confirm(self, credential: Credential, *, checked_at: float | None = None) -> None:
        """The database authenticated ``credential`` as the session's owner: renew the pin if it is the one.

        ``checked_at`` (``time.monotonic()``) is when that check began, if earlier than the credential says (a
        credential from the cache of verified credentials says when it was checked).
        """
        if not credential.verified:
            return  # e.g. a ticket resuming the stream: it says nothing about the login now
        pinned = self.fingerprint
        if pinned and credential.fingerprint and hmac.compare_digest(pinned, credential.fingerprint):
            checked = min(credential.checked_at, time.monotonic(), math.inf if checked_at is None else checked_at)
            self.checked_at = max(self.checked_at, checked)  # an older check than the last one renews nothing

    def renewal_due(self) -> bool:
        """Whether the pin is in the last quarter of its life with no renewal under way.

        The request that notices renews it in the background (see
        :func:`~mcp_gateway.binding.pinned_session`): a client that keeps
        sending never meets an expired pin, so never waits for the database.
        """
        interval: float = gateway_settings.RECHECK_INTERVAL
        return not self.renewing and time.monotonic() - self.checked_at > interval * 0.75
