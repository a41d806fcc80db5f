"""Read-only admin for MCP sessions.

Sessions are created and closed by the gateway, never by hand, so nothing here
is editable. The ID hash is never shown: only its short public reference.
Client usage has its own module (:mod:`mcp_sessions.admin_usage`), imported here to be registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _

from . import admin_calls as admin_calls  # registers the call records' admin
from . import admin_usage as admin_usage  # registers the client usage admin
from .admin_base import ADMIN_CSS, shortened, who
from .admin_base import ReadOnlyAdmin as ReadOnlyAdmin
from .admin_revoke import RevokeButtonMixin
from .models import AccessToken, AccessTokenQuerySet, AuditEvent, McpSession, McpSessionQuerySet, TokenState
from .scope_field import ScopesField
from .subscriptions import describe_listen_filter

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec
    from django.utils.functional import _StrOrPromise

    # Generic in the type stubs only: Django's classes take no parameters at run time.
    TokenAdminBase = admin.ModelAdmin[AccessToken]
    TokenForm = forms.ModelForm[AccessToken]
else:
    TokenAdminBase = admin.ModelAdmin
    TokenForm = forms.ModelForm


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, _StrOrPromise]]:
        return [("open", _("Open")), ("closed", _("Closed"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # The model's own queryset, as every admin queryset here.
        sessions = cast(McpSessionQuerySet[McpSession], queryset)
        if self.value() == "open":
            return sessions.open()
        if self.value() == "closed":
            return sessions.closed()
        return queryset


class TokenStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(state.value, str(state.label)) for state in TokenState]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        state = self.value()
        if state is not None and state in TokenState.values:
            return cast(AccessTokenQuerySet, queryset).in_state(state)
        return queryset


@admin.register(McpSession)
class McpSessionAdmin(RevokeButtonMixin, ReadOnlyAdmin):
    list_display = (
        "ref",
        "user_link",
        "client",
        "transport",
        "state",
        "created_at",
        "last_seen_at",
    )
    list_filter = (StateFilter, "transport", "close_reason", "server")
    actions = ("revoke_sessions",)
    revoke_action = "revoke_sessions"
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
        "in_use",
        "closed_at",
        "duration",
        "close_reason",
        "messages_in",
        "messages_out",
        "subscribed",
        "last_event_at",
    )
    readonly_fields = fields

    @admin.display(description=_("reference"))
    def ref(self, obj: McpSession) -> str:
        return obj.ref

    @admin.display(description=_("client"))
    def client(self, obj: McpSession) -> str:
        return shortened(" ".join(filter(None, (obj.client_name, obj.client_version)))) or "—"

    @admin.display(description=_("state"))
    def state(self, obj: McpSession) -> str:
        return str(_("open")) if obj.is_open else f"{_('closed')}: {obj.get_close_reason_display()}"

    @admin.display(description=_("user"), ordering="user__username")
    def user_link(self, obj: McpSession) -> str:
        meta = obj.user._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, shortened(obj.user))

    @admin.display(description=_("duration"))
    def duration(self, obj: McpSession) -> str:
        return timesince(obj.created_at, obj.closed_at or timezone.now())

    @admin.display(description=_("subscribed to"))
    def subscribed(self, obj: McpSession) -> str:
        """A listen stream's filter, in words; a dash for a session."""
        return describe_listen_filter(obj.listen_filter) or "—"

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.revoke_mcpsession")

    @admin.action(description=_("Revoke selected sessions"), permissions=["revoke"])
    def revoke_sessions(
        self, request: HttpRequest, queryset: McpSessionQuerySet[McpSession]
    ) -> TemplateResponse | None:
        """Close the sessions and their live streams, after a confirmation page."""
        if request.POST.get("post") == "yes":
            count = queryset.revoke()
            self.message_user(request, _("Revoked %(count)d session(s); their streams are closing.") % {"count": count})
            return None
        return self.revoke_confirmation(request, queryset)

    def revocable(self, obj: McpSession) -> bool:
        return obj.is_open

    def revoke_confirmation(self, request: HttpRequest, queryset: QuerySet[Any]) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Revoke MCP sessions?"),
            "sessions": queryset.select_related("user"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/mcp_sessions/mcpsession/revoke_confirmation.html", context)


ISSUE_FOR_OTHERS = "mcp_sessions.issue_token_for_others"


def token_refusal(creator: Any, target: Any) -> str | None:
    """Why ``creator`` may not create a token for ``target`` (which lets its holder act as ``target``), or None.

    Anyone who may add tokens may add their own. For someone else it takes
    ``issue_token_for_others``, and never for a user who could do more than the
    creator: a permission the creator lacks, a superuser unless the creator is
    one, staff unless the creator is. Nor for an inactive user, whose
    permissions cannot be compared (they count as none until reactivated).
    """
    if target.pk == creator.pk:
        return None
    if not creator.has_perm(ISSUE_FOR_OTHERS):
        return str(_("You may only create tokens for yourself."))
    if not target.is_active:
        return str(_("%(user)s is inactive.") % {"user": target})
    if target.is_superuser and not creator.is_superuser:
        return str(_("Only a superuser may create a token for %(user)s, a superuser.") % {"user": target})
    if target.is_staff and not creator.is_staff:
        return str(_("Only staff may create a token for %(user)s, a staff member.") % {"user": target})
    missing = sorted(target.get_all_permissions() - creator.get_all_permissions())
    if missing:
        shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
        return str(
            _("%(user)s has permissions you lack (%(permissions)s): a token would let you act with them.")
            % {"user": target, "permissions": shown}
        )
    return None


class AccessTokenAddForm(TokenForm):
    """The add form; its user field, when shown, only offers users the creator may create tokens for."""

    creator: Any = None  # the admin user adding the token; set per request by AccessTokenAdmin.get_form

    limit_to = ScopesField(
        label=_("Limit to"),
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_(
            "Tool names or scopes (mcp:tools, mcp:resources, mcp:prompts, mcp:prompts:<name>, …), one per line or "
            "separated by commas. Empty: the token reaches all its user may use."
        ),
    )

    def clean_user(self) -> Any:
        target = self.cleaned_data["user"]
        refusal = token_refusal(self.creator, target)
        if refusal is not None:
            raise forms.ValidationError(refusal, code="not_allowed")
        return target


@admin.register(AccessToken)
class AccessTokenAdmin(RevokeButtonMixin, TokenAdminBase):
    """Tokens are created here (the secret is shown once) and revoked, never edited.

    Without ``issue_token_for_others`` the add form has no user field: the
    token is the creator's own. With it, the creator picks the user, within
    :func:`token_refusal`'s limits.
    """

    list_display = (
        "name_display",
        "user_display",
        "prefix_display",
        "state",
        "created_at",
        "last_used_at",
        "expires_at",
    )
    list_filter = (TokenStateFilter,)
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username", "user__email")
    actions = ("revoke",)
    revoke_action = "revoke"
    form = AccessTokenAddForm
    add_fields = ("user", "name", "expires_at", "limit_to")
    own_add_fields = ("name", "expires_at", "limit_to")
    change_fields = (
        "name",
        "user",
        "prefix_display",
        "state",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "scopes",
    )
    raw_id_fields = ("user",)

    def get_fields(self, request: HttpRequest, obj: AccessToken | None = None) -> tuple[str, ...]:
        if obj is not None:
            return self.change_fields
        return self.add_fields if request.user.has_perm(ISSUE_FOR_OTHERS) else self.own_add_fields

    def get_fieldsets(self, request: HttpRequest, obj: AccessToken | None = None) -> _FieldsetSpec:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None and "user" not in self.get_fields(request, obj):
            description = _("The token will be yours (%(user)s): whoever holds it acts as you.") % {
                "user": request.user
            }
            return [(None, {**fieldsets[0][1], "description": description})]
        return fieldsets

    def get_form(
        self, request: HttpRequest, obj: AccessToken | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[AccessToken]]:
        """The form, knowing who adds (its user field's limits depend on them)."""
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"creator": request.user})

    def get_readonly_fields(self, request: HttpRequest, obj: AccessToken | None = None) -> tuple[str, ...]:
        return self.change_fields if obj else ()

    class Media:
        css = ADMIN_CSS

    @admin.display(description=_("name"), ordering="name")
    def name_display(self, obj: AccessToken) -> str:
        return shortened(obj.name)

    @admin.display(description=_("user"), ordering="user__username")
    def user_display(self, obj: AccessToken) -> str:
        return shortened(obj.user)

    @admin.display(description=_("prefix"))
    def prefix_display(self, obj: AccessToken) -> str:
        return f"{obj.prefix}…"

    @admin.display(description=_("state"))
    def state(self, obj: AccessToken) -> str:
        return str(obj.state)

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        """Adding issues the token, through the manager like every token; what the admin then logs and shows."""
        if change:
            return super().save_form(request, form, change)
        token, secret = AccessToken.objects.issue(
            form.cleaned_data.get("user") or request.user,
            form.cleaned_data["name"],
            expires_at=form.cleaned_data.get("expires_at"),
            scopes=form.cleaned_data.get("limit_to") or (),
        )
        request._mcp_token_secret = secret  # type: ignore[attr-defined]
        return token

    def save_model(self, request: HttpRequest, obj: AccessToken, form: Any, change: bool) -> None:
        """Nothing to save: a new token was saved as it was issued (:meth:`save_form`), and tokens are never edited."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Tokens have no related objects to save."""

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
    def revoke(self, request: HttpRequest, queryset: AccessTokenQuerySet) -> None:
        tokens, sessions = queryset.revoke()
        self.message_user(
            request,
            _("Revoked %(count)d token(s) and closed %(sessions)d session(s) opened with them.")
            % {"count": tokens, "sessions": sessions},
        )

    def revocable(self, obj: AccessToken) -> bool:
        return obj.revoked_at is None

    def revoke_confirmation(self, request: HttpRequest, queryset: QuerySet[Any]) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Revoke MCP access tokens?"),
            "tokens": queryset.select_related("user"),
        }
        return TemplateResponse(request, "admin/mcp_sessions/accesstoken/revoke_confirmation.html", context)

    def has_delete_permission(self, request: HttpRequest, obj: AccessToken | None = None) -> bool:
        # Revoke instead: the record stays as evidence of what the token could do.
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit trail, read-only."""

    list_display = ("created_at", "kind", "who", "remote_addr", "session_ref", "detail_display")
    list_filter = ("kind", ("user", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("username", "user__username", "user__email", "session_ref", "remote_addr")
    date_hierarchy = "created_at"
    readonly_fields = ("created_at", "kind", "who", "remote_addr", "session_ref", "detail")

    @admin.display(description=_("detail"))
    def detail_display(self, obj: AuditEvent) -> str:
        return shortened(obj.detail)

    @admin.display(description=_("user"), ordering="username")
    def who(self, obj: AuditEvent) -> str:
        return who(obj)
