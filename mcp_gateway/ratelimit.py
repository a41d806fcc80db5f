"""Per-user POST rate limit: a fixed-window counter in Django's cache.

The counter lives in the cache named by ``MCP_GATEWAY_CACHE``, so it is shared
by every worker when that cache is (Redis, Memcached, the database cache); with
the default in-process cache each worker counts on its own, which a deploy
check points out.

A shared cache is not asked once per POST: each worker reserves numbers of the
window's counter in blocks (one ``incr`` by the block's size, in one thread
hop) and hands them to its POSTs from memory; a POST is accepted when its
number is at most the limit. The first block of a window is 1, each next one
twice the last, up to 1/32 of the limit (at most 256): a user who keeps
posting costs one round trip per block. So across all workers **never more
than the limit is accepted** in a window, and a user can be refused early by
at most the unused numbers the other workers hold: fewer than one block
(``limit // 32``, at most 256) per worker. A limit under 64 is counted exactly,
one round trip per POST. Once a worker's numbers pass the limit it refuses the
rest of the window without asking.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import setting_changed

from .conf import gateway_settings
from .exceptions import ServiceUnavailable, TooManyRequests

logger = logging.getLogger("mcp_gateway")


async def check_rate(user: Any) -> None:
    """Count one POST for ``user``; raise :class:`TooManyRequests` over the limit."""
    limit = gateway_settings.RATE_LIMIT
    if limit is None:
        return
    allowed, window = limit
    now = time.time()
    bucket = int(now // window)
    key = f"mcp_gateway:rate:{user.pk}:{window}:{bucket}"
    alias = gateway_settings.CACHE
    local, thread_sensitive = _plan(alias)
    if local is not None:
        number = _add(local, key, 1, int(window) + 1)  # in-process and non-blocking: no thread hop
    else:
        number = await _allowances.take(alias, key, bucket, allowed, int(window) + 1, thread_sensitive)
    if number > allowed:
        raise TooManyRequests(retry_after=max(1, math.ceil((bucket + 1) * window - now)))


class _Reserved:
    """The numbers ``next``..``last`` of one user's window counter that this worker reserved and not handed out."""

    __slots__ = ("block", "bucket", "last", "next", "refill")

    def __init__(self, bucket: int) -> None:
        self.bucket = bucket
        self.next, self.last = 1, 0
        self.block = 1
        self.refill: asyncio.Future[None] | None = None


class Allowances:
    """This worker's reserved numbers of the shared window counters, by counter key; see the module docstring.

    Holds one entry per user who posted in the current window: entries of past windows are dropped when a new
    window is first seen.
    """

    def __init__(self) -> None:
        self._reserved: dict[tuple[str, str], _Reserved] = {}
        self._bucket = 0

    def clear(self) -> None:
        self._reserved.clear()

    async def take(self, alias: str, key: str, bucket: int, allowed: int, expiry: int, thread_sensitive: bool) -> int:
        """The next number of counter ``key`` for one POST (over ``allowed``: refused), reserving a block if none."""
        if bucket > self._bucket:
            self._bucket = bucket
            self._reserved = {k: r for k, r in self._reserved.items() if r.bucket >= bucket}
        reserved = self._reserved.get((alias, key))
        if reserved is None:
            reserved = self._reserved[alias, key] = _Reserved(bucket)
        while reserved.next > reserved.last:
            if reserved.last >= allowed:
                return allowed + 1  # this worker's numbers passed the limit: the window is spent
            if reserved.refill is not None:
                # Another POST is reserving: share its block (if it failed, this one tries, and says so itself).
                await asyncio.wait([reserved.refill])
                continue
            refill = reserved.refill = asyncio.get_running_loop().create_future()
            try:
                size = reserved.block
                total = await _count_in_thread(alias, key, size, expiry, thread_sensitive)
                reserved.next, reserved.last = total - size + 1, total
                reserved.block = min(size * 2, max(1, min(allowed // 32, 256)))
            finally:
                reserved.refill = None
                refill.set_result(None)
        number = reserved.next
        reserved.next += 1
        return number


_allowances = Allowances()


async def _count_in_thread(alias: str, key: str, delta: int, expiry: int, thread_sensitive: bool) -> int:
    count = sync_to_async(_count, thread_sensitive=thread_sensitive)
    try:
        try:
            return await count(alias, key, delta, expiry)
        except Exception:
            # Once: a pooled connection that outlived a cache restart fails on first use, then reconnects.
            return await count(alias, key, delta, expiry)
    except Exception:
        # The shared cache is down (e.g. Redis restarting): refuse as retryable rather than crash with a 500.
        logger.warning("Rate-limit cache unavailable; request refused with 503", exc_info=True)
        raise ServiceUnavailable("Rate-limit store unavailable, retry later") from None


def _plan(alias: str) -> tuple[BaseCache | None, bool]:
    """How to count in cache ``alias``: (an instance to use inline, or None; whether the thread hop is sensitive).

    A cache in this process (locmem, dummy) is used inline, through one
    instance: Django hands out cache instances per thread and per async
    context, so ``caches[alias]`` would build one for every request, while a
    locmem cache's data is shared by its instances anyway, behind a lock held
    only in memory. A database cache shares the database's thread (its
    connections are closed there); a cache server (Redis, Memcached) is asked
    from any thread, not queued behind the database. Either way through that
    thread's instance (:func:`thread_cache`).
    """
    if alias not in _plans:
        cache = caches.create_connection(alias)
        inline = isinstance(cache, LocMemCache | DummyCache)
        _plans[alias] = (cache if inline else None, isinstance(cache, DatabaseCache))
    return _plans[alias]


_plans: dict[str, tuple[BaseCache | None, bool]] = {}


# Cache instances of the threads that count, one per thread and alias, as Django keeps them under WSGI.
# ``caches[alias]`` in a thread hop is per async context: a new instance for every request, and with a cache
# server a new connection pool, so a new connection, every time.
_thread_caches = threading.local()


def _forget_caches(*, setting: str, **kwargs: Any) -> None:
    global _thread_caches
    if setting in ("CACHES", "MCP_GATEWAY_CACHE", "MCP_GATEWAY_RATE_LIMIT"):
        _plans.clear()
        _thread_caches = threading.local()
        _allowances.clear()


setting_changed.connect(_forget_caches, dispatch_uid="mcp_gateway.ratelimit.forget_caches")


def thread_cache(alias: str) -> BaseCache:
    """This thread's instance of cache ``alias``, whose connections serve one request after another."""
    held = _thread_caches.__dict__
    if alias not in held:
        held[alias] = caches.create_connection(alias)
    cache: BaseCache = held[alias]
    return cache


def _count(alias: str, key: str, delta: int, timeout: int) -> int:
    """Add ``delta`` to the window's counter: add-then-incr in one thread hop, not one per cache call."""
    return _add(thread_cache(alias), key, delta, timeout)


def _add(cache: BaseCache, key: str, delta: int, timeout: int) -> int:
    """The counter ``key`` after adding ``delta``, created (expiring in ``timeout`` s) if missing."""
    # Most calls find the window's counter there: increment first (one call, two round trips on Redis, where
    # add-then-increment took three); create it only when missing.
    try:
        return cache.incr(key, delta)
    except ValueError:
        pass
    if cache.add(key, delta, timeout=timeout):
        return delta
    try:
        return cache.incr(key, delta)  # another worker created it meanwhile
    except ValueError:  # and it expired already: a new window
        cache.set(key, delta, timeout=timeout)
        return delta
