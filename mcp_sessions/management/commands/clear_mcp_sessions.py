"""Delete closed session records past their retention, like Django's ``clearsessions``."""

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from mcp_gateway.conf import gateway_settings
from mcp_sessions.models import AuditEvent, McpSession, StreamTicket


class Command(BaseCommand):
    help = (
        "Delete MCP session records closed more than MCP_GATEWAY_SESSION_RETENTION_DAYS days ago, and audit "
        "events older than MCP_GATEWAY_AUDIT_RETENTION_DAYS. Open sessions are never touched. Run it from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, help="Retention in days (default: the setting).")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else gateway_settings.SESSION_RETENTION_DAYS
        cutoff = timezone.now() - timedelta(days=days)
        deleted, _ = McpSession.objects.closed().filter(closed_at__lt=cutoff).delete()
        self.stdout.write(f"Deleted {deleted} closed MCP session record(s) older than {days:g} days.")
        audit_days = gateway_settings.AUDIT_RETENTION_DAYS
        audit_cutoff = timezone.now() - timedelta(days=audit_days)
        events, _ = AuditEvent.objects.filter(created_at__lt=audit_cutoff).delete()
        self.stdout.write(f"Deleted {events} audit event(s) older than {audit_days:g} days.")
        tickets, _ = StreamTicket.objects.filter(expires_at__lt=timezone.now()).delete()
        self.stdout.write(f"Deleted {tickets} expired stream ticket(s).")
