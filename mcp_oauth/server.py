"""The authorization server: authlib's OAuth 2 protocol logic, on this app's models.

authlib does the protocol (RFC 6749 authorization code and refresh grants,
7636 PKCE, 7591 registration, 7009 revocation, 9207 ``iss``); this module
tells it where things are stored and adds what the MCP profile asks for:

- PKCE with ``S256`` only, required of every client, confidential ones too;
- the ``resource`` parameter (RFC 8707) required at the authorization
  endpoint, one of this site's mounts, and bound into the grant: a token
  request naming another resource is ``invalid_target``;
- codes single-use and short-lived; a reused code revokes its grant;
- refresh tokens rotated at every use; a reused one revokes its grant;
- ``invalid_client`` from the token endpoint is 401 (Claude.ai registers again on it).
"""

from __future__ import annotations

from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.integrations.django_oauth2.requests import DjangoJsonRequest, DjangoOAuth2Request
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, OAuth2Error, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint, InvalidClientMetadataError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from django.http import HttpRequest, HttpResponse

from mcp_gateway.conf import gateway_settings
from mcp_gateway.resource import canonical_resource, resource_path

from .clients import AUTH_METHODS, ClientRefused, admitted, client_fields, find_client
from .metadata import authorization_server_metadata, issuer_for
from .models import AuthorizationCode, Grant, OAuthAccessToken, OAuthClient, OAuthRefreshToken, RevokeReason
from .secrets import CLIENT_SECRET_TAG, CODE_TAG, new_secret


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]  # authlib publishes no types
    """RFC 8707: the resource is missing, unknown, or not the one the grant is for."""

    error = "invalid_target"


def allowed_resources(request: HttpRequest) -> set[str]:
    """The resource identifiers tokens may be issued for: each OAuth mount, on the site's origin(s)."""
    origins = {f"{request.scheme}://{request.get_host()}", issuer_for(request)}
    prefixes = gateway_settings.OAUTH_RESOURCES or (gateway_settings.PREFIX,)
    return {canonical_resource(origin.rstrip("/") + resource_path(prefix)) for origin in origins for prefix in prefixes}


class ResourceIndicator:
    """An authorization request must name exactly one resource this site serves (RFC 8707); it is kept on the
    request for the grant."""

    def __init__(self, django_request: HttpRequest) -> None:
        self.allowed = allowed_resources(django_request)

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant: Any, redirect_uri: str) -> None:
        values = grant.request.payload.datalist.get("resource", [])
        if len(values) != 1:
            raise InvalidTargetError("Exactly one 'resource' parameter is required (RFC 8707).")
        resource = canonical_resource(values[0])
        if resource not in self.allowed:
            raise InvalidTargetError("The 'resource' is not an MCP server of this site.")
        grant.request.resource = resource


def check_token_resource(request: Any, grant: Grant) -> None:
    """A token request may repeat the grant's resource (ChatGPT echoes it), never name another."""
    values = request.payload.datalist.get("resource", [])
    if any(canonical_resource(v) != grant.resource for v in values):
        raise InvalidTargetError("The 'resource' is not the one this grant was issued for.")


class S256Challenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256, required of every client (OAuth 2.1): no challenge, or ``plain``, is refused."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'.")
        super().validate_code_verifier(grant, result)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    def generate_authorization_code(self) -> str:
        return new_secret(CODE_TAG)

    def save_authorization_code(self, code: str, request: Any) -> None:
        grant = Grant.objects.create(
            user=request.user, client=request.client, resource=request.resource, scope=request.scope or ""
        )
        AuthorizationCode.objects.store(
            code,
            grant,
            redirect_uri=request.payload.redirect_uri or "",  # none given: the token request need not repeat it
            challenge=request.payload.data["code_challenge"],
            method="S256",
            lifetime=gateway_settings.OAUTH_CODE_LIFETIME,
        )

    def query_authorization_code(self, code: str, client: OAuthClient) -> AuthorizationCode | None:
        found = AuthorizationCode.objects.redeem(code, client)
        if found is not None:
            check_token_resource(self.request, found.grant)
        return found

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing: redeeming it used it up, and a used code is kept to notice its reuse."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Any:
        user = authorization_code.grant.user
        return user if user.is_active else None


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True

    def _validate_request_token(self, client: OAuthClient) -> OAuthRefreshToken:
        secret = self.request.form.get("refresh_token")
        if secret is None:
            raise InvalidRequestError("Missing 'refresh_token' in request.")
        token = OAuthRefreshToken.objects.redeem(secret, client)
        if token is None:
            raise InvalidGrantError()
        check_token_resource(self.request, token.grant)
        return token

    def authenticate_user(self, refresh_token: OAuthRefreshToken) -> Any:
        return refresh_token.grant.user

    def revoke_old_credential(self, refresh_token: OAuthRefreshToken) -> None:
        """Nothing: redeeming it used it up (rotation); presented again, it revokes its grant."""


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = list(AUTH_METHODS)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return OAuthAccessToken.objects.find(token_string) or OAuthRefreshToken.objects.find(token_string)

    def revoke_token(self, token: Any, request: Any) -> None:
        """A refresh token revokes its whole grant; an access token itself, and the sessions of its grant."""
        if isinstance(token, OAuthRefreshToken):
            Grant.objects.filter(pk=token.grant_id).revoke(RevokeReason.CLIENT)
        else:
            OAuthAccessToken.objects.revoke([token])


class Registration(ClientRegistrationEndpoint):  # type: ignore[misc]
    """Dynamic Client Registration (RFC 7591), open to anyone unless ``OAUTH_CLIENT_POLICY`` says otherwise."""

    def __init__(self, server: Any, django_request: HttpRequest) -> None:
        super().__init__(server)
        self.django_request = django_request

    def authenticate_token(self, request: Any) -> Any:
        return True  # open registration; the client policy decides in save_client

    def get_server_metadata(self) -> dict[str, Any]:
        return authorization_server_metadata(self.django_request)

    def generate_client_info(self, request: Any) -> dict[str, Any]:
        method = request.payload.data.get("token_endpoint_auth_method", "client_secret_basic")
        info: dict[str, Any] = {"client_id": new_secret("mcpd_")[:48], "client_id_issued_at": _now()}
        if method != "none":
            info.update(client_secret=new_secret(CLIENT_SECRET_TAG), client_secret_expires_at=0)
        return info

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any) -> OAuthClient:
        try:
            fields = client_fields(client_metadata, document=False)
        except ClientRefused as exc:
            raise InvalidClientMetadataError(str(exc)) from None
        if not admitted(self.django_request, client_metadata):
            raise InvalidClientMetadataError("This site does not admit this client.")
        user = getattr(self.django_request, "user", None)
        return OAuthClient.objects.register(
            {"client_id": client_info["client_id"], **fields},
            secret=client_info.get("client_secret"),
            registered_by=user if getattr(user, "is_authenticated", False) else None,
        )


def _now() -> int:
    import time

    return int(time.time())


class McpAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """One request's authorization server (it asks the Django request for the issuer and the allowed resources)."""

    def __init__(self, django_request: HttpRequest) -> None:
        super().__init__(scopes_supported=None)
        self.django_request = django_request
        self.issuer = issuer_for(django_request)
        self.register_token_generator("default", lambda **kwargs: {})
        self.register_grant(AuthorizationCodeGrant, [S256Challenge(required=True), ResourceIndicator(django_request)])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(Revocation(self))
        self.register_endpoint(Registration(self, django_request))
        self.register_extension(_Issuer(self.issuer))

    def query_client(self, client_id: str) -> OAuthClient | None:
        return find_client(client_id, self.django_request)

    def validate_requested_scope(self, scope: str | None) -> None:
        """Unknown scopes are dropped rather than refused (the client's ``get_allowed_scope``)."""

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        # authlib hands over the response body its token generator made (empty here) and sends that dict back:
        # the tokens are made and stored, hashed, by the grant's manager, and put in it.
        code = getattr(request, "authorization_code", None)
        grant = code.grant if code is not None else request.refresh_token.grant
        token.update(
            Grant.objects.issue_tokens(
                grant,
                access_lifetime=gateway_settings.OAUTH_ACCESS_TOKEN_LIFETIME,
                refresh_lifetime=gateway_settings.OAUTH_REFRESH_TOKEN_LIFETIME,
                refresh=True,
            )
        )

    def create_oauth2_request(self, request: HttpRequest) -> DjangoOAuth2Request:
        return DjangoOAuth2Request(request)

    def create_json_request(self, request: HttpRequest) -> DjangoJsonRequest:
        return DjangoJsonRequest(request)

    def handle_response(self, status: int, body: Any, headers: Any) -> HttpResponse:
        import json

        response = HttpResponse(json.dumps(body) if isinstance(body, dict) else body, status=status)
        for name, value in headers:
            response[name] = value
        if isinstance(body, dict):
            response["Content-Type"] = "application/json"
        response["Cache-Control"] = "no-store"
        return response

    def handle_error_response(self, request: Any, error: Any) -> HttpResponse:
        if getattr(error, "error", "") == "invalid_client":
            error.status_code = 401  # RFC 6749 section 5.2 permits it; Claude.ai registers again on it
        response: HttpResponse = super().handle_error_response(request, error)
        if response.status_code == 401 and not response.has_header("WWW-Authenticate"):
            response["WWW-Authenticate"] = 'Basic realm="oauth"'
        return response

    def authorization_error(self, error: Any) -> HttpResponse:
        """An authorization request's error, sent back to its (validated) redirect URI, with ``iss`` (RFC 9207)."""
        response = self.handle_error_response(None, error)
        self.execute_hook("after_create_authorization_response", response)
        return response

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals: what a revocation must do, the managers do."""


class _Issuer(IssuerParameter):  # type: ignore[misc]
    """RFC 9207: ``iss`` in every authorization response, errors included."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer

    def add_issuer_parameter(self, authorization_server: Any, response: HttpResponse) -> None:
        # authlib's reads ``response.location``, which a Django response does not have: its header, here.
        if response.has_header("Location"):
            response["Location"] = add_params_to_uri(response["Location"], {"iss": self.issuer})
