"""Management commands."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import ClientUsage, CredentialKind, McpSession, Transport, UsageRow

pytestmark = pytest.mark.django_db


def session(user: Any, closed_days_ago: float | None) -> McpSession:
    closed_at = None if closed_days_ago is None else timezone.now() - timedelta(days=closed_days_ago)
    return McpSession.objects.create(
        user=user,
        id_hash=hash_session_id(new_session_id()),
        server="/mcp/",
        transport=Transport.SSE,
        channel_name="c",
        created_at=timezone.now() - timedelta(days=400),
        closed_at=closed_at,
    )


def test_clear_mcp_sessions_deletes_only_old_closed_records(make_user: Any) -> None:
    user = make_user("alice")
    old, recent, still_open = session(user, 31), session(user, 29), session(user, None)
    out = StringIO()
    call_command("clear_mcp_sessions", stdout=out)
    assert set(McpSession.objects.values_list("pk", flat=True)) == {recent.pk, still_open.pk}
    assert "Deleted 1 " in out.getvalue()
    assert not McpSession.objects.filter(pk=old.pk).exists()


def test_retention_comes_from_the_setting_or_the_option(make_user: Any) -> None:
    user = make_user("alice")
    session(user, 3)
    with override_settings(MCP_GATEWAY_SESSION_RETENTION_DAYS=5):
        call_command("clear_mcp_sessions", stdout=StringIO())
    assert McpSession.objects.count() == 1
    call_command("clear_mcp_sessions", "--days", "2", stdout=StringIO())
    assert McpSession.objects.count() == 0


def test_clear_mcp_sessions_deletes_client_usage_last_seen_before_its_retention(make_user: Any) -> None:
    user = make_user("alice")
    now = timezone.now()
    rows = [
        UsageRow(
            user_id=user.pk,
            username="alice",
            credential_kind=CredentialKind.LOGIN,
            credential_ref="abc",
            token_id=None,
            client_name=name,
            client_version="1",
            protocol_version="2026-07-28",
            first_seen=now - timedelta(days=400),
            last_seen=now - timedelta(days=days),
            requests=1,
        )
        for name, days in (("old", 91), ("recent", 89))
    ]
    ClientUsage.objects.record_batch(rows)
    out = StringIO()
    call_command("clear_mcp_sessions", stdout=out)
    assert list(ClientUsage.objects.values_list("client_name", flat=True)) == ["recent"]
    assert "Deleted 1 client usage row(s) last seen more than 90 days ago." in out.getvalue()
    with override_settings(MCP_GATEWAY_USAGE_RETENTION_DAYS=10):
        call_command("clear_mcp_sessions", stdout=StringIO())
    assert not ClientUsage.objects.exists()


def test_demo_headers_authenticate_as_that_user(make_user: Any) -> None:
    import json

    from django.contrib.sessions.models import Session

    user = make_user("alice")
    out = StringIO()
    call_command("demo_headers", "alice", "--json", stdout=out)
    headers = json.loads(out.getvalue())
    session_key = headers["Cookie"].split(";")[0].split("=", 1)[1]
    assert Session.objects.get(pk=session_key).get_decoded()["_auth_user_id"] == str(user.pk)
    csrf_cookie = headers["Cookie"].split("csrftoken=")[1]
    assert csrf_cookie == headers["X-CSRFToken"] and len(csrf_cookie) == 32


@pytest.mark.parametrize(
    ("url", "site"),
    [("http://127.0.0.1:8000", "http://127.0.0.1:8000"), ("http://localhost:8123/", "http://localhost:8123")],
    ids=["default", "other-port"],
)
def test_demo_setup_prints_the_login_and_both_mcp_endpoints(url: str, site: str) -> None:
    out = StringIO()
    call_command("demo_setup", "--url", url, stdout=out)
    printed = out.getvalue()
    assert f"Demo site: {site}/" in printed
    assert f"MCP (Streamable HTTP): {site}/mcp/\n" in printed
    assert f"MCP (HTTP+SSE):        {site}/mcp/sse\n" in printed
    assert "Log in as:  demo / " in printed
