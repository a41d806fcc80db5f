"""List filters of the admin over columns whose values the clients choose."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _


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
