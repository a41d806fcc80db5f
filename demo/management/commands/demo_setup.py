"""Create (or reset) the demo users and print how to log in."""

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from demo.models import Note

USERS = {
    "demo": ["Buy milk", "Call the bank about the mortgage"],
    "other": ["Other's private note: nobody else may read this"],
}


class Command(BaseCommand):
    help = "Create the demo users with fresh random passwords and a few notes each; print the demo login."

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
        self.stdout.write(
            "\nDemo site: http://127.0.0.1:8000/  (admin at /admin/)\n"
            f"Log in as:  demo / {password}\n"
            "MCP (HTTP+SSE): http://127.0.0.1:8000/mcp/sse\n"
            "A bearer token for MCP clients:        .venv/bin/python manage.py create_mcp_token demo\n"
            "Or cookie headers for MCP clients:     .venv/bin/python manage.py demo_headers demo\n"
        )
