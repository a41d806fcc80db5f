"""Read-only admin for MCP sessions.

Sessions are created and closed by the gateway, never by hand, so nothing here
is editable. The ID hash is never shown: only its short public reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _

from .ids import TOKEN_PREFIX_LENGTH, hash_token, new_token
from .models import AccessToken, AuditEvent, McpSession
from .revocation import revoke


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the gateway writes: viewable, never added, edited or deleted by hand.

    (Deleting a live session's record would orphan its stream; old records age out with clear_mcp_sessions.)
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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


class TokenStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", _("Active")), ("expired", _("Expired")), ("revoked", _("Revoked"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AccessToken]) -> QuerySet[AccessToken]:
        now = timezone.now()
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        if self.value() == "active":
            return queryset.filter(unexpired, revoked_at__isnull=True)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(McpSession)
class McpSessionAdmin(ReadOnlyAdmin):
    list_display = (
        "ref",
        "user_link",
        "client",
        "transport",
        "state",
        "created_at",
        "last_seen_at",
        "duration",
        "messages",
    )
    list_filter = (StateFilter, "transport", "close_reason", "server")
    actions = ("revoke_sessions",)
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
        "token",
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

    @admin.display(description=_("state"))
    def state(self, obj: McpSession) -> str:
        return str(_("open")) if obj.is_open else f"{_('closed')}: {obj.get_close_reason_display()}"

    @admin.display(description=_("user"), ordering="user__username")
    def user_link(self, obj: McpSession) -> str:
        meta = obj.user._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, obj.user)

    @admin.display(description=_("duration"))
    def duration(self, obj: McpSession) -> str:
        return timesince(obj.created_at, obj.closed_at or timezone.now())

    @admin.display(description=_("messages in / out"))
    def messages(self, obj: McpSession) -> str:
        return f"{obj.messages_in} / {obj.messages_out}"

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.revoke_mcpsession")

    @admin.action(description=_("Revoke selected sessions"), permissions=["revoke"])
    def revoke_sessions(self, request: HttpRequest, queryset: QuerySet[McpSession]) -> TemplateResponse | None:
        """Close the sessions and their live streams, after a confirmation page."""
        if request.POST.get("post") == "yes":
            count = revoke(queryset)
            self.message_user(request, _("Revoked %(count)d session(s); their streams are closing.") % {"count": count})
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Revoke MCP sessions?"),
            "sessions": queryset.select_related("user"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/mcp_sessions/mcpsession/revoke_confirmation.html", context)


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    """Tokens are created here (the secret is shown once) and revoked, never edited."""

    list_display = ("name", "user", "prefix_display", "state", "created_at", "last_used_at", "expires_at")
    list_filter = (TokenStateFilter,)
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username", "user__email")
    actions = ("revoke",)
    add_fields = ("user", "name", "expires_at")
    change_fields = (
        "name",
        "user",
        "prefix_display",
        "state",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    raw_id_fields = ("user",)

    def get_fields(self, request: HttpRequest, obj: AccessToken | None = None) -> Sequence[str]:
        return self.change_fields if obj else self.add_fields

    def get_readonly_fields(self, request: HttpRequest, obj: AccessToken | None = None) -> Sequence[str]:
        return self.change_fields if obj else ()

    @admin.display(description=_("prefix"))
    def prefix_display(self, obj: AccessToken) -> str:
        return f"{obj.prefix}…"

    @admin.display(description=_("state"))
    def state(self, obj: AccessToken) -> str:
        return obj.state

    def save_model(self, request: HttpRequest, obj: AccessToken, form: Any, change: bool) -> None:
        if change:
            return
        secret = new_token()
        obj.prefix = secret[:TOKEN_PREFIX_LENGTH]
        obj.token_hash = hash_token(secret)
        obj.save()
        request._mcp_token_secret = secret  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: AccessToken, post_url_continue: str | None = None) -> Any:
        """Show the secret in this one response instead of redirecting, so it is never stored anywhere."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "token": obj,
            "secret": request._mcp_token_secret,  # type: ignore[attr-defined]
            "changelist_url": reverse("admin:mcp_sessions_accesstoken_changelist"),
        }
        return TemplateResponse(request, "admin/mcp_sessions/accesstoken/created.html", context)

    @admin.action(description=_("Revoke selected tokens"), permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[AccessToken]) -> None:
        tokens = list(queryset.filter(revoked_at__isnull=True).values_list("pk", flat=True))
        AccessToken.objects.filter(pk__in=tokens).update(revoked_at=timezone.now())
        sessions = revoke(McpSession.objects.filter(token__in=tokens))
        self.message_user(
            request,
            _("Revoked %(count)d token(s) and closed %(sessions)d session(s) opened with them.")
            % {"count": len(tokens), "sessions": sessions},
        )

    def has_delete_permission(self, request: HttpRequest, obj: AccessToken | None = None) -> bool:
        # Revoke instead: the record stays as evidence of what the token could do.
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit trail, read-only."""

    list_display = ("created_at", "kind", "who", "remote_addr", "session_ref", "detail")
    list_filter = ("kind", ("user", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("username", "user__username", "user__email", "session_ref", "remote_addr")
    date_hierarchy = "created_at"
    readonly_fields = ("created_at", "kind", "who", "remote_addr", "session_ref", "detail")

    @admin.display(description=_("user"), ordering="username")
    def who(self, obj: AuditEvent) -> str:
        """The username the row was written with; marked when that user has been deleted since."""
        try:
            user = obj.user
        except ObjectDoesNotExist:  # deleted while the row was being written: the column has no constraint
            user = None
        if user is None:
            return str(_("%(username)s (deleted)") % {"username": obj.username}) if obj.username else "—"
        return obj.username or str(user)
