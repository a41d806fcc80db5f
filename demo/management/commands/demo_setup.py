"""Create (or reset) the demo users and print how to log in."""

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from demo.models import Note

USERS = {
    "demo": ["Buy milk", "Call the bank about the mortgage"],
    "other": ["Other's private note: nobody else may read this"],
}


class Command(BaseCommand):
    help = "Create the demo users with fresh random passwords and a few notes each; print the demo login."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="Where the demo site will be served (printed, not checked)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        password = secrets.token_urlsafe(12)
        for username, titles in USERS.items():
            user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
            user.set_password(password if username == "demo" else secrets.token_urlsafe(16))
            user.is_staff = user.is_superuser = username == "demo"
            user.save()
            if created:
                Note.objects.bulk_create(Note(owner=user, title=title) for title in titles)
        site = options["url"].rstrip("/")
        prefix = getattr(settings, "MCP_GATEWAY_PREFIX", "/mcp/")
        self.stdout.write(
            f"\nDemo site: {site}/  (admin at /admin/)\n"
            f"Log in as:  demo / {password}\n"
            f"MCP (Streamable HTTP): {site}{prefix}\n"
            f"MCP (HTTP+SSE):        {site}{prefix}sse\n"
            "A bearer token for MCP clients:        .venv/bin/python manage.py create_mcp_token demo\n"
            "Or cookie headers for MCP clients:     .venv/bin/python manage.py demo_headers demo\n"
            f"Or OAuth (mcp-remote, VS Code, Cursor): give them {site}{prefix} and log in as demo when asked\n"
            f"  (authorization server metadata: {site}/.well-known/oauth-authorization-server)\n"
        )
