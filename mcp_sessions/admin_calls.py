"""The admin of call records: who called which tool, read which resource, got which prompt, and how it ended.

Read-only (rows age out with ``clear_mcp_sessions`` after ``MCP_GATEWAY_AUDIT_RETENTION_DAYS``), filtered by
user, outcome, method, credential and date, searched by user, name, session and arguments digest, and exported
as CSV (the selected rows, or all that match with "select all"). Its columns are cut short so that the list fits
a 1280 px window whatever the names.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import formats, timezone
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from .admin_base import ReadOnlyAdmin, who
from .models import CallRecord

# The columns of the CSV export, in order: the record's fields, never anything else.
CSV_FIELDS = (
    "created_at",
    "username",
    "user_id",
    "credential_kind",
    "credential_ref",
    "token_id",
    "client_id",
    "session_ref",
    "request_id",
    "server",
    "transport",
    "protocol_version",
    "method",
    "name",
    "arguments_digest",
    "arguments",
    "outcome",
    "error_code",
    "duration_ms",
    "result_size",
)


class _Echo:
    """A file whose ``write`` returns what it is given: what csv.writer writes into, to stream the rows."""

    def write(self, value: str) -> str:
        return value


def _csv_rows(queryset: QuerySet[CallRecord]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_FIELDS)
    for row in queryset.order_by("created_at", "pk").values_list(*CSV_FIELDS).iterator(chunk_size=2000):
        # A cell a spreadsheet would run as a formula (=, +, -, @) is prefixed with a quote: names are the client's.
        yield writer.writerow(["'" + v if isinstance(v, str) and v[:1] in "=+-@" else v for v in row])


@admin.register(CallRecord)
class CallRecordAdmin(ReadOnlyAdmin):
    """Every tools/call, resources/read and prompts/get the gateway served; read-only."""

    list_display = ("created", "who", "credential", "called", "outcome", "milliseconds", "size")
    list_filter = (
        ("user", admin.RelatedOnlyFieldListFilter),
        "outcome",
        "method",
        "credential_kind",
        "transport",
        "server",
        "created_at",
    )
    list_select_related = ("user",)
    search_fields = ("username", "user__username", "name", "session_ref", "arguments_digest", "client_id")
    date_hierarchy = "created_at"
    actions = ("export_csv",)
    fields = readonly_fields = (
        "created_at",
        "who",
        "credential_kind",
        "credential_ref",
        "token",
        "client_id",
        "session_ref",
        "request_id",
        "server",
        "transport",
        "protocol_version",
        "method",
        "name",
        "arguments_digest",
        "arguments",
        "outcome",
        "error_code",
        "duration_ms",
        "result_size",
    )

    @admin.display(description=_("time"), ordering="created_at")
    def created(self, obj: CallRecord) -> str:
        return str(formats.localize(timezone.localtime(obj.created_at)))  # may wrap: the list fits 1280 px

    @admin.display(description=_("user"), ordering="username")
    def who(self, obj: CallRecord) -> str:
        return who(obj)

    @admin.display(description=_("credential"), ordering="credential_kind")
    def credential(self, obj: CallRecord) -> str:
        return f"{obj.credential_kind} {obj.credential_ref[:6]}".strip()

    @admin.display(description=_("called"), ordering="name")
    def called(self, obj: CallRecord) -> str:
        # The method is the filter's; the name cut short (the record's page shows it whole).
        return Truncator(obj.name).chars(24)

    @admin.display(description=_("ms"), ordering="duration_ms")
    def milliseconds(self, obj: CallRecord) -> str:
        return f"{obj.duration_ms:.1f}"

    @admin.display(description=_("bytes"), ordering="result_size")
    def size(self, obj: CallRecord) -> str:
        return str(obj.result_size)

    # Viewing is enough to export: the records are read-only.
    @admin.action(description=_("Export the selected calls as CSV"), permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[CallRecord]) -> StreamingHttpResponse:
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
        return StreamingHttpResponse(
            _csv_rows(queryset),
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="mcp-calls-{stamp}.csv"'},
        )
