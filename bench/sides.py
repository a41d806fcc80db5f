"""The servers a benchmark run compares, each under the gateway's launcher on a loopback port.

- ``gateway``: ``demo.asgi`` with bench/settings.py (every request authenticated by a bearer token, limits on but
  out of reach), on the in-memory channel layer; ``gateway-redis``: the same on ``RedisChannelLayer`` with its
  cache (the rate limit's counter) in Redis, one worker;
- ``sdk-sse``: the SDK's own ``sse_app()``; ``sdk-http``: its ``streamable_http_app()`` (Streamable HTTP
  2025-11-25 and, per request, 2026-07-28), its lifespan started on the first request;
- ``floor``: bench/floor.py, a bare ASGI app speaking just enough MCP.

All serve the same ``echo`` tool, async everywhere (bench/servers.py). The SDK's apps and the floor run without
Django settings (they read none).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.launcher import Launcher

from .wire import Target

ROOT = Path(__file__).resolve().parent.parent
ARGS = ("-v", "0", "--access-log", "/dev/null")


class Server(Launcher):
    """One server of the comparison, its output discarded; ``sse_path`` is where its HTTP+SSE stream opens."""

    sse_path = "mcp/sse"

    def __init__(
        self, name: str, app: str, env: Mapping[str, str | None], module: str = "daphne", args: tuple[str, ...] = ARGS
    ) -> None:
        super().__init__(app, module=module, env=env, args=args, log=False, name=name)

    def rss(self) -> int:
        return self.rss_bytes()


@dataclass
class Side:
    """A server to start: its application, environment and where it speaks each transport."""

    name: str
    app: str
    env: dict[str, str | None]
    sse_path: str = "/sse"
    mcp_path: str = "/mcp/"
    headers: dict[str, str] | None = None

    def start(self) -> Server:
        return Server(self.name, self.app, self.env, "mcp_gateway.daphne", ARGS)

    def target(self, server: Server) -> Target:
        return Target(server.port, self.sse_path, self.mcp_path, dict(self.headers or {}))


def bearer_headers(env: dict[str, str]) -> dict[str, str]:
    """A fresh database with one user and an access token of theirs; the header that carries it."""
    run = {"cwd": ROOT, "env": {**os.environ, **env}, "check": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], **run)  # type: ignore[call-overload]
    script = (
        "from django.contrib.auth import get_user_model; from mcp_sessions.models import AccessToken; "
        "print(AccessToken.objects.issue(get_user_model().objects.create_user('bench', password='x'), 'bench')[1])"
    )
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], capture_output=True, text=True, **run)  # type: ignore[call-overload]
    return {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}


def redis_up(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 6379), timeout=1).close()
        return True
    except OSError:
        return False


def redis_overrides(redis: str, prefix: str) -> dict[str, Any]:
    """Settings putting the gateway's channel layer and cache on Redis, keys under ``prefix``."""
    from .load import channel_layer_settings

    return {
        "CHANNEL_LAYERS": channel_layer_settings("core", f"{redis}/0", prefix),
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"{redis}/1",
                "KEY_PREFIX": prefix,
            }
        },
    }


def sides(database: str, redis: str | None) -> dict[str, Side]:
    """Every side of the comparison (``gateway-redis`` only with ``redis``), the gateway's database made."""
    django: dict[str, str | None] = {"DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB": database}
    django["REDIS_URL"] = None  # the demo's switch to Redis: off, the layer is chosen here
    bare: dict[str, str | None] = {"DJANGO_SETTINGS_MODULE": None}
    headers = bearer_headers({"DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB": database})
    result = {
        "gateway": Side("gateway", "demo.asgi:application", django, "/mcp/sse", "/mcp/", headers),
        "sdk-sse": Side("sdk-sse", "bench.servers:reference_app", bare),
        "sdk-http": Side("sdk-http", "bench.servers:modern_reference_app", bare),
        "floor": Side("floor", "bench.floor:application", bare),
    }
    if redis is not None:
        overrides = json.dumps(redis_overrides(redis, f"mcp-bench-{os.getpid()}"))
        env = {**django, "MCP_TEST_OVERRIDES": overrides}
        result["gateway-redis"] = Side("gateway-redis", "demo.asgi:application", env, "/mcp/sse", "/mcp/", headers)
    return result


# The SDK's app that serves each transport.
SDK_FOR = {"sse": "sdk-sse", "streamable": "sdk-http", "modern": "sdk-http"}
