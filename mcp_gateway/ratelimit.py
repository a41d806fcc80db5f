"""Per-user POST rate limit: a fixed-window counter in Django's cache.

The counter lives in the cache named by ``MCP_GATEWAY_CACHE``, so it is shared
by every worker when that cache is (Redis, Memcached, the database cache); with
the default in-process cache each worker counts on its own, which a deploy
check points out.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import caches

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
    try:
        try:
            count = await sync_to_async(_count)(gateway_settings.CACHE, key, int(window) + 1)
        except Exception:
            # Once: a pooled connection that outlived a cache restart fails on first use, then reconnects.
            count = await sync_to_async(_count)(gateway_settings.CACHE, key, int(window) + 1)
    except Exception:
        # The shared cache is down (e.g. Redis restarting): refuse as retryable rather than crash with a 500.
        logger.warning("Rate-limit cache unavailable; request refused with 503", exc_info=True)
        raise ServiceUnavailable("Rate-limit store unavailable, retry later") from None
    if count > allowed:
        raise TooManyRequests(retry_after=max(1, math.ceil((bucket + 1) * window - now)))


def _count(alias: str, key: str, timeout: int) -> int:
    """Add one to the window's counter: add-then-incr in one thread hop, not one per cache call."""
    cache = caches[alias]
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr: a new window
        cache.set(key, 1, timeout=timeout)
        return 1
