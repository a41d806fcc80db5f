"""The ASGI app of bench/permissions.py: one guarded tool, with the gateway's gatekeeper, or without (``BENCH_BARE``).

Without it, the mount's server runs as the site made it: no permission check, no call record, the rest of the
gateway (authentication, guards, binding) unchanged, so the difference is what the gatekeeper costs.
"""

import copy
import os
from functools import cached_property
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django_asgi_app = get_asgi_application()

from mcp.server.mcpserver import MCPServer  # noqa: E402

from mcp_gateway.mounts import Mount  # noqa: E402
from mcp_gateway.permissions import require  # noqa: E402
from mcp_gateway.routing import DEFAULT_GUARDS, McpRouter  # noqa: E402

mcp = MCPServer("bench-permissions", log_level="WARNING")  # as bench.servers: no INFO line per request


@mcp.tool()
@require("demo.view_note")
async def echo(text: str) -> str:
    """Return the text unchanged; needs demo.view_note (the benchmark user has it through a group)."""
    return text


class BareMount(Mount):
    """A mount serving its server without the gateway's gatekeeper (the baseline)."""

    @cached_property
    def session_server(self) -> Any:
        clone = copy.copy(self.server)
        clone.middleware = list(self.server.middleware)
        return clone


if os.environ.get("BENCH_NO_STORE"):
    # The records are made (digest, signal) but not stored: what storing them costs, apart.
    from django.conf import settings

    settings.MCP_GATEWAY_CALL_RECORDS = False

mount_class = BareMount if os.environ.get("BENCH_BARE") else Mount
application = McpRouter(django_asgi_app, [mount_class("/mcp/", mcp)], DEFAULT_GUARDS)
