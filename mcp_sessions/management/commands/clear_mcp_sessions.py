"""Delete closed session records past their retention, like Django's ``clearsessions``."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from mcp_gateway.conf import gateway_settings
from mcp_sessions.models import AuditEvent, CallRecord, ClientUsage, McpSession, StreamTicket


class Command(BaseCommand):
    help = (
        "Delete MCP session records closed more than MCP_GATEWAY_SESSION_RETENTION_DAYS days ago, and audit "
        "events and call records older than MCP_GATEWAY_AUDIT_RETENTION_DAYS, and client usage last seen more than "
        "MCP_GATEWAY_USAGE_RETENTION_DAYS ago. Open sessions are never touched. Run it from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, help="Retention in days (default: the setting).")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else gateway_settings.SESSION_RETENTION_DAYS
        deleted = McpSession.objects.clear_expired(days)
        self.stdout.write(f"Deleted {deleted} closed MCP session record(s) older than {days:g} days.")
        audit_days = gateway_settings.AUDIT_RETENTION_DAYS
        events = AuditEvent.objects.clear_expired(audit_days)
        self.stdout.write(f"Deleted {events} audit event(s) older than {audit_days:g} days.")
        calls = CallRecord.objects.clear_expired(audit_days)
        self.stdout.write(f"Deleted {calls} call record(s) older than {audit_days:g} days.")
        usage_days = gateway_settings.USAGE_RETENTION_DAYS
        usage = ClientUsage.objects.clear_expired(usage_days)
        self.stdout.write(f"Deleted {usage} client usage row(s) last seen more than {usage_days:g} days ago.")
        tickets = StreamTicket.objects.clear_expired()
        self.stdout.write(f"Deleted {tickets} expired stream ticket(s).")
