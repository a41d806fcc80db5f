"""Your MCP access's "Connected apps" (``mcp_oauth.account``): the apps a user allowed, and "Revoke access".

Driven with Django's test client as ``tests/test_account.py`` drives the rest of the page: who may reach what
(login, owner), methods and CSRF, the audit row, nothing cached, the section only where ``mcp_oauth`` is
installed. Revoking ends the app's stream live in another process (a daphne on Redis), and its token gets 401.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from mcp_oauth.models import Consent, Grant, OAuthAccessToken, OAuthClient, RevokeReason
from mcp_sessions.account import sections
from mcp_sessions.account.sections import Section, register_section
from mcp_sessions.models import AuditEvent, AuditKind, CloseReason, McpSession

from .clients import BOUND, handshake, jsonrpc, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)

INDEX = reverse("mcp_account:index")
HEADING = '<h2 id="apps-heading">Connected apps</h2>'


def allow(user: Any, app: str, resource: str = "http://testserver/mcp", scope: str = "mcp") -> tuple[Grant, str]:
    """``user`` allowed the client named ``app`` (made once) for ``resource``: the grant and its access token."""
    client, _ = OAuthClient.objects.get_or_create(
        client_id=f"id-{app}", defaults={"kind": "dynamic", "name": app, "redirect_uris": ["http://127.0.0.1/cb"]}
    )
    grant = Grant.objects.create(user=user, client=client, resource=resource, scope=scope)
    Consent.objects.remember(user, client, resource, scope)
    tokens = Grant.objects.issue_tokens(grant, access_lifetime=3600, refresh_lifetime=None, refresh=True)
    return grant, tokens["access_token"]


def revoke_url(grant: Grant) -> str:
    return reverse("mcp_oauth:revoke_app", args=[grant.client_id])


def login(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def is_active(grant: Grant) -> bool:
    return Grant.objects.get(pk=grant.pk).revoked_at is None


@pytest.fixture
def world(alice: Any, bob: Any) -> dict[str, Any]:
    """Alice allowed an editor (once for two servers) and an old app she revoked since; bob allowed an agent."""
    objects: dict[str, Any] = {"alice": alice, "bob": bob}
    objects["editor"], objects["editor-secret"] = allow(alice, "Alice editor", scope="mcp:tools:echo mcp:prompts")
    objects["editor-2"], _ = allow(alice, "Alice editor", resource="http://testserver/mcp-test")
    used = timezone.now() - timedelta(hours=2)
    Grant.objects.filter(pk=objects["editor-2"].pk).update(last_used_at=used)
    objects["editor-used"] = used
    old, _ = allow(alice, "Alice old app")
    Grant.objects.filter(pk=old.pk).revoke(RevokeReason.ADMIN)
    objects["agent"], objects["agent-secret"] = allow(bob, "Bob agent")
    return objects


def test_the_section_lists_the_users_apps_only_with_servers_scopes_and_times(world: dict[str, Any]) -> None:
    response = login(world["alice"]).get(INDEX)
    page = response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert HEADING in page and '<a href="#apps">Connected apps</a>' in page
    [row] = response.context["sections"][-1][1]["apps"]
    assert row.client.name == "Alice editor"
    assert row.resources == ["http://testserver/mcp", "http://testserver/mcp-test"]
    assert row.scopes == ["The tool “echo”", "All prompts", "Everything"]
    assert row.allowed_at == world["editor"].created_at and row.last_used_at == world["editor-used"]
    for shown in ("Alice editor", "The tool “echo”", "All prompts", "http://testserver/mcp-test", "Revoke access"):
        assert shown in page
    assert f'datetime="{world["editor-used"]:%Y-%m-%dT%H:%M:%S}' in page
    for hidden in ("Alice old app", "Bob agent"):
        assert hidden not in page


def test_an_app_never_used_says_so_and_none_allowed_says_so(alice: Any, bob: Any) -> None:
    assert "You have allowed no app." in login(alice).get(INDEX).content.decode()
    allow(alice, "Fresh app")
    section = login(alice).get(INDEX).content.decode().split(HEADING)[1]
    assert "Fresh app" in section and "Never" in section


def test_client_text_is_escaped(alice: Any) -> None:
    allow(alice, "<script>alert(1)</script>")
    page = login(alice).get(INDEX).content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda w: revoke_url(w["agent"]), id="bobs-app"),
        pytest.param(lambda w: reverse("mcp_oauth:revoke_app", args=[10**9]), id="no-such-app"),
    ],
)
def test_an_app_only_another_user_allowed_is_not_found(world: dict[str, Any], where: Any) -> None:
    response = login(world["alice"]).post(where(world))
    assert response.status_code == 404
    assert is_active(world["agent"]) and Consent.objects.filter(user=world["bob"]).exists()
    assert not AuditEvent.objects.filter(kind=AuditKind.APP_REVOKED).exists()
    assert "Bob" not in response.content.decode()


def test_revoking_an_app_both_allowed_leaves_the_other_users_access(world: dict[str, Any]) -> None:
    bobs, _ = allow(world["bob"], "Alice editor")
    assert login(world["alice"]).post(revoke_url(world["editor"])).status_code == 302
    assert not is_active(world["editor"]) and is_active(bobs)


@pytest.mark.parametrize("method", ["get", "head", "put", "delete"])
def test_revoke_takes_only_post(world: dict[str, Any], method: str) -> None:
    assert getattr(login(world["alice"]), method)(revoke_url(world["editor"])).status_code == 405
    assert is_active(world["editor"])


def test_an_anonymous_post_goes_to_the_login_page_and_changes_nothing(world: dict[str, Any]) -> None:
    response = Client().post(revoke_url(world["editor"]))
    assert response.status_code == 302 and response["Location"].startswith(reverse(settings.LOGIN_URL))
    assert "no-store" in response["Cache-Control"]
    assert is_active(world["editor"])


def test_a_post_without_the_csrf_token_is_refused_and_with_the_pages_accepted(world: dict[str, Any]) -> None:
    client = login(world["alice"], enforce_csrf_checks=True)
    assert client.post(revoke_url(world["editor"])).status_code == 403
    assert is_active(world["editor"])
    token = client.get(INDEX).context["csrf_token"]
    assert client.post(revoke_url(world["editor"]), {"csrfmiddlewaretoken": token}).status_code == 302
    assert not is_active(world["editor"])


def test_revoking_ends_every_grant_and_token_of_the_app_forgets_consent_and_audits(world: dict[str, Any]) -> None:
    client = login(world["alice"], REMOTE_ADDR="192.0.2.7")
    response = client.post(revoke_url(world["editor"]), follow=True)
    assert response.redirect_chain == [(f"{INDEX}#apps", 302)]
    assert "Alice editor no longer has access" in response.content.decode()
    assert not is_active(world["editor"]) and not is_active(world["editor-2"])
    assert Grant.objects.get(pk=world["editor"].pk).revoke_reason == RevokeReason.USER
    assert OAuthAccessToken.objects.authenticate(world["editor-secret"]) is None
    assert not Consent.objects.filter(user=world["alice"], client=world["editor"].client).exists()
    assert is_active(world["agent"]) and OAuthAccessToken.objects.authenticate(world["agent-secret"]) is not None
    [row] = AuditEvent.objects.filter(kind=AuditKind.APP_REVOKED)
    assert (row.user_id, row.remote_addr) == (world["alice"].pk, "192.0.2.7")
    assert row.detail == "id-Alice editor Alice editor"
    assert "Alice editor" not in response.content.decode().split(HEADING)[1]
    again = client.post(revoke_url(world["editor"]), follow=True)
    assert "That app had no access already." in again.content.decode()
    assert AuditEvent.objects.filter(kind=AuditKind.APP_REVOKED).count() == 1


def test_the_section_is_absent_where_mcp_oauth_is_not_installed(alice: Any) -> None:
    allow(alice, "Alice editor")
    without = [app for app in settings.INSTALLED_APPS if app != "mcp_oauth"]
    with override_settings(INSTALLED_APPS=without):
        page = login(alice).get(INDEX).content.decode()
    assert "Connected apps" not in page and 'id="apps"' not in page and "Alice editor" not in page
    assert '<section id="tokens"' in page


def test_the_section_is_absent_when_nothing_registered_it(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sections, "_registered", {})
    assert "Connected apps" not in login(alice).get(INDEX).content.decode()


def test_registering_a_slug_again_replaces_it_and_a_built_in_slug_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sections, "_registered", dict(sections._registered))
    [apps] = [section for section in sections.all_sections() if section.slug == "apps"]
    register_section(apps)
    assert [section.slug for section in sections.all_sections()].count("apps") == 1
    with pytest.raises(ValueError, match="tokens"):
        register_section(Section("tokens", "Mine", "x.html", lambda request: {}))


@pytest.fixture
def server(start_daphne: Any, redis_settings: dict[str, Any]) -> Any:
    return start_daphne(overrides=redis_settings)


async def test_revoking_ends_the_apps_stream_in_another_process_and_its_token_gets_401(
    server: Any, http: httpx2.AsyncClient, alice: Any
) -> None:
    grant, secret = await sync_to_async(allow)(alice, "Live app", f"{server.url}/mcp")
    headers = {"Authorization": f"Bearer {secret}"}
    async with raw_stream(http, f"{server.url}/mcp/sse", headers) as stream:
        await handshake(http, server.url, stream, headers)
        response = await sync_to_async(lambda: login(alice).post(revoke_url(grant)))()
        assert response.status_code == 302
        with anyio.fail_after(BOUND):
            try:
                while True:
                    await stream.next_event(timeout=BOUND)
            except EOFError:
                pass
    record = await McpSession.objects.aget(credential_ref=grant.ref)
    assert record.close_reason == CloseReason.REVOKED
    ping = {**headers, "Accept": "application/json, text/event-stream"}
    refused = await http.post(f"{server.url}/mcp/", json=jsonrpc("ping"), headers=ping)
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]
