"""The admin: sessions read-only, filterable, searchable, never showing the ID hash; who creates tokens for whom."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mcp_sessions.ids import hash_session_id, hash_token, new_session_id
from mcp_sessions.models import AccessToken, ClientUsage, CredentialKind, McpSession, Transport, UsageRow
from mcp_sessions.subscriptions import stored_filter


@pytest.fixture
def sessions(make_user: Any) -> dict[str, McpSession]:
    carol = make_user("carol", email="carol@corp.example")
    dave = make_user("dave")
    common = {"server": "/mcp/", "channel_name": "specific.x!y"}
    return {
        "carol-open": McpSession.objects.create(
            user=carol,
            id_hash=hash_session_id(new_session_id()),
            transport=Transport.SSE,
            client_name="claude",
            client_version="1.2",
            **common,
        ),
        "dave-closed": McpSession.objects.create(
            user=dave,
            id_hash=hash_session_id(new_session_id()),
            transport=Transport.STREAMABLE_HTTP,
            closed_at=timezone.now(),
            close_reason="client_disconnect",
            **common,
        ),
        "erin-listen": McpSession.objects.create(
            user=make_user("erin"),
            id_hash=hash_session_id(new_session_id()),
            transport=Transport.LISTEN,
            client_name="watcher",
            listen_filter=stored_filter(tools=True, prompts=False, resources=False, uris=["notes://42"]),
            **common,
        ),
    }


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


CHANGELIST = reverse("admin:mcp_sessions_mcpsession_changelist")

FILTER_CASES = [
    ("all", "", {"carol-open", "dave-closed", "erin-listen"}),
    ("state-open", "?state=open", {"carol-open", "erin-listen"}),
    ("state-closed", "?state=closed", {"dave-closed"}),
    ("transport-sse", "?transport=sse", {"carol-open"}),
    ("transport-streamable-http", "?transport=streamable_http", {"dave-closed"}),
    ("transport-listen", "?transport=listen", {"erin-listen"}),
    ("reason-terminated", "?close_reason=terminated", set()),
    ("search-username", "?q=dave", {"dave-closed"}),
    ("search-email", "?q=corp.example", {"carol-open"}),
]


@pytest.mark.parametrize(("query", "expected"), [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_changelist_filters_and_search(
    admin_client: Client, sessions: dict[str, McpSession], query: str, expected: set[str]
) -> None:
    response = admin_client.get(CHANGELIST + query)
    assert response.status_code == 200
    shown = {name for name, s in sessions.items() if s.ref in response.content.decode()}
    assert shown == expected


def test_hash_is_never_shown(admin_client: Client, sessions: dict[str, McpSession]) -> None:
    for session in sessions.values():
        for url in (CHANGELIST, reverse("admin:mcp_sessions_mcpsession_change", args=[session.pk])):
            page = admin_client.get(url).content.decode()
            assert session.id_hash not in page
            assert session.channel_name not in page


def test_list_shows_user_client_state_and_times(admin_client: Client, sessions: dict[str, McpSession]) -> None:
    page = admin_client.get(CHANGELIST).content.decode()
    for text in ("carol", "claude 1.2", "open", "closed", "Last seen", "Created"):
        assert text in page


def test_listen_streams_are_listed_beside_sessions_with_what_they_subscribed_to(
    admin_client: Client, sessions: dict[str, McpSession]
) -> None:
    listing = admin_client.get(CHANGELIST).content.decode()
    assert "Listen stream (2026-07-28)" in listing
    assert "?transport__exact=listen" in listing, "the transport filter offers listen streams"
    stream = sessions["erin-listen"]
    page = admin_client.get(reverse("admin:mcp_sessions_mcpsession_change", args=[stream.pk])).content.decode()
    assert "tools; 1 resource: notes://42" in html.unescape(page)
    assert "Last event" in page


def test_the_revoke_action_closes_listen_streams_too(admin_client: Client, sessions: dict[str, McpSession]) -> None:
    stream = sessions["erin-listen"]
    admin_client.post(CHANGELIST, {"action": "revoke_sessions", "_selected_action": [stream.pk], "post": "yes"})
    stream.refresh_from_db()
    assert stream.close_reason == "revoked" and stream.closed_at is not None


def test_sessions_cannot_be_added_edited_or_deleted(admin_client: Client, sessions: dict[str, McpSession]) -> None:
    session = sessions["carol-open"]
    assert admin_client.get(reverse("admin:mcp_sessions_mcpsession_add")).status_code == 403
    assert admin_client.post(reverse("admin:mcp_sessions_mcpsession_delete", args=[session.pk])).status_code == 403
    change = admin_client.post(reverse("admin:mcp_sessions_mcpsession_change", args=[session.pk]), {"client_name": "x"})
    assert change.status_code == 403
    session.refresh_from_db()
    assert session.client_name == "claude"


# Creating access tokens: for oneself, or for someone who cannot do more than the creator

TOKEN_ADD = reverse("admin:mcp_sessions_accesstoken_add")


@pytest.fixture
def creators(make_user: Any) -> dict[str, Any]:
    """Three admin users: a staff user who may only add tokens, one who may also add them for others, a superuser."""
    add = Permission.objects.get(codename="add_accesstoken")
    for_others = Permission.objects.get(codename="issue_token_for_others")
    adder = make_user("adder", is_staff=True)
    adder.user_permissions.add(add)
    issuer = make_user("issuer", is_staff=True)
    issuer.user_permissions.add(add, for_others)
    return {"adder": adder, "issuer": issuer, "root": make_user("root", is_staff=True, is_superuser=True)}


def grant_change_user(user: Any) -> None:
    user.user_permissions.add(Permission.objects.get(codename="change_user"))


def deactivate(user: Any) -> None:
    user.is_active = False
    user.save()


# (id, creator, user named in the form, change to that user first, owner of the token or the form's error)
TOKEN_CASES: list[tuple[str, str, str, Callable[[Any], None] | None, str]] = [
    ("adder-for-self", "adder", "adder", None, "owner:adder"),
    ("adder-naming-issuer-gets-its-own", "adder", "issuer", None, "owner:adder"),
    ("adder-naming-root-gets-its-own", "adder", "root", None, "owner:adder"),
    ("issuer-for-self", "issuer", "issuer", None, "owner:issuer"),
    ("issuer-for-adder", "issuer", "adder", None, "owner:adder"),
    ("issuer-for-root-refused", "issuer", "root", None, "error:Only a superuser may create a token for root"),
    (
        "issuer-for-adder-with-a-permission-issuer-lacks-refused",
        "issuer",
        "adder",
        grant_change_user,
        "error:adder has permissions you lack (auth.change_user)",
    ),
    ("issuer-for-inactive-user-refused", "issuer", "adder", deactivate, "error:adder is inactive"),
    ("root-for-adder", "root", "adder", None, "owner:adder"),
    ("root-for-issuer", "root", "issuer", None, "owner:issuer"),
    ("root-for-self", "root", "root", None, "owner:root"),
]


@pytest.mark.parametrize(
    ("creator", "target", "change", "expected"), [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES]
)
def test_who_may_create_a_token_for_whom(
    creators: dict[str, Any], creator: str, target: str, change: Callable[[Any], None] | None, expected: str
) -> None:
    if change is not None:
        change(creators[target])
    client = Client()
    client.force_login(creators[creator])
    form = {"user": creators[target].pk, "name": "agent", "expires_at_0": "", "expires_at_1": ""}
    response = client.post(TOKEN_ADD, form)
    assert response.status_code == 200
    page = response.content.decode()
    outcome, _, detail = expected.partition(":")
    if outcome == "error":
        assert detail in html.unescape(page)
        assert not AccessToken.objects.exists()
        return
    # The token-created page shows the secret, once; it authenticates as the expected owner.
    secret = re.search(r'id="mcp-token-secret"[^>]*>(mcp_[A-Za-z0-9_-]{43})<', page).group(1)
    token = AccessToken.objects.authenticate(secret)
    assert token is not None and token.user.get_username() == detail and token.name == "agent"
    assert AccessToken.objects.get().token_hash == hash_token(secret)


@pytest.mark.parametrize(
    ("creator", "user_field"), [("adder", False), ("issuer", True), ("root", True)], ids=["adder", "issuer", "root"]
)
def test_the_add_form_offers_a_user_only_with_the_permission_to_create_for_others(
    creators: dict[str, Any], creator: str, user_field: bool
) -> None:
    client = Client()
    client.force_login(creators[creator])
    page = client.get(TOKEN_ADD).content.decode()
    assert ('name="user"' in page) is user_field
    assert ("The token will be yours" in page) is not user_field


def test_an_expiry_set_in_the_admin_is_kept(creators: dict[str, Any]) -> None:
    client = Client()
    client.force_login(creators["adder"])
    response = client.post(TOKEN_ADD, {"name": "short", "expires_at_0": "2999-01-02", "expires_at_1": "03:04:05"})
    assert response.status_code == 200
    token = AccessToken.objects.get()
    assert token.user == creators["adder"]
    assert timezone.localtime(token.expires_at).strftime("%Y-%m-%d %H:%M:%S") == "2999-01-02 03:04:05"


# Client usage: read-only, filterable, no secrets, short columns

USAGE = reverse("admin:mcp_sessions_clientusage_changelist")


@pytest.fixture
def usage(make_user: Any) -> dict[str, Any]:
    """Rows as the workers save them: a login, a token, a deleted user's, and a client with a hostile name."""
    carol = make_user("carol", email="carol@corp.example")
    dave = make_user("dave")
    token, secret = AccessToken.objects.issue(dave, "ci")
    erin = make_user("erin")
    now = timezone.now()

    def usage_row(user: Any, kind: str, ref: str, name: str, version: str, **extra: Any) -> UsageRow:
        return UsageRow(
            user_id=user.pk,
            username=user.username,
            credential_kind=kind,
            credential_ref=ref,
            token_id=extra.pop("token_id", None),
            client_name=name,
            client_version=version,
            protocol_version=extra.pop("protocol", "2026-07-28"),
            first_seen=now,
            last_seen=now,
            requests=extra.pop("requests", 1),
        )

    login_hash = hash_token("carol's session key")
    ClientUsage.objects.record_batch(
        [
            usage_row(carol, CredentialKind.LOGIN, login_hash[:12], "claude-code", "2.1", requests=40),
            usage_row(dave, CredentialKind.TOKEN, token.token_hash[:12], "cursor", "0.9", token_id=token.pk),
            usage_row(erin, CredentialKind.LOGIN, "e" * 12, "inspector", "1", protocol="2025-11-25"),
            usage_row(carol, CredentialKind.LOGIN, login_hash[:12], "<script>alert(1)</script>\u202e" + "x" * 300, "9"),
        ]
    )
    erin.delete()
    return {"token": token, "secret": secret, "login_hash": login_hash, "carol": carol}


def shown(response: Any) -> set[str]:
    assert response.status_code == 200
    return {row.username + ":" + row.client_name[:11] for row in response.context["cl"].result_list}


ALL_USAGE = {"carol:claude-code", "dave:cursor", "erin:inspector", "carol:<script>ale"}
USAGE_FILTERS = [
    pytest.param("", ALL_USAGE, id="all"),
    pytest.param("?credential_kind=token", {"dave:cursor"}, id="kind-token"),
    pytest.param("?credential_kind=login", ALL_USAGE - {"dave:cursor"}, id="kind-login"),
    pytest.param("?client_name=claude-code", {"carol:claude-code"}, id="client"),
    pytest.param("?protocol_version=2025-11-25", {"erin:inspector"}, id="protocol"),
    pytest.param("?q=dave", {"dave:cursor"}, id="search-username"),
    pytest.param("?q=erin", {"erin:inspector"}, id="search-a-deleted-users-name"),
    pytest.param("?q=corp.example", {"carol:claude-code", "carol:<script>ale"}, id="search-email"),
    pytest.param("?q=inspect", {"erin:inspector"}, id="search-client"),
    pytest.param(f"?last_seen__year={timezone.now().year}", ALL_USAGE, id="date-hierarchy"),
    pytest.param("?last_seen__year=2001", set(), id="date-hierarchy-empty"),
]


@pytest.mark.parametrize(("query", "expected"), USAGE_FILTERS)
def test_usage_changelist_filters_and_search(
    admin_client: Client, usage: dict[str, Any], query: str, expected: set[str]
) -> None:
    assert shown(admin_client.get(USAGE + query)) == expected


def test_usage_filter_by_user(admin_client: Client, usage: dict[str, Any]) -> None:
    carol = usage["carol"]
    assert shown(admin_client.get(f"{USAGE}?user__id__exact={carol.pk}")) == {"carol:claude-code", "carol:<script>ale"}


def test_usage_list_is_short_escaped_and_shows_no_secret(admin_client: Client, usage: dict[str, Any]) -> None:
    page = admin_client.get(USAGE).content.decode()
    for text in ("carol", "erin (deleted)", "claude-code 2.1", "Access token", "Last seen", "40"):
        assert text in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    text = re.sub(r"<[^>]*>", "", page)  # what is shown, not the filter's links that carry the whole name
    assert "x" * 21 not in text  # cut in the column, the filter and the row's label
    for secret in (usage["secret"], usage["token"].token_hash, usage["login_hash"]):
        assert secret not in page


def test_usage_rows_are_read_only_and_only_superusers_delete(
    admin_client: Client, usage: dict[str, Any], make_user: Any
) -> None:
    target = ClientUsage.objects.get(client_name="cursor")
    change = reverse("admin:mcp_sessions_clientusage_change", args=[target.pk])
    delete = reverse("admin:mcp_sessions_clientusage_delete", args=[target.pk])
    assert admin_client.get(reverse("admin:mcp_sessions_clientusage_add")).status_code == 403
    detail = admin_client.get(change)
    assert detail.status_code == 200 and "ci (" in detail.content.decode()  # the token, by name and prefix
    assert usage["secret"] not in detail.content.decode()
    assert admin_client.post(change, {"requests": "0"}).status_code == 403
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_clientusage"))
    staff = Client()
    staff.force_login(viewer)
    assert staff.get(USAGE).status_code == 200
    assert staff.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302
    assert not ClientUsage.objects.filter(pk=target.pk).exists()
    target_after = ClientUsage.objects.get(client_name="claude-code")
    assert target_after.requests == 40
