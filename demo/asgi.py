"""ASGI entry point: the MCP gateway in front of the demo site.

Run with ``daphne demo.asgi:application``.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
django_asgi_app = get_asgi_application()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from mcp_gateway.routing import mcp_application  # noqa: E402

application = mcp_application(ASGIStaticFilesHandler(django_asgi_app))
