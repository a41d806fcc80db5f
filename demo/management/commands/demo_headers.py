"""Log a user in without a browser and print the headers an MCP client must send."""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.test import Client
from django.utils.crypto import get_random_string


class Command(BaseCommand):
    help = (
        "Create a login session for USERNAME and print the Cookie and X-CSRFToken headers "
        "a cookie-authenticated MCP client sends. Demo and development use only."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--json", action="store_true", help="Print the headers as a JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = get_user_model().objects.get(username=options["username"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {options['username']!r}; run demo_setup first.") from None
        client = Client()
        client.force_login(user)
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        csrf = get_random_string(32)
        headers = {
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={csrf}",
            "X-CSRFToken": csrf,
        }
        if options["json"]:
            import json

            self.stdout.write(json.dumps(headers))
        else:
            for name, value in headers.items():
                self.stdout.write(f"{name}: {value}")
