"""OAuth clients, grants, consents and tokens in the admin: read-only records, no secret shown, revoke actions.

Revoking (a grant, a token, a client by disabling it) goes through the
managers, which end the sessions the tokens opened, in whichever process runs
them, within a second.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from mcp_sessions.admin_base import ReadOnlyAdmin

from .models import Consent, Grant, OAuthAccessToken, OAuthClient, OAuthRefreshToken, RevokeReason


@admin.register(OAuthClient)
class OAuthClientAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "kind", "token_endpoint_auth_method", "created_at", "disabled_at")
    list_filter = ("kind", "disabled_at")
    search_fields = ("client_id", "name")
    exclude = ("secret_hash",)
    actions = ("disable",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("mcp_oauth.change_oauthclient"))  # for the action; fields stay read-only

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in OAuthClient._meta.fields if f.name != "secret_hash"]

    @admin.action(description=_("Disable the selected clients and revoke their grants"))
    def disable(self, request: HttpRequest, queryset: QuerySet[OAuthClient]) -> None:
        count = queryset.disable()  # type: ignore[attr-defined]
        self.message_user(request, ngettext("%d client disabled.", "%d clients disabled.", count) % count)


@admin.register(Grant)
class GrantAdmin(ReadOnlyAdmin):
    list_display = ("user", "client", "resource", "scope", "created_at", "last_used_at", "revoked_at", "revoke_reason")
    list_filter = ("revoke_reason",)
    search_fields = ("user__username", "client__name", "client__client_id", "resource")
    list_select_related = ("user", "client")
    actions = ("revoke",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("mcp_oauth.change_grant"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Grant._meta.fields]

    @admin.action(description=_("Revoke the selected grants (their tokens and sessions end)"))
    def revoke(self, request: HttpRequest, queryset: QuerySet[Grant]) -> None:
        count = queryset.revoke(RevokeReason.ADMIN)  # type: ignore[attr-defined]
        self.message_user(request, ngettext("%d grant revoked.", "%d grants revoked.", count) % count, messages.SUCCESS)


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdmin):
    list_display = ("user", "client", "resource", "scope", "created_at")
    list_select_related = ("user", "client")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("mcp_oauth.delete_consent"))  # forgetting one only asks again


class _TokenAdmin(ReadOnlyAdmin):
    list_display: tuple[str, ...] = ("prefix", "grant", "created_at", "expires_at", "revoked_at")
    exclude = ("token_hash",)
    list_select_related = ("grant__user", "grant__client")


@admin.register(OAuthAccessToken)
class OAuthAccessTokenAdmin(_TokenAdmin):
    pass


@admin.register(OAuthRefreshToken)
class OAuthRefreshTokenAdmin(_TokenAdmin):
    list_display = ("prefix", "grant", "created_at", "expires_at", "used_at", "revoked_at")
