"""Delete OAuth records past their use, like Django's ``clearsessions``: run it from cron."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from mcp_gateway.conf import gateway_settings
from mcp_oauth.models import AuthorizationCode, Grant, OAuthAccessToken, OAuthRefreshToken


class Command(BaseCommand):
    help = (
        "Delete authorization codes expired for a day, access and refresh tokens expired, used or revoked, and "
        "grants revoked, more than MCP_GATEWAY_SESSION_RETENTION_DAYS days ago. Usable tokens are never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, help="Retention in days (default: the setting).")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else gateway_settings.SESSION_RETENTION_DAYS
        codes = AuthorizationCode.objects.clear_expired()
        access = OAuthAccessToken.objects.clear_expired(days)
        refresh = OAuthRefreshToken.objects.clear_expired(days)
        grants = Grant.objects.clear_expired(days)
        self.stdout.write(
            f"Deleted {codes} authorization code(s), {access} access token(s), {refresh} refresh token(s) and "
            f"{grants} revoked grant(s) older than {days:g} days."
        )
