"""The authorization server's endpoints, on the Django site (``path("", include("mcp_oauth.urls"))``).

Thin: authlib (:mod:`mcp_oauth.server`) speaks the protocol, the managers own
the records. The authorization endpoint is an ordinary Django view: the site's
own login first (``LOGIN_URL``, as ``login_required`` sends anyone), then the
consent page (``mcp_oauth/consent.html``, a template the site may override),
CSRF-protected, never framed, "Allow" a POST. An invalid ``client_id`` or
``redirect_uri`` is shown on an error page, never redirected to; any other
error goes back to the client's redirect URI with ``state`` and ``iss``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import OAuth2Error
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from mcp_gateway.conf import gateway_settings

from .metadata import authorization_server_metadata
from .models import Consent, Grant, OAuthClient
from .scopes import describe
from .server import McpAuthorizationServer


def _cors(response: HttpResponse, methods: str = "GET") -> HttpResponse:
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, MCP-Protocol-Version"
    response["Access-Control-Allow-Methods"] = methods
    return response


def server_metadata(request: HttpRequest) -> HttpResponse:
    """``/.well-known/oauth-authorization-server`` (RFC 8414)."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        return HttpResponseNotAllowed(["GET", "HEAD", "OPTIONS"])
    return _cors(JsonResponse(authorization_server_metadata(request)))


@never_cache
@xframe_options_deny
@csrf_protect
def authorize(request: HttpRequest) -> HttpResponse:
    """The authorization endpoint: validate, log in, ask (or remember), then redirect back with a code."""
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    server = McpAuthorizationServer(request)
    try:
        grant = server.get_consent_grant(request, end_user=request.user if request.user.is_authenticated else None)
    except OAuth2Error as error:
        if getattr(error, "redirect_uri", None):
            return server.authorization_error(error)
        return _error_page(request, error)
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    oauth = grant.request
    client, resource, scope = oauth.client, oauth.resource, oauth.scope or ""
    if request.method == "POST":
        allowed = request.POST.get("decision") == "allow"
        if allowed and gateway_settings.OAUTH_REMEMBER_CONSENT and request.POST.get("remember"):
            Consent.objects.remember(request.user, client, resource, scope)
        return _deny_framing(
            server.create_authorization_response(request, grant_user=request.user if allowed else None, grant=grant)
        )
    if gateway_settings.OAUTH_REMEMBER_CONSENT and Consent.objects.covers(request.user, client, resource, scope):
        return _deny_framing(server.create_authorization_response(request, grant_user=request.user, grant=grant))
    context = {
        "client": client,
        "client_host": _host(client.client_id) if client.kind == "metadata_document" else "",
        "resource": resource,
        "scopes": [(s, describe(s)) for s in scope.split()],
        "redirect_uri": grant.redirect_uri,
        "redirect_host": _host(grant.redirect_uri),
        "remember": gateway_settings.OAUTH_REMEMBER_CONSENT,
        "action": request.get_full_path(),
    }
    return render(request, "mcp_oauth/consent.html", context)


def _deny_framing(response: HttpResponse) -> HttpResponse:
    response["X-Frame-Options"] = "DENY"
    return response


def _host(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.netloc or f"{parts.scheme}:"


def _error_page(request: HttpRequest, error: Any) -> HttpResponse:
    context = {"error": error.error, "description": getattr(error, "description", "")}
    return render(request, "mcp_oauth/error.html", context, status=400)


# The token, revocation and registration endpoints are called by OAuth clients, not by a browser's forms: no cookie
# or login decides anything in them (the client authenticates, or proves the code with PKCE), so no CSRF token.
@csrf_exempt
def token(request: HttpRequest) -> HttpResponse:
    """The token endpoint: codes and refresh tokens for tokens."""
    if request.method == "OPTIONS":
        return _cors(HttpResponse(status=204), "POST")
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return _cors(McpAuthorizationServer(request).create_token_response(request), "POST")


@csrf_exempt
def revoke(request: HttpRequest) -> HttpResponse:
    """RFC 7009: a refresh token revokes its grant; an access token itself."""
    if request.method == "OPTIONS":
        return _cors(HttpResponse(status=204), "POST")
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return _cors(McpAuthorizationServer(request).create_endpoint_response("revocation", request), "POST")


@csrf_exempt
def register(request: HttpRequest) -> HttpResponse:
    """RFC 7591 Dynamic Client Registration; not found while registration is off."""
    if not gateway_settings.OAUTH_DYNAMIC_REGISTRATION:
        raise Http404("Dynamic client registration is off")
    if request.method == "OPTIONS":
        return _cors(HttpResponse(status=204), "POST")
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return _cors(McpAuthorizationServer(request).create_endpoint_response("client_registration", request), "POST")


@never_cache
@xframe_options_deny
@csrf_protect
def connections(request: HttpRequest) -> HttpResponse:
    """The user's connected clients, each with "Disconnect" (withdraws the consent, revokes its grants)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if request.method == "POST":
        client = get_object_or_404(OAuthClient, pk=request.POST.get("client"))
        Consent.objects.withdraw(request.user, client)
    grants = Grant.objects.for_user(request.user).active().select_related("client").order_by("-created_at")
    return render(request, "mcp_oauth/connections.html", {"grants": grants})
