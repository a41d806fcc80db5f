"""OAuth records in the admin (mcp_oauth.admin): listed and shown without a secret or hash, revoke actions."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from mcp_oauth.models import Consent, Grant, OAuthAccessToken, OAuthClient, OAuthRefreshToken
from mcp_oauth.secrets import hash_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def issued(django_user_model: Any) -> dict[str, Any]:
    user = django_user_model.objects.create_user("grace")
    client = OAuthClient.objects.register(
        {"client_id": "dcr-client", "name": "Some App", "redirect_uris": ["http://127.0.0.1/cb"],
         "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "client_secret_basic"},
        secret="mcps_" + "s" * 43,
    )  # fmt: skip
    grant = Grant.objects.create(user=user, client=client, resource="https://site.example/mcp", scope="mcp")
    Consent.objects.remember(user, client, grant.resource, "mcp")
    tokens = Grant.objects.issue_tokens(grant, access_lifetime=60, refresh_lifetime=None, refresh=True)
    return {"client": client, "grant": grant, "tokens": tokens}


@pytest.fixture
def admin(django_user_model: Any) -> Client:
    browser = Client()
    browser.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "x"))
    return browser


MODELS = [
    pytest.param(OAuthClient, id="clients"),
    pytest.param(Grant, id="grants"),
    pytest.param(Consent, id="consents"),
    pytest.param(OAuthAccessToken, id="access-tokens"),
    pytest.param(OAuthRefreshToken, id="refresh-tokens"),
]


@pytest.mark.parametrize("model", MODELS)
def test_pages_show_no_secret(admin: Client, issued: dict[str, Any], model: Any) -> None:
    secrets = [issued["tokens"]["access_token"], issued["tokens"]["refresh_token"], "mcps_" + "s" * 43]
    digests = [hash_token(s) for s in secrets]
    name = f"admin:mcp_oauth_{model._meta.model_name}"
    pages = [admin.get(reverse(f"{name}_changelist"))]
    pages.append(admin.get(reverse(f"{name}_change", args=[model.objects.first().pk])))
    for page in pages:
        assert page.status_code == 200
        text = page.content.decode()
        assert not any(value in text for value in secrets + digests)


def test_revoke_grants_action(admin: Client, issued: dict[str, Any]) -> None:
    url = reverse("admin:mcp_oauth_grant_changelist")
    admin.post(url, {"action": "revoke", "_selected_action": [issued["grant"].pk]})
    grant = Grant.objects.get()
    assert grant.revoke_reason == "admin" and OAuthAccessToken.objects.get().revoked_at is not None


def test_disable_clients_action(admin: Client, issued: dict[str, Any]) -> None:
    url = reverse("admin:mcp_oauth_oauthclient_changelist")
    admin.post(url, {"action": "disable", "_selected_action": [issued["client"].pk]})
    assert OAuthClient.objects.get().disabled_at is not None
    assert Grant.objects.get().revoke_reason == "client_disabled"


def test_records_are_not_edited_by_hand(admin: Client, issued: dict[str, Any]) -> None:
    url = reverse("admin:mcp_oauth_grant_change", args=[issued["grant"].pk])
    admin.post(url, {"resource": "https://elsewhere.example/mcp"})
    assert Grant.objects.get().resource == "https://site.example/mcp"
    assert admin.get(reverse("admin:mcp_oauth_grant_add")).status_code == 403
