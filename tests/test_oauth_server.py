"""The authorization server (mcp_oauth.views, .server): metadata, registration, consent, codes, tokens, revocation.

In-process with Django's test client; the clients' real flows against a live daphne are in test_oauth_clients.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone

from mcp_oauth.models import AuthorizationCode, Consent, Grant, OAuthAccessToken, OAuthClient, OAuthRefreshToken
from mcp_oauth.secrets import hash_token

from .oauth_flow import (
    ISSUER,
    REDIRECT,
    RESOURCE,
    Client,
    allow,
    authorize_url,
    callback_params,
    exchange,
    full_flow,
    refresh,
    register,
    start,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw")


@pytest.fixture
def browser(user: Any) -> DjangoClient:
    browser = Client()
    browser.force_login(user)
    return browser


@pytest.fixture
def api() -> DjangoClient:
    return Client()


@pytest.fixture
def client_id(api: DjangoClient) -> str:
    return str(register(api)["client_id"])


def test_metadata_names_what_mcp_clients_look_for(api: DjangoClient) -> None:
    response = api.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    metadata = response.json()
    assert metadata["issuer"] == ISSUER
    assert metadata["authorization_endpoint"] == f"{ISSUER}/oauth/authorize"
    assert metadata["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert metadata["registration_endpoint"] == f"{ISSUER}/oauth/register"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["client_id_metadata_document_supported"] is True
    assert "none" in metadata["token_endpoint_auth_methods_supported"]


def test_registration_off_is_neither_advertised_nor_served(api: DjangoClient, settings: Any) -> None:
    settings.MCP_GATEWAY_OAUTH_DYNAMIC_REGISTRATION = False
    assert "registration_endpoint" not in api.get("/.well-known/oauth-authorization-server").json()
    response = api.post("/oauth/register", {"redirect_uris": [REDIRECT]}, content_type="application/json")
    assert response.status_code == 404


def test_full_flow_issues_hashed_tokens_bound_to_the_resource(
    browser: DjangoClient, api: DjangoClient, client_id: str
) -> None:
    _, tokens = full_flow(browser, api, client_id)
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "mcp"
    assert tokens["access_token"].startswith("mcpa_") and tokens["refresh_token"].startswith("mcpr_")
    token = OAuthAccessToken.objects.get(token_hash=hash_token(tokens["access_token"]))
    assert token.grant.resource == RESOURCE and token.grant.user.username == "alice"
    stored = [str(v) for row in OAuthAccessToken.objects.values() for v in row.values()]
    assert tokens["access_token"] not in stored


def test_state_echoed_and_iss_present(browser: DjangoClient, client_id: str) -> None:
    auth = start(client_id)
    params = callback_params(allow(browser, auth))
    assert params["state"] == auth.state and params["iss"] == ISSUER and params["code"].startswith("mcpc_")


def test_anonymous_user_is_sent_to_the_sites_login(client_id: str) -> None:
    response = Client().get(authorize_url(start(client_id)))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_consent_page_names_client_server_scopes_and_destination(browser: DjangoClient, api: DjangoClient) -> None:
    client_id = register(api, client_name="Shiny Client")["client_id"]
    page = browser.get(authorize_url(start(client_id)))
    assert page.status_code == 200 and page["X-Frame-Options"] == "DENY"
    text = page.content.decode()
    for expected in ("Shiny Client", RESOURCE, "mcp", REDIRECT, "alice"):
        assert expected in text


def test_consent_without_csrf_token_is_refused(user: Any, client_id: str) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    response = browser.post(authorize_url(start(client_id)), {"decision": "allow"})
    assert response.status_code == 403
    assert not AuthorizationCode.objects.exists()


def test_deny_sends_access_denied_with_state_and_iss(browser: DjangoClient, client_id: str) -> None:
    auth = start(client_id)
    url = authorize_url(auth)
    page = browser.get(url)
    params = callback_params(browser.post(url, {"csrfmiddlewaretoken": page.context["csrf_token"], "decision": "deny"}))
    assert params == {"error": "access_denied", "state": auth.state, "iss": ISSUER} | {
        k: v for k, v in params.items() if k == "error_description"
    }


def test_remembered_consent_skips_the_page_and_withdrawing_revokes(
    browser: DjangoClient, api: DjangoClient, client_id: str
) -> None:
    auth = start(client_id)
    callback_params(allow(browser, auth, remember=True))
    again = start(client_id)
    params = callback_params(browser.get(authorize_url(again)))
    assert params["state"] == again.state and "code" in params
    client = OAuthClient.objects.get(client_id=client_id)
    page = browser.get("/oauth/connections/")
    assert page.status_code == 200
    browser.post("/oauth/connections/", {"csrfmiddlewaretoken": page.context["csrf_token"], "client": client.pk})
    assert not Consent.objects.exists()
    assert not Grant.objects.active().exists()
    assert browser.get(authorize_url(start(client_id))).status_code == 200  # asked again


AUTHORIZE_REFUSALS = [
    pytest.param({"code_challenge": None, "code_challenge_method": None}, "invalid_request", id="pkce-missing"),
    pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="pkce-plain"),
    pytest.param({"code_challenge_method": None}, "invalid_request", id="pkce-method-omitted-means-plain"),
    pytest.param({"resource": None}, "invalid_target", id="resource-missing"),
    pytest.param({"resource": "https://elsewhere.example/mcp"}, "invalid_target", id="resource-another-site"),
    pytest.param({"resource": "http://127.0.0.1/admin"}, "invalid_target", id="resource-not-a-mount"),
    pytest.param({"response_type": "token"}, "unsupported_response_type", id="implicit-grant"),
]


@pytest.mark.parametrize(("overrides", "error"), AUTHORIZE_REFUSALS)
def test_authorization_errors_go_back_with_state_and_iss(
    browser: DjangoClient, client_id: str, overrides: dict[str, Any], error: str
) -> None:
    auth = start(client_id)
    response = browser.get(authorize_url(auth, **overrides))
    params = callback_params(response)
    assert response["Location"].startswith(REDIRECT)
    assert params["error"] == error and params["state"] == auth.state and params["iss"] == ISSUER


OPEN_REDIRECTS = [
    pytest.param({"redirect_uri": "https://evil.example/callback"}, id="unregistered-redirect-uri"),
    pytest.param({"redirect_uri": "http://127.0.0.1:33418/other"}, id="loopback-other-path"),
    pytest.param({"redirect_uri": "http://evil.example:33418/callback"}, id="not-loopback-any-port"),
    pytest.param({"redirect_uri": "https://127.0.0.1:33418/callback"}, id="loopback-other-scheme"),
    pytest.param({"client_id": "unknown-client"}, id="unknown-client"),
]


@pytest.mark.parametrize("overrides", OPEN_REDIRECTS)
def test_bad_client_or_redirect_uri_is_shown_not_redirected(
    browser: DjangoClient, client_id: str, overrides: dict[str, Any]
) -> None:
    response = browser.get(authorize_url(start(client_id), **overrides))
    assert response.status_code == 400 and not response.has_header("Location")


def test_loopback_redirect_matches_any_port(browser: DjangoClient, api: DjangoClient, client_id: str) -> None:
    auth = start(client_id, redirect_uri="http://127.0.0.1:51234/callback")
    params = callback_params(allow(browser, auth))
    assert exchange(api, auth, params["code"]).status_code == 200


def test_next_cannot_send_the_login_elsewhere(user: Any) -> None:
    anonymous = Client()
    response = anonymous.post("/accounts/login/?next=https://evil.example/", {"username": "alice", "password": "pw"})
    assert response.status_code == 302 and not response["Location"].startswith("https://evil.example")


TOKEN_REFUSALS = [
    pytest.param({"code_verifier": None}, "invalid_request", id="pkce-verifier-missing"),
    pytest.param({"code_verifier": "x" * 50}, "invalid_grant", id="pkce-wrong-verifier"),
    pytest.param({"redirect_uri": "http://127.0.0.1:33418/elsewhere"}, "invalid_grant", id="redirect-uri-mismatch"),
    pytest.param({"resource": "http://127.0.0.1/mcp-test"}, "invalid_target", id="resource-not-the-grants"),
    pytest.param({"code": "mcpc_" + "A" * 43}, "invalid_grant", id="unknown-code"),
]


@pytest.mark.parametrize(("overrides", "error"), TOKEN_REFUSALS)
def test_token_request_refusals(
    browser: DjangoClient, api: DjangoClient, client_id: str, overrides: dict[str, Any], error: str
) -> None:
    auth = start(client_id)
    code = callback_params(allow(browser, auth))["code"]
    response = exchange(api, auth, code, **overrides)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == error
    assert not OAuthAccessToken.objects.exists()


def test_code_reuse_revokes_what_it_issued(browser: DjangoClient, api: DjangoClient, client_id: str) -> None:
    auth = start(client_id)
    code = callback_params(allow(browser, auth))["code"]
    assert exchange(api, auth, code).status_code == 200
    second = exchange(api, auth, code)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert not OAuthAccessToken.objects.filter(revoked_at__isnull=True).exists()
    assert Grant.objects.get().revoke_reason == "code_reuse"


def test_expired_code_is_refused(browser: DjangoClient, api: DjangoClient, client_id: str) -> None:
    auth = start(client_id)
    code = callback_params(allow(browser, auth))["code"]
    AuthorizationCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert exchange(api, auth, code).json()["error"] == "invalid_grant"


def test_code_lifetime_is_sixty_seconds(browser: DjangoClient, client_id: str) -> None:
    callback_params(allow(browser, start(client_id)))
    code = AuthorizationCode.objects.get()
    assert code.expires_at - code.created_at <= timedelta(seconds=60)


def test_refresh_rotates_and_reuse_revokes_the_family(browser: DjangoClient, api: DjangoClient, client_id: str) -> None:
    _, tokens = full_flow(browser, api, client_id)
    rotated = refresh(api, client_id, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.content
    new = rotated.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    reused = refresh(api, client_id, tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert Grant.objects.get().revoke_reason == "refresh_reuse"
    assert refresh(api, client_id, new["refresh_token"]).status_code == 400  # the family is gone
    assert not OAuthAccessToken.objects.filter(revoked_at__isnull=True).exists()


def test_refresh_for_another_resource_is_invalid_target(
    browser: DjangoClient, api: DjangoClient, client_id: str
) -> None:
    _, tokens = full_flow(browser, api, client_id)
    response = refresh(api, client_id, tokens["refresh_token"], resource="http://127.0.0.1/mcp-test")
    assert response.json()["error"] == "invalid_target"


def test_unknown_client_at_token_endpoint_is_401_invalid_client(api: DjangoClient) -> None:
    response = refresh(api, "no-such-client", "mcpr_" + "A" * 43)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_revoking_a_refresh_token_revokes_its_grant(browser: DjangoClient, api: DjangoClient, client_id: str) -> None:
    _, tokens = full_flow(browser, api, client_id)
    response = api.post("/oauth/revoke", {"token": tokens["refresh_token"], "client_id": client_id})
    assert response.status_code == 200
    assert Grant.objects.get().revoke_reason == "client"
    assert OAuthAccessToken.objects.get().revoked_at is not None


def test_confidential_client_gets_a_secret_stored_hashed(browser: DjangoClient, api: DjangoClient) -> None:
    registered = register(api, token_endpoint_auth_method="client_secret_post")
    secret = registered["client_secret"]
    client = OAuthClient.objects.get(client_id=registered["client_id"])
    assert client.secret_hash == hash_token(secret) and secret not in str(client.metadata)
    auth = start(client.client_id)
    code = callback_params(allow(browser, auth))["code"]
    assert exchange(api, auth, code).status_code == 401  # no secret: the client cannot authenticate
    auth = start(client.client_id)
    code = callback_params(allow(browser, auth))["code"]
    assert exchange(api, auth, code, client_secret=secret).status_code == 200


REGISTRATION_REFUSALS = [
    pytest.param({"redirect_uris": ["http://evil.example/cb"]}, id="plain-http-not-loopback"),
    pytest.param({"redirect_uris": ["javascript:alert(1)"]}, id="javascript-scheme"),
    pytest.param({"redirect_uris": []}, id="no-redirect-uri"),
    pytest.param({"grant_types": ["client_credentials"]}, id="no-authorization-code"),
]


@pytest.mark.parametrize("metadata", REGISTRATION_REFUSALS)
def test_registration_refusals(api: DjangoClient, metadata: dict[str, Any]) -> None:
    body = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", **metadata}
    response = api.post("/oauth/register", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"


def test_client_policy_restricts_registration(api: DjangoClient, settings: Any) -> None:
    settings.MCP_GATEWAY_OAUTH_CLIENT_POLICY = "tests.test_oauth_server.only_vscode"
    response = api.post("/oauth/register", {"redirect_uris": [REDIRECT]}, content_type="application/json")
    assert response.status_code == 400
    assert register(api, client_name="Visual Studio Code")["client_id"]


def only_vscode(request: Any, metadata: dict[str, Any]) -> bool:
    return bool(metadata.get("client_name") == "Visual Studio Code")


def test_native_app_schemes_register(api: DjangoClient) -> None:
    registered = register(api, redirect_uris=["cursor://anysphere.cursor-retrieval/oauth/callback"])
    assert OAuthClient.objects.get(client_id=registered["client_id"]).redirect_uris[0].startswith("cursor://")


def test_disabling_a_client_revokes_its_grants(browser: DjangoClient, api: DjangoClient, client_id: str) -> None:
    full_flow(browser, api, client_id)
    OAuthClient.objects.filter(client_id=client_id).disable()
    assert Grant.objects.get().revoke_reason == "client_disabled"
    assert OAuthRefreshToken.objects.get().revoked_at is not None


def test_password_change_revokes_the_users_grants(
    browser: DjangoClient, api: DjangoClient, client_id: str, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    full_flow(browser, api, client_id)
    with django_capture_on_commit_callbacks(execute=True):
        user.set_password("new")
        user.save()
    assert Grant.objects.get().revoke_reason == "user_credentials"


def test_authorize_query_is_not_reflected_unescaped(browser: DjangoClient, client_id: str) -> None:
    page = browser.get(authorize_url(start(client_id), state='"><script>x</script>'))
    assert b"<script>x</script>" not in page.content


def test_token_endpoint_refuses_get(api: DjangoClient) -> None:
    assert api.get("/oauth/token?" + urlencode({"grant_type": "refresh_token"})).status_code == 405


def test_registered_clients_keep_working_when_registration_is_turned_off(
    browser: DjangoClient, api: DjangoClient, client_id: str, settings: Any
) -> None:
    settings.MCP_GATEWAY_OAUTH_DYNAMIC_REGISTRATION = False
    full_flow(browser, api, client_id)


def test_clear_mcp_oauth_keeps_usable_tokens(browser: DjangoClient, api: DjangoClient, client_id: str) -> None:
    from django.core.management import call_command

    _, tokens = full_flow(browser, api, client_id)
    refresh(api, client_id, tokens["refresh_token"])
    OAuthRefreshToken.objects.filter(used_at__isnull=False).update(used_at=timezone.now() - timedelta(days=60))
    AuthorizationCode.objects.update(expires_at=timezone.now() - timedelta(days=2))
    call_command("clear_mcp_oauth", stdout=io.StringIO())
    assert OAuthRefreshToken.objects.count() == 1 and not AuthorizationCode.objects.exists()
    assert OAuthAccessToken.objects.count() == 2


def test_redirect_uri_may_be_omitted_with_one_registered(
    browser: DjangoClient, api: DjangoClient, client_id: str
) -> None:
    auth = start(client_id)
    url = authorize_url(auth, redirect_uri=None)
    page = browser.get(url)
    done = browser.post(url, {"csrfmiddlewaretoken": page.context["csrf_token"], "decision": "allow"})
    assert done["Location"].startswith(REDIRECT)
    assert exchange(api, auth, callback_params(done)["code"], redirect_uri=None).status_code == 200
