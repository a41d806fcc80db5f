"""Settings for multi-worker bench runs: the benchmark server, a throwaway database, the test-only task probe.

``BENCH_DB`` names the SQLite file; ``MCP_TEST_OVERRIDES`` (JSON) sets the channel layer, cache and limits,
as in ``tests.settings``.
"""

import json
import os

from demo.settings import *  # noqa: F403
from demo.settings import DATABASES

DATABASES["default"]["NAME"] = os.environ["BENCH_DB"]
MCP_GATEWAY_SERVER = "bench.servers.mcp"
ROOT_URLCONF = "tests.urls"  # the demo's URLs plus /_test/tasks
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
MCP_GATEWAY_MAX_SESSIONS_PER_USER = 1_000_000
MCP_GATEWAY_RATE_LIMIT = (1_000_000_000, 60)

globals().update(json.loads(os.environ.get("MCP_TEST_OVERRIDES", "{}")))
