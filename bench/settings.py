"""The demo's settings serving the benchmark server, on a throwaway database.

``BENCH_DB`` names the SQLite file; ``MCP_TEST_OVERRIDES`` (JSON), if set, replaces settings (bench/sides.py puts
the channel layer and cache on Redis with it).
"""

import json
import os

from demo.settings import *  # noqa: F403
from demo.settings import DATABASES

DATABASES["default"]["NAME"] = os.environ["BENCH_DB"]
MCP_GATEWAY_SERVER = "bench.servers.mcp"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
# Limits stay on, so their cost is measured, but high enough that one benchmark user never reaches them.
MCP_GATEWAY_MAX_SESSIONS_PER_USER = 1_000_000
MCP_GATEWAY_RATE_LIMIT = (1_000_000_000, 60)

globals().update(json.loads(os.environ.get("MCP_TEST_OVERRIDES", "{}")))
# bench/idle.py compares parking settings: "off" turns parking off.
if (_park_after := os.environ.get("MCP_BENCH_PARK_AFTER")) is not None:
    MCP_GATEWAY_PARK_AFTER = None if _park_after == "off" else float(_park_after)
