"""Your MCP access (``mcp_sessions.urls``): a user's own sessions and tokens, seen and ended by that user only.

Driven with Django's test client: who may reach what (login, owner), which methods and the CSRF check, the
audit rows of every change, that nothing is cached, and that a new token's secret is shown once and nowhere
else. The live end of a client's stream, in a real browser, is ``tests/test_account_browser.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, McpSession, Transport
from mcp_sessions.revocation import login_session_hash
from mcp_sessions.signals import sessions_revoked

pytestmark = pytest.mark.django_db(transaction=True)

INDEX = reverse("mcp_account:index")
NEW_TOKEN = reverse("mcp_account:new_token")
END_OTHERS = reverse("mcp_account:end_other_sessions")


def end_url(session: McpSession) -> str:
    return reverse("mcp_account:end_session", args=[session.pk])


def revoke_url(token: AccessToken) -> str:
    return reverse("mcp_account:revoke_token", args=[token.pk])


def open_session(user: Any, **fields: Any) -> McpSession:
    fields = {"server": "/mcp/", "transport": Transport.SSE, "channel_name": "specific.w!c", **fields}
    return McpSession.objects.create(user=user, id_hash=hash_session_id(new_session_id()), **fields)


def login(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def this_browser(client: Client) -> str:
    """The login hash the gateway stores on the sessions this client's login opens."""
    return login_session_hash(client.cookies[settings.SESSION_COOKIE_NAME].value)


@pytest.fixture
def world(alice: Any, bob: Any) -> dict[str, Any]:
    """Alice and bob, each with an open session, a token and a session opened with it."""
    objects: dict[str, Any] = {"alice": alice, "bob": bob}
    for who, user in (("alice", alice), ("bob", bob)):
        token, _ = AccessToken.objects.issue(user, f"{who}-laptop")
        objects[f"{who}-token"] = token
        objects[f"{who}-session"] = open_session(user, client_name=f"{who}-client", client_version="1.0")
        objects[f"{who}-token-session"] = open_session(user, token=token, client_name=f"{who}-agent")
    return objects


def is_open(session: McpSession) -> bool:
    return McpSession.objects.get(pk=session.pk).closed_at is None


def is_revoked(token: AccessToken) -> bool:
    return AccessToken.objects.get(pk=token.pk).revoked_at is not None


# Every action, as (method, url of the world, what it would have changed).
ACTIONS = [
    pytest.param("post", lambda w: end_url(w["alice-session"]), lambda w: not is_open(w["alice-session"]), id="end"),
    pytest.param("post", lambda w: END_OTHERS, lambda w: not is_open(w["alice-session"]), id="end-others"),
    pytest.param("post", lambda w: revoke_url(w["alice-token"]), lambda w: is_revoked(w["alice-token"]), id="revoke"),
    pytest.param("post", lambda w: NEW_TOKEN, lambda w: AccessToken.objects.filter(name="x").exists(), id="create"),
]
PAGES = [
    pytest.param(lambda w: INDEX, id="index"),
    pytest.param(lambda w: NEW_TOKEN, id="token-form"),
]


@pytest.mark.parametrize(("method", "where", "changed"), ACTIONS)
def test_an_anonymous_post_goes_to_the_login_page_and_changes_nothing(
    world: dict[str, Any], method: str, where: Any, changed: Any
) -> None:
    response = getattr(Client(), method)(where(world), {"name": "x", "expires": "30"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse(settings.LOGIN_URL))
    assert "no-store" in response["Cache-Control"]
    assert not changed(world)


@pytest.mark.parametrize("where", PAGES)
def test_an_anonymous_visitor_is_sent_to_log_in(world: dict[str, Any], where: Any) -> None:
    response = Client().get(where(world))
    assert response.status_code == 302 and response["Location"].startswith(reverse(settings.LOGIN_URL))


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda w: end_url(w["alice-session"]), id="end"),
        pytest.param(lambda w: END_OTHERS, id="end-others"),
        pytest.param(lambda w: revoke_url(w["alice-token"]), id="revoke"),
    ],
)
@pytest.mark.parametrize("method", ["get", "head", "put", "delete"])
def test_actions_take_only_post(world: dict[str, Any], where: Any, method: str) -> None:
    client = login(world["alice"])
    assert getattr(client, method)(where(world)).status_code == 405
    assert is_open(world["alice-session"]) and not is_revoked(world["alice-token"])


@pytest.mark.parametrize("where", PAGES)
@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_pages_take_only_their_methods(world: dict[str, Any], where: Any, method: str) -> None:
    assert getattr(login(world["alice"]), method)(where(world)).status_code == 405


@pytest.mark.parametrize(("method", "where", "changed"), ACTIONS)
def test_a_post_without_the_csrf_token_is_refused(world: dict[str, Any], method: str, where: Any, changed: Any) -> None:
    client = login(world["alice"], enforce_csrf_checks=True)
    response = getattr(client, method)(where(world), {"name": "x", "expires": "30"})
    assert response.status_code == 403
    assert not changed(world)


def test_a_post_with_the_csrf_token_of_the_page_is_accepted(world: dict[str, Any]) -> None:
    client = login(world["alice"], enforce_csrf_checks=True)
    page = client.get(INDEX)
    token = page.context["csrf_token"]
    assert client.post(end_url(world["alice-session"]), {"csrfmiddlewaretoken": token}).status_code == 302
    assert not is_open(world["alice-session"])


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda w: end_url(w["bob-session"]), id="bobs-session"),
        pytest.param(lambda w: end_url(w["bob-token-session"]), id="bobs-token-session"),
        pytest.param(lambda w: revoke_url(w["bob-token"]), id="bobs-token"),
        pytest.param(lambda w: reverse("mcp_account:end_session", args=[10**9]), id="no-such-session"),
        pytest.param(lambda w: reverse("mcp_account:revoke_token", args=[10**9]), id="no-such-token"),
    ],
)
def test_another_users_session_or_token_is_not_found(world: dict[str, Any], where: Any) -> None:
    before = AuditEvent.objects.count()
    response = login(world["alice"]).post(where(world))
    assert response.status_code == 404
    assert all(is_open(world[f"bob-{name}"]) for name in ("session", "token-session"))
    assert not is_revoked(world["bob-token"])
    assert AuditEvent.objects.count() == before
    assert "bob" not in response.content.decode()


def test_end_all_others_never_reaches_another_user(world: dict[str, Any]) -> None:
    login(world["alice"]).post(END_OTHERS)
    assert is_open(world["bob-session"]) and is_open(world["bob-token-session"])


def test_the_page_lists_only_the_users_own(world: dict[str, Any]) -> None:
    open_session(world["alice"], client_name="alice-ended", closed_at=timezone.now(), close_reason="revoked")
    page = login(world["alice"]).get(INDEX).content.decode()
    for shown in ("alice-client", "alice-agent", "alice-laptop", "alice-ended", world["alice-token"].prefix):
        assert shown in page
    for hidden in ("bob-client", "bob-agent", "bob-laptop", world["bob-token"].prefix):
        assert hidden not in page


@pytest.mark.parametrize("where", PAGES)
def test_no_page_is_cached(world: dict[str, Any], where: Any) -> None:
    response = login(world["alice"]).get(where(world))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]


@pytest.mark.parametrize(
    ("where", "kind", "count"),
    [
        pytest.param(lambda w: end_url(w["alice-session"]), AuditKind.SESSION_REVOKED, 1, id="end"),
        pytest.param(lambda w: END_OTHERS, AuditKind.SESSION_REVOKED, 2, id="end-others"),
        pytest.param(lambda w: revoke_url(w["alice-token"]), AuditKind.TOKEN_REVOKED, 1, id="revoke"),
        pytest.param(lambda w: NEW_TOKEN, AuditKind.TOKEN_CREATED, 1, id="create"),
    ],
)
def test_each_change_writes_audit_rows_with_the_users_address(
    world: dict[str, Any], where: Any, kind: str, count: int
) -> None:
    client = login(world["alice"], REMOTE_ADDR="192.0.2.7")
    response = client.post(where(world), {"name": "ci runner", "expires": "30"})
    assert response.status_code in (200, 302)
    rows = AuditEvent.objects.filter(kind=kind)
    assert rows.count() == count
    assert {(row.user_id, row.remote_addr) for row in rows} == {(world["alice"].pk, "192.0.2.7")}


def test_revoking_a_token_audits_it_by_prefix_and_ends_its_sessions(world: dict[str, Any]) -> None:
    token = world["alice-token"]
    response = login(world["alice"]).post(revoke_url(token))
    assert response.status_code == 302 and response["Location"].endswith("#tokens")
    assert is_revoked(token) and not is_open(world["alice-token-session"]) and is_open(world["alice-session"])
    [row] = AuditEvent.objects.filter(kind=AuditKind.TOKEN_REVOKED)
    assert row.detail == f"{token.prefix}\\u2026 alice-laptop"
    again = login(world["alice"]).post(revoke_url(token))
    assert again.status_code == 302
    assert AuditEvent.objects.filter(kind=AuditKind.TOKEN_REVOKED).count() == 1


def test_ending_a_session_ends_it_live_as_the_admin_does(world: dict[str, Any]) -> None:
    told: list[dict[str, Any]] = []

    def receiver(sender: Any, signal: Any, **kwargs: Any) -> None:
        told.append(kwargs)

    sessions_revoked.connect(receiver)
    try:
        response = login(world["alice"]).post(end_url(world["alice-session"]))
    finally:
        sessions_revoked.disconnect(receiver)
    assert response.status_code == 302 and response["Location"].endswith("#sessions")
    assert told == [{"by_worker": {"specific.w!c": [world["alice-session"].pk]}, "reason": "revoked"}]
    assert McpSession.objects.get(pk=world["alice-session"].pk).close_reason == "revoked"


def test_ending_an_ended_session_of_ones_own_changes_nothing(world: dict[str, Any]) -> None:
    client = login(world["alice"])
    client.post(end_url(world["alice-session"]))
    response = client.post(end_url(world["alice-session"]), follow=True)
    assert response.status_code == 200
    assert "had ended already" in response.content.decode()
    assert AuditEvent.objects.filter(kind=AuditKind.SESSION_REVOKED).count() == 1


def test_this_browser_is_marked_and_kept_by_end_all_others(world: dict[str, Any]) -> None:
    client = login(world["alice"])
    mine = open_session(world["alice"], client_name="this-tab", login_session_hash=this_browser(client))
    other_login = open_session(world["alice"], client_name="elsewhere", login_session_hash="f" * 64)
    page = client.get(INDEX).content.decode()
    assert page.count("This browser") == 1
    row = page[page.index("this-tab") : page.index("this-tab") + 1500]
    assert "This browser" in row.split("</tr>")[0]
    assert "Another login" in page
    response = client.post(END_OTHERS, follow=True)
    assert "Ended 3 sessions." in response.content.decode()
    assert is_open(mine)
    assert not any(map(is_open, (other_login, world["alice-session"], world["alice-token-session"])))


@pytest.mark.parametrize(
    ("transport", "protocol", "shown"),
    [
        pytest.param(Transport.SSE, "2025-11-25", "HTTP+SSE", id="sse"),
        pytest.param(Transport.STREAMABLE_HTTP, "2025-03-26", "Streamable HTTP", id="streamable-http"),
    ],
)
def test_sessions_show_their_transport_and_protocol(alice: Any, transport: str, protocol: str, shown: str) -> None:
    open_session(alice, transport=transport, protocol_version=protocol, client_name="c", remote_addr="198.51.100.4")
    page = login(alice).get(INDEX).content.decode()
    assert shown in page and protocol in page and "198.51.100.4" in page


def test_client_text_is_escaped(alice: Any) -> None:
    open_session(alice, client_name="<script>alert(1)</script>", client_version='"><b>')
    page = login(alice).get(INDEX).content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page and '"><b>' not in page


def test_a_new_tokens_secret_is_shown_once_and_nowhere_else(alice: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = login(alice)
    response = client.post(NEW_TOKEN, {"name": "laptop", "expires": "30"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "Location" not in response
    secret = response.context["secret"]
    token = AccessToken.objects.get(user=alice, name="laptop")
    assert AccessToken.objects.find_usable(secret) == token
    assert secret.startswith(token.prefix) and token.expires_at is not None
    page = response.content.decode()
    assert f'value="{secret}"' in page
    later = [client.get(INDEX), client.get(NEW_TOKEN)]
    for response in later:
        assert secret not in response.content.decode()
        assert secret[len(token.prefix) :] not in response.content.decode()
    assert secret not in caplog.text
    assert all(secret not in row.detail for row in AuditEvent.objects.all())


def test_the_new_token_page_fills_in_the_sites_url(alice: Any) -> None:
    response = login(alice).post(NEW_TOKEN, {"name": "laptop", "expires": ""}, HTTP_HOST="localhost")
    page = response.content.decode()
    assert "http://localhost/mcp/" in page and "http://localhost/mcp/sse" in page
    assert AccessToken.objects.get(name="laptop").expires_at is None
    assert "never expires" in page


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"name": "", "expires": "30"}, id="no-name"),
        pytest.param({"name": "\u202e\x00", "expires": "30"}, id="only-control-characters"),
        pytest.param({"name": "x" * 101, "expires": "30"}, id="too-long"),
        pytest.param({"name": "ok", "expires": "31"}, id="lifetime-not-offered"),
        pytest.param({"name": "ok", "expires": "soon"}, id="lifetime-not-a-number"),
    ],
)
def test_a_bad_form_creates_nothing_and_says_why(alice: Any, data: dict[str, str]) -> None:
    response = login(alice).post(NEW_TOKEN, data)
    assert response.status_code == 200
    assert response.context["form"].errors
    assert 'aria-invalid="true"' in response.content.decode()
    assert not AccessToken.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_tokens_name_is_stored_clean(alice: Any) -> None:
    login(alice).post(NEW_TOKEN, {"name": "lap\u202etop\x07", "expires": "7"})
    assert AccessToken.objects.get().name == "laptop"


def test_the_pages_extend_the_configured_base_template(alice: Any, settings: Any, tmp_path: Any) -> None:
    (tmp_path / "site_base.html").write_text(
        "<html lang='en'><title>{% block title %}{% endblock %} | Example</title>"
        "<body class='site'>{% block content %}{% endblock %}</body></html>"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    settings.MCP_GATEWAY_ACCOUNT_BASE_TEMPLATE = "site_base.html"
    client = login(alice)
    for response in (client.get(INDEX), client.get(NEW_TOKEN), client.post(NEW_TOKEN, {"name": "a", "expires": ""})):
        page = response.content.decode()
        assert "<body class='site'>" in page and " | Example</title>" in page


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        pytest.param("mcp_sessions/account/base.html", [], id="the-default"),
        pytest.param("demo/base.html", [], id="the-sites"),
        pytest.param("no/such.html", ["mcp_gateway.E015"], id="missing"),
        pytest.param("", ["mcp_gateway.E015"], id="empty"),
        pytest.param(None, ["mcp_gateway.E015"], id="none"),
    ],
)
def test_the_base_template_is_checked(value: Any, errors: list[str]) -> None:
    with override_settings(MCP_GATEWAY_ACCOUNT_BASE_TEMPLATE=value):
        found = [m.id for m in run_checks(tags=["mcp_gateway"]) if m.id == "mcp_gateway.E015"]
    assert found == errors


def test_the_demo_home_page_links_to_it(alice: Any) -> None:
    assert f'href="{INDEX}"' in login(alice).get("/").content.decode()
