"""The "Connected apps" section of Your MCP access (:mod:`mcp_sessions.account`), and its "Revoke access".

The model app's page knows nothing of OAuth: this app adds the section to it
(:func:`register`, from its ``AppConfig.ready``), so the section is there only
where ``mcp_oauth`` is installed. It lists each client the user allowed and still
does (an active grant): the servers and scopes it was allowed, since when, and
when it last used them. "Revoke access" is what "Disconnect" on
``oauth/connections/`` does (:meth:`~mcp_oauth.managers.ConsentManager.withdraw`):
the consents are forgotten, so the next authorization asks again, and every grant
of the client is revoked with its tokens, ending the sessions and listen streams
they opened in every process. The view is one of the page's (its decorators,
its redirect back), under this app's URLs (``mcp_oauth:revoke_app``), which a
site serving OAuth includes already: the model app's URLconf stays as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from django.apps import apps
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from mcp_sessions.account.sections import Section, register_section
from mcp_sessions.account.views import account_view, back, client_address
from mcp_sessions.scoping import describe_scope

from .models import Consent, Grant, OAuthClient

SLUG = "apps"


class AppRow(NamedTuple):
    """A client the user allowed: its servers and scopes (in words), first allowed, last used (None: never)."""

    client: OAuthClient
    resources: list[str]
    scopes: list[str]
    allowed_at: datetime
    last_used_at: datetime | None


def apps_context(request: HttpRequest) -> dict[str, Any]:
    """The clients with an active grant of the user's, the one used last first; their grants folded into one row."""
    grants = Grant.objects.for_user(request.user).active().select_related("client").order_by("created_at", "pk")
    by_client: dict[int, list[Grant]] = {}
    for grant in grants:
        by_client.setdefault(grant.client_id, []).append(grant)
    rows = []
    for family in by_client.values():
        scopes = dict.fromkeys(scope for grant in family for scope in grant.scope.split())
        used = [grant.last_used_at for grant in family if grant.last_used_at is not None]
        rows.append(
            AppRow(
                client=family[0].client,
                resources=list(dict.fromkeys(grant.resource for grant in family)),
                scopes=[describe_scope(scope) for scope in scopes],
                allowed_at=family[0].created_at,
                last_used_at=max(used, default=None),
            )
        )
    rows.sort(key=lambda row: row.last_used_at or row.allowed_at, reverse=True)
    return {"apps": rows}


@account_view(require_POST)
def revoke_app(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke the access of one client the user allowed: its grants, tokens, sessions and listen streams end, live."""
    try:
        client, revoked = Consent.objects.withdraw_own(request.user, pk, remote_addr=client_address(request))
    except OAuthClient.DoesNotExist:
        raise Http404(_("No such app.")) from None
    if revoked:
        message = _("%(app)s no longer has access; its sessions are ended.") % {"app": client}
        messages.success(request, message, fail_silently=True)
    else:
        messages.info(request, _("That app had no access already."), fail_silently=True)
    return back(SLUG)


def register() -> None:
    """Put "Connected apps" on the page; shown while this app is installed (not where settings leave it out)."""
    register_section(
        Section(
            SLUG,
            gettext_lazy("Connected apps"),
            "mcp_oauth/account/apps.html",
            apps_context,
            shown=lambda: apps.is_installed("mcp_oauth"),
        )
    )
