"""The ASGI app the tests' daphne processes serve: several mounts, as a site with several servers would."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django_asgi_app = get_asgi_application()

from mcp_gateway.routing import mcp_application  # noqa: E402

application = mcp_application(
    django_asgi_app,
    servers={
        "/mcp/": "demo.mcp_server.mcp",
        "/mcp-test/": "tests.servers.lowlevel",
        # Tools, resources and prompts behind permissions (tests/test_permissions.py).
        "/mcp-perms/": "tests.permission_servers.guarded",
        "/mcp-perms-low/": "tests.permission_servers.lowlevel",
        # The official conformance suite's fixtures (test_* tools, resources, prompts); never in the demo.
        "/mcp-conformance/": "tests.conformance_server.conformance",
    },
)

# For the deploy checks: the gateway inside a Channels router counts as mounted; Django alone does not.
from channels.routing import ProtocolTypeRouter  # noqa: E402

routed_application = ProtocolTypeRouter({"http": application})
