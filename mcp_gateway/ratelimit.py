"""Per-user POST rate limit: a fixed-window counter in Django's cache.

The counter lives in the cache named by ``MCP_GATEWAY_CACHE``, so it is shared
by every worker when that cache is (Redis, Memcached, the database cache); with
the default in-process cache each worker counts on its own, which a deploy
check points out.
"""

from __future__ import annotations

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
        count = _add_one(local, key, int(window) + 1)  # in-process and non-blocking: no thread hop
    else:
        count = await _count_in_thread(alias, key, int(window) + 1, thread_sensitive)
    if count > allowed:
        raise TooManyRequests(retry_after=max(1, math.ceil((bucket + 1) * window - now)))


async def _count_in_thread(alias: str, key: str, expiry: int, thread_sensitive: bool) -> int:
    count = sync_to_async(_count, thread_sensitive=thread_sensitive)
    try:
        try:
            return await count(alias, key, expiry)
        except Exception:
            # Once: a pooled connection that outlived a cache restart fails on first use, then reconnects.
            return await count(alias, key, expiry)
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
    if setting in ("CACHES", "MCP_GATEWAY_CACHE"):
        _plans.clear()
        _thread_caches = threading.local()


setting_changed.connect(_forget_caches, dispatch_uid="mcp_gateway.ratelimit.forget_caches")


def thread_cache(alias: str) -> BaseCache:
    """This thread's instance of cache ``alias``, whose connections serve one request after another."""
    held = _thread_caches.__dict__
    if alias not in held:
        held[alias] = caches.create_connection(alias)
    cache: BaseCache = held[alias]
    return cache


def _count(alias: str, key: str, timeout: int) -> int:
    """Add one to the window's counter: add-then-incr in one thread hop, not one per cache call."""
    return _add_one(thread_cache(alias), key, timeout)


def _add_one(cache: BaseCache, key: str, timeout: int) -> int:
    # Most requests find the window's counter there: increment first (one call, two round trips on Redis, where
    # add-then-increment took three); create it only when missing.
    try:
        return cache.incr(key)
    except ValueError:
        pass
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return cache.incr(key)  # another request created it meanwhile
    except ValueError:  # and it expired already: a new window
        cache.set(key, 1, timeout=timeout)
        return 1
