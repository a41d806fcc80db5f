"""Issue a personal access token for a user and print it once."""

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mcp_sessions.models import AccessToken


class Command(BaseCommand):
    help = "Create an MCP access token for USERNAME. The token is printed once and stored only as a hash."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="A label to tell tokens apart.")
        parser.add_argument("--expires-in", type=float, metavar="DAYS", help="Days until the token expires.")
        parser.add_argument(
            "--tool", action="append", default=[], metavar="NAME", help="Limit the token to this tool (repeatable)."
        )
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            metavar="SCOPE",
            help="Limit the token to this scope, e.g. mcp:prompts (repeatable). Neither: all its user may use.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {options['username']!r} is inactive; a token would not authenticate.")
        days = options["expires_in"]
        if days is not None and days <= 0:
            raise CommandError("--expires-in must be a positive number of days.")
        try:
            _, secret = AccessToken.objects.issue(
                user,
                options["name"],
                timedelta(days=days) if days else None,
                tools=options["tool"],
                scopes=options["scope"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(secret)
