"""The worker's cache of users as their permissions were last read: a request need not read them again unchanged.

Deciding a request's permissions (:func:`mcp_gateway.permissions.decide`) needs the user as the database has it
now and their permissions: three queries, about a millisecond of server CPU per call, several times what the call
costs otherwise (``bench/permissions.py``). So each worker keeps the user object it read, with the permission
caches Django's ``ModelBackend`` fills on it (``ahas_perm``), and reuses it until it changes:

- **a change drops it at once, in every worker.** Saving or deleting a user, changing their groups or
  permissions, a group's permissions, deleting a group or a permission (Django's own signals, the admin's
  changes among them) forget the user (or everyone) here when the transaction commits, and broadcast
  :class:`~mcp_gateway.wire.ForgetPermissionsMessage` to :data:`~mcp_gateway.wire.CREDENTIALS_GROUP`, which
  every worker's inbox joins before it caches anything (the revocation feed of :mod:`mcp_gateway.credcache`);
- **an entry lives ``PERMISSION_CACHE_TTL`` seconds at most** (default: ``RECHECK_INTERVAL``), so what no
  signal tells (a custom backend's own data, a bulk ``update()``, a lost broadcast) is seen within it;
  ``0``: no cache, every request reads the user and their permissions again;
- **a read that raced a change is not stored** (the cache's :attr:`~PermissionCache.epoch` moves on at every
  forget, as the credential cache's does).

At most ``CREDENTIAL_CACHE_SIZE`` users, the least recently used dropped first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from django.core.signals import setting_changed

from .conf import gateway_settings


def cache_ttl() -> float:
    """Seconds an entry may be served: ``PERMISSION_CACHE_TTL``, or ``RECHECK_INTERVAL`` when None; 0: off."""
    ttl = gateway_settings.PERMISSION_CACHE_TTL
    return float(gateway_settings.RECHECK_INTERVAL if ttl is None else ttl)


class PermissionCache:
    """Users by pk (a string), as read at most :func:`cache_ttl` seconds ago; see the module docstring."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    def enabled(self) -> bool:
        return cache_ttl() > 0 and gateway_settings.CREDENTIAL_CACHE_SIZE > 0

    def get(self, pk: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(pk)
            if entry is None:
                return None
            if time.monotonic() - entry[1] < cache_ttl():
                self._entries.move_to_end(pk)
                return entry[0]
            del self._entries[pk]
            return None

    def put(self, user: Any, *, epoch: int, read_at: float) -> bool:
        """Keep ``user``, read at ``read_at`` (monotonic) in ``epoch``; whether it was kept."""
        if not self.enabled():
            return False
        with self._lock:
            if epoch != self.epoch:
                return False
            key = str(user.pk)
            self._entries[key] = (user, read_at)
            self._entries.move_to_end(key)
            while len(self._entries) > gateway_settings.CREDENTIAL_CACHE_SIZE:
                self._entries.popitem(last=False)
            return True

    def forget(self, user_pk: str | None) -> None:
        """Drop one user (their pk as a string), or everyone (None)."""
        with self._lock:
            self.epoch += 1
            if user_pk is None:
                self._entries.clear()
            else:
                self._entries.pop(user_pk, None)

    def forget_received(self, message: Mapping[str, Any]) -> None:
        """:meth:`forget` for a message off the channel layer, whose shape is checked here."""
        user = message.get("user")
        self.forget(user if isinstance(user, str) else None)

    def clear(self) -> None:
        self.forget(None)


permission_cache = PermissionCache()


def _clear(**kwargs: object) -> None:
    permission_cache.clear()


setting_changed.connect(_clear, dispatch_uid="mcp_gateway.permcache.clear")
