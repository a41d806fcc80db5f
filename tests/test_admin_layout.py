"""The admin's lists fit a 1280 px wide window, however long the values the clients sent: a real browser measures.

Headless Chromium from Debian (the ``chromium`` fixture) opens each changelist of ``mcp_sessions`` on Django's live
server, logged in as a superuser, with rows holding the longest values each column can hold, unbroken (no space
to wrap at): a page wider than the window would scroll sideways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import (
    AccessToken,
    AuditEvent,
    AuditKind,
    CallOutcome,
    CallRecord,
    CloseReason,
    CredentialKind,
    McpSession,
    Transport,
)

from .conftest import off_loop

pytestmark = pytest.mark.django_db(transaction=True)

WIDTH, HEIGHT = 1280, 800
PASSWORD = "correct horse battery"


# Screenshots of each list, for the docs (git-ignored; the docs keep copies in docs/_static/admin/).
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "admin"


def long(prefix: str, length: int) -> str:
    """``length`` characters without a space: what a client may send as its name or User-Agent."""
    return (prefix + "-" + "x" * length)[:length]


def make_rows() -> None:
    users = get_user_model().objects
    users.create_superuser("root", "root@example.com", PASSWORD)
    owner = users.create_user("u" * 150, email=long("mail", 200) + "@example.com")
    token, _ = AccessToken.objects.issue(owner, long("token-name", 100))
    AccessToken.objects.issue(owner, long("other-token", 100), expires_at=timezone.now())
    for transport in Transport.values:
        McpSession.objects.create(
            user=owner,
            id_hash=hash_session_id(new_session_id()),
            server=long("/mcp", 100) + "/",
            transport=transport,
            channel_name="specific.x!y",
            client_name=long("client", 200),
            client_version=long("version", 100),
            protocol_version=long("protocol", 40),
            remote_addr="2001:db8:85a3:1234:5678:8a2e:370:7334",
            user_agent=long("Mozilla/5.0", 400),
            origin=long("https://origin.example", 400),
            token=token,
        )
    McpSession.objects.filter(transport=Transport.SSE).update(
        closed_at=timezone.now(), close_reason=max(CloseReason.values, key=lambda v: len(CloseReason(v).label))
    )
    for kind in AuditKind.values:
        AuditEvent.objects.create(
            kind=kind,
            user=owner,
            username="u" * 150,
            remote_addr="2001:db8:85a3:1234:5678:8a2e:370:7334",
            session_ref="abcdefabcdef",
            detail=long("/mcp/messages/?path", 200),
        )
    for outcome in CallOutcome.values:
        CallRecord.objects.create(
            user=owner,
            username="u" * 150,
            credential_kind=CredentialKind.TOKEN,
            credential_ref="abcdefabcdef",
            client_id=long("client", 200),
            session_ref="abcdefabcdef",
            server=long("/mcp", 199) + "/",  # the column's 200 (PostgreSQL refuses one more)
            transport=Transport.STREAMABLE_HTTP,
            protocol_version=long("protocol", 40),
            method="resources/read",
            name=long("notes://a-long-uri", 400),
            arguments_digest="f" * 64,
            outcome=outcome,
            error_code=-32602,
            duration_ms=12345.678,
            result_size=2_000_000_000,  # the widest the column holds (PostgreSQL integer)
        )


CHANGELISTS = [
    pytest.param("admin:mcp_sessions_mcpsession_changelist", id="sessions"),
    pytest.param("admin:mcp_sessions_accesstoken_changelist", id="tokens"),
    pytest.param("admin:mcp_sessions_auditevent_changelist", id="audit-events"),
    pytest.param("admin:mcp_sessions_callrecord_changelist", id="call-records"),
]


@pytest.fixture
def admin_page(live_server: Any, chromium: Any) -> Any:
    off_loop(make_rows)
    context = chromium.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.goto(f"{live_server.url}{reverse('admin:login')}?next={reverse('admin:index')}")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}{reverse('admin:index')}")
    yield page, live_server.url
    context.close()


# The elements that scroll sideways: the page itself, or a box of it (the admin puts the list in one that scrolls).
SIDEWAYS = """
() => [document.documentElement, ...document.querySelectorAll("body *")]
    .filter(e => e.scrollWidth > e.clientWidth + 1
                 && (e === document.documentElement || ["auto", "scroll"].includes(getComputedStyle(e).overflowX)))
    .map(e => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${e.className}: ${e.scrollWidth} > ${e.clientWidth}`)
"""


@pytest.mark.parametrize("name", CHANGELISTS)
def test_each_changelist_fits_a_1280_px_window(admin_page: Any, name: str) -> None:
    page, site = admin_page
    page.goto(site + reverse(name))
    assert page.locator("#result_list tbody tr").count() >= 2, "the rows with long values are listed"
    assert page.evaluate("getComputedStyle(document.body).display") == "block", "the admin's stylesheet loaded"
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    assert page.evaluate(SIDEWAYS) == [], f"{name} scrolls sideways in a {WIDTH} px window"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name.removeprefix('admin:mcp_sessions_')}.png")  # docs/_static/admin/ has some


def make_everyday_calls() -> None:
    """Records as a working site has them, for the docs' pictures of the call list and a call's page."""
    users = get_user_model().objects
    users.create_superuser("root", "root@example.com", PASSWORD)
    alice = users.create_user("alice")
    token, _ = AccessToken.objects.issue(alice, "laptop")
    calls = [
        ("tools/call", "whoami", CallOutcome.OK, None),
        ("tools/call", "add_note", CallOutcome.OK, None),
        ("resources/read", "notes://alice/notes", CallOutcome.OK, None),
        ("tools/call", "note_stats", CallOutcome.REFUSED, -32602),
        ("prompts/get", "summarise", CallOutcome.FAILED, -32603),
        ("tools/call", "delete_note", CallOutcome.TOOL_ERROR, None),
    ]
    for n, (method, name, outcome, error_code) in enumerate(calls):
        CallRecord.objects.create(
            user=alice,
            username="alice",
            token=token,
            credential_kind=CredentialKind.TOKEN,
            credential_ref="3f9a1c0b7d2e",
            session_ref="" if n % 2 else "k2Vd8xQ0aZ1m",
            server="/mcp/",
            transport=Transport.STREAMABLE_HTTP,
            protocol_version="2026-07-28" if n % 2 else "2025-11-25",
            method=method,
            name=name,
            arguments_digest=f"{n:x}" * 64,
            outcome=outcome,
            error_code=error_code,
            duration_ms=1.2 + n,
            result_size=120 * (n + 1),
        )


def test_the_docs_pictures_of_the_call_records(live_server: Any, chromium: Any) -> None:
    """What docs/_static/admin/ shows: the call list and a call's page, at 1280 px (copied from tests/artifacts)."""
    off_loop(make_everyday_calls)
    context = chromium.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}{reverse('admin:login')}?next={reverse('admin:index')}")
        page.fill("#id_username", "root")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}{reverse('admin:index')}")
        page.goto(live_server.url + reverse("admin:mcp_sessions_callrecord_changelist"))
        assert page.locator("#result_list tbody tr").count() == 6
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / "calls.png")
        page.locator("#result_list tbody tr th a").first.click()
        page.wait_for_selector("#content h1")
        assert "whoami" in page.content() or "delete_note" in page.content()
        page.screenshot(path=ARTIFACTS / "call.png", full_page=True)
    finally:
        context.close()
