"""The views of Your MCP access: one page of sections, and the POSTs that change what it shows.

Every view needs a login and answers with ``Cache-Control: no-store``
(:func:`~django.views.decorators.cache.never_cache`, outermost, so the login redirect has it too). Every change
is a POST, CSRF-checked by Django's middleware, and then redirects back to the page (a reload resends nothing),
except the token's creation: its answer is the page showing the secret, rendered once and cached nowhere, so
the secret is in no URL, no redirect, no message and no later page. Each object is the user's own, found
through the owner-scoped managers: another user's session or token is a 404, as one that never was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from mcp_gateway.conf import gateway_settings

from ..models import AccessToken, McpSession
from .clients import client_configs, endpoints, token_export
from .forms import NewTokenForm
from .sections import current_login_hash, limits_of, render_sections

View = Callable[..., HttpResponse]


def account_view(methods: Callable[[View], View]) -> Callable[[View], View]:
    """A view of these pages: never cached, login required, and only the HTTP ``methods`` given."""

    def decorate(view: View) -> View:
        return never_cache(login_required(methods(view)))

    return decorate


def render(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> TemplateResponse:
    """``template``, extending the site's base (``MCP_GATEWAY_ACCOUNT_BASE_TEMPLATE``)."""
    context = {"base_template": gateway_settings.ACCOUNT_BASE_TEMPLATE, **context}
    return TemplateResponse(request, template, context, status=status)


def back(section: str) -> HttpResponseRedirect:
    """To the page, at ``section``."""
    return HttpResponseRedirect(f"{reverse('mcp_account:index')}#{section}")


def client_address(request: HttpRequest) -> str | None:
    """The address the audit row records: the one Django saw (a site behind a proxy sets it as it trusts)."""
    return request.META.get("REMOTE_ADDR")


@account_view(require_GET)
def index(request: HttpRequest) -> HttpResponse:
    """The page: each section (:data:`~mcp_sessions.account.sections.SECTIONS`) that is shown."""
    return render(request, "mcp_sessions/account/index.html", {"sections": render_sections(request)})


@account_view(require_POST)
def end_session(request: HttpRequest, pk: int) -> HttpResponse:
    """End one of the user's sessions, live, as the admin's revoke action does."""
    try:
        ended = McpSession.objects.end_own(request.user, pk, remote_addr=client_address(request))
    except McpSession.DoesNotExist:
        raise Http404(_("No such session.")) from None
    if ended:
        messages.success(request, _("The session was ended; its client is disconnected."), fail_silently=True)
    else:
        messages.info(request, _("That session had ended already."), fail_silently=True)
    return back("sessions")


@account_view(require_POST)
def end_other_sessions(request: HttpRequest) -> HttpResponse:
    """End all the user's open sessions but this browser's."""
    count = McpSession.objects.end_others(
        request.user, keep_login_hash=current_login_hash(request), remote_addr=client_address(request)
    )
    message = ngettext("Ended %(count)d session.", "Ended %(count)d sessions.", count) % {"count": count}
    messages.success(request, message, fail_silently=True)
    return back("sessions")


@account_view(require_http_methods(["GET", "POST"]))
def new_token(request: HttpRequest) -> HttpResponse:
    """The form (GET); its POST creates the token and answers with the page showing its secret, this once.

    The token may be limited to what the user may use, and only that (the form's ``limit_to``).
    """
    form = NewTokenForm(request.POST if request.method == "POST" else None, user=request.user)
    if not form.is_valid():
        return render(request, "mcp_sessions/account/token_form.html", {"form": form})
    token, secret = AccessToken.objects.issue_own(
        request.user,
        form.cleaned_data["name"],
        form.expires_in,
        scopes=form.cleaned_data["limit_to"],
        remote_addr=client_address(request),
    )
    site = endpoints(request)
    context = {
        "token": token,
        "limits": limits_of(token),
        "secret": secret,
        "site": site,
        "export": token_export(secret),
        "configs": client_configs(site, secret),
    }
    return render(request, "mcp_sessions/account/token_created.html", context)


@account_view(require_POST)
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke one of the user's tokens; the sessions opened with it end, live."""
    try:
        tokens, sessions = AccessToken.objects.revoke_own(request.user, pk, remote_addr=client_address(request))
    except AccessToken.DoesNotExist:
        raise Http404(_("No such token.")) from None
    if tokens:
        message = ngettext(
            "The token was revoked and %(count)d session opened with it ended.",
            "The token was revoked and %(count)d sessions opened with it ended.",
            sessions,
        ) % {"count": sessions}
        messages.success(request, message, fail_silently=True)
    else:
        messages.info(request, _("That token was revoked already."), fail_silently=True)
    return back("tokens")
