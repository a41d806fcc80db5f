"""The admin of client usage: who calls MCP with which credential and client, read-only.

Its columns are cut short, so that the list fits a 1280 px window whatever a
client named itself; the filters over values the clients choose list only the
most used ones.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.utils import formats, timezone
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from .admin_base import ReadOnlyAdmin, who
from .models import ClientUsage


class TopValuesFilter(admin.SimpleListFilter):
    """The most used values of a column whose values the clients choose: a short list however many, cut short."""

    field = ""
    limit = 20

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        ranked = (
            model_admin.get_queryset(request)
            .exclude(**{self.field: ""})
            .values_list(self.field)
            .annotate(total=Sum("requests"))
            .order_by("-total", self.field)[: self.limit]
        )
        return [(value, Truncator(value).chars(20)) for value, _total in ranked]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.field: value})


class ClientNameFilter(TopValuesFilter):
    title = _("client")
    parameter_name = field = "client_name"


class ProtocolVersionFilter(TopValuesFilter):
    title = _("protocol version")
    parameter_name = field = "protocol_version"


@admin.register(ClientUsage)
class ClientUsageAdmin(ReadOnlyAdmin):
    """Who uses MCP with which credential and client, as the workers count it; read-only, superusers may delete."""

    list_display = (
        "who",
        "credential",
        "client",
        "protocol",
        "requests",
        "refusals",
        "seen",
    )
    list_filter = (
        ("user", admin.RelatedOnlyFieldListFilter),
        "credential_kind",
        ClientNameFilter,
        ProtocolVersionFilter,
    )
    list_select_related = ("user", "token")
    search_fields = ("username", "user__username", "user__email", "client_name", "client_version", "credential_ref")
    date_hierarchy = "last_seen"
    fields = readonly_fields = (
        "who",
        "credential_kind",
        "credential_ref",
        "token_name",
        "client_name",
        "client_version",
        "protocol_version",
        "first_seen",
        "last_seen",
        "requests",
        "refusals",
    )

    @admin.display(description=_("user"), ordering="username")
    def who(self, obj: ClientUsage) -> str:
        return who(obj)

    @admin.display(description=_("credential"), ordering="credential_kind")
    def credential(self, obj: ClientUsage) -> str:
        return f"{obj.get_credential_kind_display()} {obj.credential_ref}".strip()

    @admin.display(description=_("client"), ordering="client_name")
    def client(self, obj: ClientUsage) -> str:
        return Truncator(" ".join(filter(None, (obj.client_name, obj.client_version))) or "—").chars(20)

    @admin.display(description=_("protocol"), ordering="protocol_version")
    def protocol(self, obj: ClientUsage) -> str:
        return Truncator(obj.protocol_version or "—").chars(10)  # a version is a date, "2026-07-28"

    @admin.display(description=_("last seen"), ordering="last_seen")
    def seen(self, obj: ClientUsage) -> str:
        # Not the field itself, which the admin shows on one line: this may wrap, and the list fits 1280 px.
        return str(formats.localize(timezone.localtime(obj.last_seen)))

    @admin.display(description=_("access token"))
    def token_name(self, obj: ClientUsage) -> str:
        try:
            token = obj.token
        except ObjectDoesNotExist:  # deleted since: the column has no constraint
            return str(_("(deleted)"))
        return str(token) if token is not None else "—"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Counts, not evidence: a superuser may erase a user's (they age out with clear_mcp_sessions anyway).
        return bool(request.user.is_superuser)
