"""Test settings: the demo's, with a database the daphne subprocesses can share.

The test process and every daphne it starts read this module, so the database
name comes from an environment variable set here once and inherited by the
subprocesses. ``MCP_TEST_OVERRIDES`` (JSON) lets one daphne run with other
gateway settings, e.g. a short stall timeout.
"""

import json
import os
import tempfile
from pathlib import Path

from demo.settings import *  # noqa: F403
from demo.settings import DATABASES

if os.environ.get("DATABASE_ENGINE") == "postgresql":
    _name = os.environ.setdefault("MCP_TEST_DB_NAME", f"mcp_gateway_test_{os.getpid()}")
    DATABASES["default"]["NAME"] = _name
    DATABASES["default"]["TEST"] = {"NAME": _name}
else:
    _path = os.environ.setdefault(
        "MCP_TEST_DB_NAME", str(Path(tempfile.gettempdir()) / f"mcp-gateway-tests-{os.getpid()}.sqlite3")
    )
    DATABASES["default"]["NAME"] = _path
    DATABASES["default"]["TEST"] = {"NAME": _path}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ASGI_APPLICATION = "tests.asgi.application"
ROOT_URLCONF = "tests.urls"

# A dropped HTTP+SSE stream ends its session at once, as most tests expect; the resume tests set a window.
MCP_GATEWAY_RESUME_TIMEOUT = 0.0
# Shorter than the default (5 s), so the tests of changes that bypass revocation wait less; same behaviour.
MCP_GATEWAY_RECHECK_INTERVAL = 1.0

# Tokens may be issued for every mount of tests/asgi.py.
MCP_GATEWAY_OAUTH_RESOURCES = ["/mcp/", "/mcp-test/", "/mcp-conformance/"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "filters": {
        "sdk_client_errors": {"()": "mcp_gateway.logs.SdkClientErrorFilter"},
        "redact_secrets": {"()": "mcp_gateway.redaction.RedactSecretsFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["sdk_client_errors", "redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": "INFO"},
}

globals().update(json.loads(os.environ.get("MCP_TEST_OVERRIDES", "{}")))
