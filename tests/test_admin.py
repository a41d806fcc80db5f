"""The sessions admin: read-only, filterable, searchable, and never showing the ID hash."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import McpSession, Transport


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
    }


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


CHANGELIST = reverse("admin:mcp_sessions_mcpsession_changelist")

FILTER_CASES = [
    ("all", "", {"carol-open", "dave-closed"}),
    ("state-open", "?state=open", {"carol-open"}),
    ("state-closed", "?state=closed", {"dave-closed"}),
    ("transport-sse", "?transport=sse", {"carol-open"}),
    ("transport-streamable-http", "?transport=streamable_http", {"dave-closed"}),
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


def test_sessions_cannot_be_added_edited_or_deleted(admin_client: Client, sessions: dict[str, McpSession]) -> None:
    session = sessions["carol-open"]
    assert admin_client.get(reverse("admin:mcp_sessions_mcpsession_add")).status_code == 403
    assert admin_client.post(reverse("admin:mcp_sessions_mcpsession_delete", args=[session.pk])).status_code == 403
    change = admin_client.post(reverse("admin:mcp_sessions_mcpsession_change", args=[session.pk]), {"client_name": "x"})
    assert change.status_code == 403
    session.refresh_from_db()
    assert session.client_name == "claude"
