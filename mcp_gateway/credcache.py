"""The worker's cache of verified credentials: a request need not query the database for a credential it just checked.

A POST that no session pin vouches for (above all a 2026-07-28 per-request
POST, which has no session at all) would otherwise query the database on every
request. :func:`mcp_gateway.identity.authenticate_cached` looks here first,
under the presented credential's fingerprint (a digest, never the secret:
:func:`~mcp_gateway.auth.presented_credential`), and stores what the full
check gives.

What keeps it honest:

- **revocation drops entries at once, in every worker.** Logout, a password
  change, deactivation, deletion and token revocation send
  :data:`mcp_sessions.signals.credentials_revoked`; the gateway
  (:func:`mcp_gateway.receivers.forget_revoked_credentials`) forgets them in
  its own process and broadcasts :class:`~mcp_gateway.wire.ForgetCredentialsMessage`
  to :data:`~mcp_gateway.wire.CREDENTIALS_GROUP`, which every worker's inbox
  joins before it caches anything (:meth:`~mcp_gateway.worker.Worker.hears_revocations`);
- **an entry lives ``CREDENTIAL_CACHE_TTL`` seconds at most**, counted from
  the database check (:attr:`~mcp_gateway.auth.Credential.checked_at`) and
  never longer than ``RECHECK_INTERVAL``, so a change that bypasses the
  signals (a bulk ``update()``) or a lost broadcast is seen within it, as a
  pinned session sees it; a token past its expiry is never served;
- **a check that raced a revocation is not stored**: every forget moves the
  cache's :attr:`~CredentialCache.epoch` on, and a credential whose check began
  in an earlier epoch is dropped instead (it may predate the revocation);
- **a lost channel layer empties it**: revocations sent meanwhile may be lost.

At most ``CREDENTIAL_CACHE_SIZE`` entries, the least recently used dropped
first. An ``OrderedDict`` under a lock: the receiver forgets from whatever
thread sent the signal, the event loop reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from channels.layers import BaseChannelLayer, get_channel_layer
from django.core.signals import setting_changed
from django.utils import timezone

from .auth import Credential
from .conf import gateway_settings
from .permcache import permission_cache
from .wire import CREDENTIALS_GROUP, ForgetCredentialsMessage

logger = logging.getLogger("mcp_gateway")


def cache_ttl() -> float:
    """Seconds an entry may be served: ``CREDENTIAL_CACHE_TTL``, never more than ``RECHECK_INTERVAL``; 0: off."""
    recheck: float = gateway_settings.RECHECK_INTERVAL
    ttl = gateway_settings.CREDENTIAL_CACHE_TTL
    return recheck if ttl is None else min(ttl, recheck)


class CredentialCache:
    """Verified credentials by fingerprint, bounded in age and count; see the module docstring."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, Credential] = OrderedDict()
        self._lock = threading.Lock()
        # Moves on at every forget: a check begun before it may not be stored after it.
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    def enabled(self) -> bool:
        return cache_ttl() > 0 and gateway_settings.CREDENTIAL_CACHE_SIZE > 0

    def get(self, fingerprint: str) -> Credential | None:
        """The credential verified for ``fingerprint`` less than the TTL ago and not expired since, else None."""
        if not fingerprint:
            return None
        with self._lock:
            credential = self._entries.get(fingerprint)
            if credential is None:
                return None
            if self._fresh(credential):
                self._entries.move_to_end(fingerprint)
                return credential
            del self._entries[fingerprint]
            return None

    def _fresh(self, credential: Credential) -> bool:
        if not time.monotonic() - credential.checked_at < cache_ttl():
            return False
        return credential.expires_at is None or credential.expires_at > timezone.now()

    def put(self, credential: Credential, *, epoch: int) -> bool:
        """Keep ``credential``, verified by a check begun in ``epoch``; whether it was kept."""
        if not (credential.verified and credential.fingerprint and self.enabled()):
            return False
        with self._lock:
            if epoch != self.epoch or not self._fresh(credential):
                return False
            self._entries[credential.fingerprint] = credential
            self._entries.move_to_end(credential.fingerprint)
            while len(self._entries) > gateway_settings.CREDENTIAL_CACHE_SIZE:
                self._entries.popitem(last=False)
            return True

    def forget(self, message: ForgetCredentialsMessage) -> None:
        """Drop the credentials ``message`` names (see :class:`~mcp_gateway.wire.ForgetCredentialsMessage`)."""
        with self._lock:
            self.epoch += 1
            doomed = set(_known(self._entries, message.get("fingerprints", ())))
            if message.get("user") is not None:
                doomed.update(
                    fingerprint for fingerprint, credential in self._entries.items() if names(message, credential)
                )
            for fingerprint in doomed:
                del self._entries[fingerprint]

    def forget_received(self, message: Mapping[str, Any]) -> None:
        """:meth:`forget` for a message off the channel layer, whose shape is checked here."""
        fingerprints = message.get("fingerprints")
        forget: ForgetCredentialsMessage = {
            "type": "mcp.forget_credentials",
            "fingerprints": [f for f in fingerprints if isinstance(f, str)] if isinstance(fingerprints, list) else [],
            "keep_tokens": bool(message.get("keep_tokens")),
        }
        if isinstance(user := message.get("user"), str):
            forget["user"] = user
        self.forget(forget)

    def clear(self) -> None:
        """Forget everything (the channel layer was lost, or the settings changed)."""
        with self._lock:
            self.epoch += 1
            self._entries.clear()


def names(message: Mapping[str, Any], credential: Credential) -> bool:
    """Whether a forget message names ``credential``: by its fingerprint, or among its user's (tokens kept or not)."""
    fingerprints = message.get("fingerprints") or ()
    if credential.fingerprint and credential.fingerprint in fingerprints:
        return True
    user = message.get("user")
    if user is None or str(credential.user.pk) != user:
        return False
    return not (message.get("keep_tokens") and credential.token_id is not None)


def _known(entries: OrderedDict[str, Credential], fingerprints: Iterable[object]) -> Iterable[str]:
    for fingerprint in fingerprints:
        if isinstance(fingerprint, str) and fingerprint in entries:
            yield fingerprint


credential_cache = CredentialCache()


class RevocationFeed:
    """A worker's membership of :data:`~mcp_gateway.wire.CREDENTIALS_GROUP`, through its inbox's ``address``.

    What may cache a credential must hear when it is revoked: :meth:`joined`
    is False (cache nothing) when the channel layer cannot be reached.
    Membership is renewed well within the layer's ``group_expiry``
    (channels-redis forgets members after it, a day by default).
    """

    def __init__(self, address: Callable[[BaseChannelLayer], Awaitable[str]]) -> None:
        self._address = address
        self._joined: tuple[asyncio.AbstractEventLoop, BaseChannelLayer, str] | None = None
        self._joined_at = 0.0

    async def joined(self) -> bool:
        """Whether the inbox is in the group now, joining it (again) if it was not."""
        layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
        if layer is None:
            return False
        try:
            key = (asyncio.get_running_loop(), layer, await self._address(layer))
            renew_after = float(getattr(layer, "group_expiry", 86400)) / 4
            if self._joined != key or time.monotonic() - self._joined_at > renew_after:
                await layer.group_add(CREDENTIALS_GROUP, key[2])
                self._joined, self._joined_at = key, time.monotonic()
        except Exception:
            logger.warning("Could not join the group that hears of revoked credentials; caching none", exc_info=True)
            self._joined = None
            return False
        return True

    async def leave(self) -> None:
        """The worker is shutting down: leave the group (a killed worker's membership expires with the group's)."""
        joined, self._joined = self._joined, None
        if joined is None or joined[0] is not asyncio.get_running_loop():
            return
        with contextlib.suppress(Exception):
            await joined[1].group_discard(CREDENTIALS_GROUP, joined[2])

    def lost(self) -> None:
        """The inbox's channel layer failed: revocations sent meanwhile may be lost, and the membership too."""
        self._joined = None
        credential_cache.clear()
        permission_cache.clear()


def _clear(**kwargs: object) -> None:
    credential_cache.clear()


setting_changed.connect(_clear, dispatch_uid="mcp_gateway.credcache.clear")
