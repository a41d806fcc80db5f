"""Read-only admin for MCP sessions.

Sessions are created and closed by the gateway, never by hand, so nothing here
is editable. The ID hash is never shown: only its short public reference.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .models import McpSession


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", _("Open")), ("closed", _("Closed"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[McpSession]) -> QuerySet[McpSession]:
        if self.value() == "open":
            return queryset.filter(closed_at__isnull=True)
        if self.value() == "closed":
            return queryset.filter(closed_at__isnull=False)
        return queryset


@admin.register(McpSession)
class McpSessionAdmin(admin.ModelAdmin):
    list_display = ("ref", "user", "client", "transport", "state", "created_at", "last_seen_at")
    list_filter = (StateFilter, "transport", "close_reason", "server")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email")
    date_hierarchy = "created_at"
    fields = (
        "ref",
        "user",
        "state",
        "server",
        "transport",
        "client_name",
        "client_version",
        "protocol_version",
        "remote_addr",
        "user_agent",
        "origin",
        "created_at",
        "last_seen_at",
        "closed_at",
        "close_reason",
        "messages_in",
        "messages_out",
    )
    readonly_fields = fields

    @admin.display(description=_("reference"))
    def ref(self, obj: McpSession) -> str:
        return obj.ref

    @admin.display(description=_("client"))
    def client(self, obj: McpSession) -> str:
        return " ".join(filter(None, (obj.client_name, obj.client_version))) or "—"

    @admin.display(description=_("state"), boolean=False)
    def state(self, obj: McpSession) -> str:
        return str(_("open")) if obj.is_open else str(_("closed"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: McpSession | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: McpSession | None = None) -> bool:
        # Deleting a live record would orphan its stream; closed ones age out by retention.
        return False
