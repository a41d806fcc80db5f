"""Your MCP access (``mcp_sessions.urls``): a user's own sessions and tokens, seen and ended by that user only.

Driven with Django's test client: who may reach what (login, owner), which methods and the CSRF check, the
audit rows of every change, that nothing is cached, that a new token's secret is shown once and nowhere
else, that a token is limited only to what its user may use, and that the Activity section shows the user's own
calls alone, a page at a time. The live end of a client's stream, in a real browser, is
``tests/test_account_browser.py``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.checks import run_checks
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from mcp_sessions.account.activity import PER_PAGE
from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import (
    AccessToken,
    AuditEvent,
    AuditKind,
    CallOutcome,
    CallRecord,
    CredentialKind,
    McpSession,
    Transport,
)
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
    # Of this test's own kind: an earlier test's queued rows may be written meanwhile.
    assert not AuditEvent.objects.filter(kind=AuditKind.TOKEN_CREATED).exists()


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


# Limiting a token: what the demo's server (MCP_GATEWAY_SERVER) lets alice, a plain user, use, and what not.
@pytest.mark.parametrize(
    ("chosen", "scopes", "shown"),
    [
        pytest.param([], [], ["It is not limited"], id="not-limited"),
        pytest.param(["mcp:tools:echo"], ["mcp:tools:echo"], ["The tool “echo”"], id="one-tool"),
        pytest.param(
            ["mcp:tools:whoami", "mcp:prompts"],
            ["mcp:prompts", "mcp:tools:whoami"],
            ["All prompts", "The tool “whoami”"],
            id="a-tool-and-every-prompt",
        ),
        pytest.param(["mcp:resources"], ["mcp:resources"], ["All resources"], id="every-resource"),
    ],
)
def test_a_token_is_limited_to_what_is_ticked_and_its_pages_say_so(
    alice: Any, chosen: list[str], scopes: list[str], shown: list[str]
) -> None:
    client = login(alice)
    response = client.post(NEW_TOKEN, {"name": "scoped", "expires": "30", "limit_to": chosen})
    assert response.status_code == 200, response.context["form"].errors
    token = AccessToken.objects.get(user=alice, name="scoped")
    assert token.scopes == scopes
    created = response.content.decode()
    assert all(words in created for words in shown)
    row = client.get(INDEX).content.decode().split("scoped</th>")[1].split("</tr>")[0]
    assert all(words in row for words in shown) if scopes else "Not limited" in row


def test_the_form_offers_only_what_the_user_may_use(alice: Any, make_user: Any) -> None:
    offered = login(alice).get(NEW_TOKEN).context["form"].fields["limit_to"].offered
    assert {"mcp:tools", "mcp:tools:echo", "mcp:tools:whoami", "mcp:tools:add_note"} <= set(offered)
    assert not {"mcp", "mcp:tools:note_stats", "mcp:tools:delete_note"} & set(offered)
    staff = make_user("carla", is_staff=True)
    assert "mcp:tools:note_stats" in login(staff).get(NEW_TOKEN).context["form"].fields["limit_to"].offered


@pytest.mark.parametrize(
    "chosen",
    [
        pytest.param(["mcp:tools:note_stats"], id="a-tool-for-staff-only"),
        pytest.param(["mcp:tools:delete_note"], id="a-tool-needing-a-permission"),
        pytest.param(["mcp:tools:no_such_tool"], id="a-tool-the-server-lacks"),
        pytest.param(["mcp"], id="everything-is-no-limit"),
        pytest.param(["mcp:bogus"], id="not-a-scope"),
        pytest.param(["mcp:tools:"], id="a-tool-without-a-name"),
        pytest.param(["note_stats"], id="a-staff-tool-by-its-bare-name"),
        pytest.param(["mcp:tools:echo", "mcp:tools:note_stats"], id="one-offered-one-not"),
    ],
)
def test_a_limit_outside_what_is_offered_is_a_form_error(alice: Any, chosen: list[str]) -> None:
    response = login(alice).post(NEW_TOKEN, {"name": "scoped", "expires": "30", "limit_to": chosen})
    assert response.status_code == 200
    assert "limit_to" in response.context["form"].errors
    assert 'aria-invalid="true"' in response.content.decode()
    assert not AccessToken.objects.exists() and not AuditEvent.objects.exists()


def make_call(user: Any, name: str, **fields: Any) -> CallRecord:
    fields = {
        "credential_kind": CredentialKind.LOGIN,
        "credential_ref": "abcdefabcdef",
        "session_ref": "0123456789ab",
        "server": "/mcp/",
        "transport": Transport.STREAMABLE_HTTP,
        "method": "tools/call",
        "arguments_digest": "f" * 64,
        "outcome": CallOutcome.OK,
        "duration_ms": 12.34,
        **fields,
    }
    return CallRecord.objects.create(user=user, username=user.get_username(), name=name, **fields)


def activity(page: str) -> str:
    return page.split('id="activity"')[1]


def test_the_activity_section_shows_the_users_own_calls_and_nothing_of_their_arguments(world: dict[str, Any]) -> None:
    alice, bob = world["alice"], world["bob"]
    make_call(alice, "echo", arguments={"text": "alice-secret-argument"}, duration_ms=3.21)
    make_call(
        alice,
        "notes://alice/notes",
        method="resources/read",
        outcome=CallOutcome.REFUSED,
        credential_kind=CredentialKind.TOKEN,
        token=world["alice-token"],
        session_ref="",
    )
    make_call(bob, "bob-only-tool", token=world["bob-token"], credential_kind=CredentialKind.TOKEN)
    make_call(bob, "bob-other-tool", arguments={"text": "bob-argument"})
    section = activity(login(alice).get(INDEX).content.decode())
    for shown in ("echo", "3.2 ms", "OK", "Another login", "Session 0123456789ab"):
        assert shown in section
    for shown in ("notes://alice/notes", "Resource", "Refused", "Token “alice-laptop”", "2026-07-28, no session"):
        assert shown in section
    for hidden in ("bob-only-tool", "bob-other-tool", "bob-laptop", "bob-argument", "alice-secret-argument"):
        assert hidden not in section
    assert "Your calls 1 to 2 of 2" in section
    assert section.index("notes://alice/notes") < section.index("echo"), "newest first"


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        pytest.param({"credential_ref": "this-browser"}, "This browser", id="this-browsers-login"),
        pytest.param({}, "Another login", id="another-login"),
        pytest.param({"credential_kind": CredentialKind.TOKEN}, "A deleted token", id="a-token-gone"),
        pytest.param(
            {"credential_kind": CredentialKind.OTHER, "client_id": "<b>app</b>"}, "The app “&lt;b&gt;app", id="oauth"
        ),
        pytest.param({"credential_kind": CredentialKind.OTHER}, "Other", id="other"),
    ],
)
def test_each_call_names_its_credential(alice: Any, fields: dict[str, Any], shown: str) -> None:
    client = login(alice)
    if fields.get("credential_ref") == "this-browser":
        fields = {"credential_ref": this_browser(client)[:12]}
    make_call(alice, "whoami", **fields)
    assert shown in activity(client.get(INDEX).content.decode())


def test_a_user_without_calls_is_told_so(world: dict[str, Any]) -> None:
    make_call(world["bob"], "bob-only-tool")
    section = activity(login(world["alice"]).get(INDEX).content.decode())
    assert "No call yet" in section and "bob-only-tool" not in section


@pytest.mark.parametrize(
    ("asked", "first", "last", "links"),
    [
        pytest.param("", PER_PAGE + 4, 5, ["Older calls"], id="the-first-page"),
        pytest.param("?page=1", PER_PAGE + 4, 5, ["Older calls"], id="page-1"),
        pytest.param("?page=2", 4, 0, ["Newer calls"], id="the-last-page"),
        pytest.param("?page=9", 4, 0, ["Newer calls"], id="past-the-end-is-the-last"),
        pytest.param("?page=nonsense", PER_PAGE + 4, 5, ["Older calls"], id="nonsense-is-the-first"),
    ],
)
def test_the_activity_is_paginated(world: dict[str, Any], asked: str, first: int, last: int, links: list[str]) -> None:
    for n in range(PER_PAGE + 5):
        make_call(world["alice"], f"call-{n:03d}", created_at=timezone.now() - timedelta(minutes=100 - n))
    make_call(world["bob"], "bob-only-tool")
    section = activity(login(world["alice"]).get(INDEX + asked).content.decode())
    shown = [n for n in range(PER_PAGE + 5) if f"call-{n:03d}" in section]
    assert shown[-1] == first and shown[0] == last
    assert len(shown) == (PER_PAGE if first == PER_PAGE + 4 else 5)
    assert all(link in section for link in links)
    assert "bob-only-tool" not in section


def test_for_user_gives_only_the_users_own_records(world: dict[str, Any]) -> None:
    mine = make_call(world["alice"], "echo")
    make_call(world["bob"], "echo")
    assert list(CallRecord.objects.for_user(world["alice"])) == [mine]
    assert not CallRecord.objects.for_user(AnonymousUser()).exists()


@pytest.mark.parametrize(
    ("stored", "shown"), [pytest.param(True, True, id="stored"), pytest.param(False, False, id="signal-only")]
)
def test_the_activity_section_is_there_when_calls_are_stored(alice: Any, stored: bool, shown: bool) -> None:
    with override_settings(MCP_GATEWAY_CALL_RECORDS=stored):
        page = login(alice).get(INDEX).content.decode()
    assert ('id="activity"' in page) is shown and ('href="#activity"' in page) is shown
