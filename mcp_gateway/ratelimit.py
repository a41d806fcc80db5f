"""Per-user POST rate limit: a fixed-window counter in Django's cache.

The counter lives in the cache named by ``MCP_GATEWAY_CACHE``, so it is shared
by every worker when that cache is (Redis, Memcached, the database cache); with
the default in-process cache each worker counts on its own, which a deploy
check points out.
"""

from __future__ import annotations

import math
import time
from typing import Any

from django.core.cache import caches

from .conf import gateway_settings
from .exceptions import TooManyRequests


async def check_rate(user: Any) -> None:
    """Count one POST for ``user``; raise :class:`TooManyRequests` over the limit."""
    limit = gateway_settings.RATE_LIMIT
    if limit is None:
        return
    allowed, window = limit
    now = time.time()
    bucket = int(now // window)
    key = f"mcp_gateway:rate:{user.pk}:{window}:{bucket}"
    cache = caches[gateway_settings.CACHE]
    if await cache.aadd(key, 1, timeout=int(window) + 1):
        count = 1
    else:
        try:
            count = await cache.aincr(key)
        except ValueError:  # expired between add and incr: a new window
            await cache.aset(key, 1, timeout=int(window) + 1)
            count = 1
    if count > allowed:
        raise TooManyRequests(retry_after=max(1, math.ceil((bucket + 1) * window - now)))
