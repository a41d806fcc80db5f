"""The audit trail: a row per refusal kind and per session event, capped, secret-free, read-only in admin."""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from mcp_sessions.ids import hash_session_id
from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, McpSession
from mcp_sessions.revocation import revoke

from .asgi import application
from .asgi_helpers import Recorder, http_scope
from .clients import BOUND, RawStream, closed_session, handshake, jsonrpc, raw_stream
from .conftest import login_headers

pytestmark = pytest.mark.django_db(transaction=True)

SETTINGS = {
    "MCP_GATEWAY_RATE_LIMIT": [4, 60],
    "MCP_GATEWAY_MAX_SESSIONS_PER_USER": 1,
    "MCP_GATEWAY_MAX_BODY_SIZE": 1000,
}


async def events(kind: str, within: float = BOUND) -> list[AuditEvent]:
    """The rows of ``kind``, waiting for the batch writer to store at least one."""
    with anyio.fail_after(within):
        while not (rows := [e async for e in AuditEvent.objects.filter(kind=kind).select_related("user")]):
            await anyio.sleep(0.05)
    return rows


@pytest.fixture
async def ctx(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str], bob_headers: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    server = start_daphne(overrides=SETTINGS)
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)
        yield {"server": server, "http": http, "stream": stream, "alice": alice_headers, "bob": bob_headers}


Action = Callable[[dict[str, Any]], Awaitable[Any]]


async def post(ctx: dict[str, Any], headers: dict[str, str], **kwargs: Any) -> httpx2.Response:
    stream: RawStream = ctx["stream"]
    return await ctx["http"].post(
        ctx["server"].url + stream.endpoint, headers=headers, **({"json": jsonrpc("ping")} | kwargs)
    )


async def flood(ctx: dict[str, Any]) -> None:
    # The handshake used two of the four POSTs allowed: the fifth is refused.
    for n in range(3):
        await post(ctx, ctx["alice"], json=jsonrpc("ping", id=n))


async def second_stream(ctx: dict[str, Any]) -> None:
    response = await ctx["http"].get(f"{ctx['server'].url}/mcp/sse", headers=ctx["alice"])
    assert response.status_code == 429


async def bad_token(ctx: dict[str, Any]) -> None:
    await post(ctx, {"Authorization": "Bearer mcp_" + "x" * 43})


CASES: list[tuple[str, Action, str, str | None]] = [
    ("foreign-session", lambda c: post(c, c["bob"]), AuditKind.FOREIGN_SESSION, "bob"),
    (
        "foreign-origin",
        lambda c: post(c, {**c["alice"], "Origin": "http://evil.example"}),
        AuditKind.ORIGIN_REFUSED,
        None,
    ),
    ("foreign-host", lambda c: post(c, {**c["alice"], "Host": "evil.example"}), AuditKind.HOST_REFUSED, None),
    ("bad-token", bad_token, AuditKind.INVALID_TOKEN, None),
    ("csrf-failure", lambda c: post(c, {"Cookie": c["alice"]["Cookie"].split(";")[0]}), AuditKind.CSRF_FAILED, "alice"),
    ("rate-limit", flood, AuditKind.RATE_LIMITED, "alice"),
    ("session-limit", second_stream, AuditKind.SESSION_LIMIT, "alice"),
    ("oversize-body", lambda c: post(c, c["alice"], json={"x": "y" * 2000}), AuditKind.PAYLOAD_TOO_LARGE, None),
]


@pytest.mark.parametrize(("action", "kind", "user"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_refusal_is_recorded(ctx: dict[str, Any], action: Action, kind: str, user: str | None) -> None:
    await action(ctx)
    [event] = await events(kind)
    assert (event.user.username if event.user else None) == user
    assert event.remote_addr == "127.0.0.1"
    if kind == AuditKind.FOREIGN_SESSION:
        record = await McpSession.objects.aget()
        assert event.session_ref == record.ref
    values = " ".join(str(v) for v in (event.detail, event.session_ref, event.remote_addr))
    for secret in (ctx["stream"].session_id, ctx["alice"]["X-CSRFToken"], ctx["alice"]["Cookie"].split("=")[1][:20]):
        assert secret not in values


async def test_session_open_close_and_revoke_are_recorded(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne()
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers):
        record = await McpSession.objects.aget()
        [opened] = await events(AuditKind.SESSION_OPENED)
        assert (opened.user_id, opened.session_ref, opened.detail) == (alice.pk, record.ref, "session sse /mcp/")
    await closed_session(user=alice)
    [closed] = await events(AuditKind.SESSION_CLOSED)
    assert (closed.session_ref, closed.detail) == (record.ref, "client_disconnect")

    other = await McpSession.objects.acreate(
        user=alice, id_hash="f" * 64, server="/mcp/", transport="sse", channel_name="gone"
    )
    await sync_to_async(revoke)(McpSession.objects.filter(pk=other.pk))
    [revoked] = await events(AuditKind.SESSION_REVOKED)
    assert (revoked.user_id, revoked.session_ref, revoked.detail) == (alice.pk, "ffffffffffff", "revoked")


async def test_rows_are_capped_per_kind_and_address_but_everything_is_logged(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_AUDIT_ROWS_PER_MINUTE": 5})
    for _ in range(40):
        response = await http.get(f"{server.url}/mcp/sse", headers={**alice_headers, "Origin": "http://evil.example"})
        assert response.status_code == 403
    # One event of another kind last: the trail stores its queue in order, so once that row is there, every
    # refusal queued before it that was going to be stored is too.
    assert (await http.get(f"{server.url}/mcp/sse?ticket=none")).status_code == 401
    await events(AuditKind.INVALID_TICKET)
    assert await AuditEvent.objects.filter(kind=AuditKind.ORIGIN_REFUSED).acount() == 5
    # Each refusal logs on its exception class's own logger, as Django's security events do.
    assert server.log().count("WARNING mcp_gateway.security.OriginNotAllowed: origin_refused") == 40


@override_settings(MCP_GATEWAY_AUDIT_ROWS_PER_MINUTE=2)
def test_session_events_are_never_capped(alice: Any) -> None:
    """An admin revoking many sessions at once keeps a row for each; a flood of refusals does not."""
    from mcp_sessions import audit

    for n in range(5):
        audit.record(AuditKind.SESSION_REVOKED, user=alice, session_ref=f"ref{n}", detail="admin")
        # An address of this test's own: the trail's per-minute counts outlive a test.
        audit.record(AuditKind.CSRF_FAILED, user=alice, remote_addr="198.51.100.71", detail="/mcp/")
    assert AuditEvent.objects.filter(kind=AuditKind.SESSION_REVOKED).count() == 5
    assert AuditEvent.objects.filter(kind=AuditKind.CSRF_FAILED).count() == 2


def test_admin_lists_and_filters_but_cannot_change(make_user: Any, alice: Any, bob: Any) -> None:
    AuditEvent.objects.create(kind=AuditKind.CSRF_FAILED, user=alice, remote_addr="127.0.0.1")
    AuditEvent.objects.create(kind=AuditKind.FOREIGN_SESSION, user=bob, session_ref="abc123abc123")
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    url = reverse("admin:mcp_sessions_auditevent_changelist")
    assert "abc123abc123" not in client.get(url + "?kind=csrf_failed").content.decode()
    assert "abc123abc123" in client.get(url + f"?user__id__exact={bob.pk}").content.decode()
    assert "abc123abc123" in client.get(url + "?q=bob").content.decode()
    event = AuditEvent.objects.get(kind=AuditKind.CSRF_FAILED)
    assert client.post(reverse("admin:mcp_sessions_auditevent_change", args=[event.pk]), {}).status_code == 403
    assert client.post(reverse("admin:mcp_sessions_auditevent_delete", args=[event.pk])).status_code == 403
    assert client.get(reverse("admin:mcp_sessions_auditevent_add")).status_code == 403


def test_clear_mcp_sessions_drops_old_audit_events(alice: Any) -> None:
    from io import StringIO

    from django.core.management import call_command

    old = AuditEvent.objects.create(kind=AuditKind.CSRF_FAILED, user=alice)
    AuditEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(days=91))
    AuditEvent.objects.create(kind=AuditKind.CSRF_FAILED, user=alice)
    call_command("clear_mcp_sessions", stdout=StringIO())
    assert AuditEvent.objects.count() == 1
    assert not AccessToken.objects.exists()


# Client-supplied text in the security log and the rows: escaped, never a line of its own (the issue's item 4)

FORGED = "\r\nWARNING mcp_gateway.security: session_opened user=1 addr=6.6.6.6\n\r"
# A path that still reaches each consumer: the root path (set by the server in front) carries the forged line.
ROOT = "/site" + FORGED
UNKNOWN_ID = "U" * 43


def forged_request(
    method: str,
    route: str,
    *,
    query: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    origin: str = "http://evil.example" + FORGED,
    body: bytes = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
) -> tuple[dict[str, Any], Recorder]:
    """A scope for ``route`` under the forged root path, with CR/LF in its User-Agent and Origin too."""
    extra = [("User-Agent", "agent" + FORGED), ("Origin", origin), *headers]
    if method == "POST":
        extra.append(("Content-Type", "application/json"))
    scope = http_scope(method, ROOT + route, headers=extra, query=query)
    scope["root_path"] = ROOT
    return scope, Recorder([body])


async def token_for(user: Any) -> str:
    _, secret = await sync_to_async(AccessToken.objects.issue)(user, "forged-lines")
    return secret


async def refuse_foreign_session(alice: Any, bob: Any) -> list[tuple[dict[str, Any], Recorder]]:
    await McpSession.objects.acreate(
        user=bob, id_hash=hash_session_id(UNKNOWN_ID), server="/mcp/", transport="sse", channel_name="elsewhere"
    )
    auth = (("Authorization", f"Bearer {await token_for(alice)}"),)
    return [forged_request("POST", "/mcp/messages/", query=f"session_id={UNKNOWN_ID}", headers=auth)]


async def refuse_rate(alice: Any, bob: Any) -> list[tuple[dict[str, Any], Recorder]]:
    auth = (("Authorization", f"Bearer {await token_for(alice)}"),)
    post = functools.partial(forged_request, "POST", "/mcp/messages/", query=f"session_id={UNKNOWN_ID}", headers=auth)
    return [post(), post()]  # the limit is one POST a minute


async def refuse_session_limit(alice: Any, bob: Any) -> list[tuple[dict[str, Any], Recorder]]:
    await McpSession.objects.acreate(user=alice, id_hash="e" * 64, server="/mcp/", transport="sse", channel_name="x")
    auth = (("Authorization", f"Bearer {await token_for(alice)}"),)
    return [forged_request("GET", "/mcp/sse", headers=auth)]


async def refuse_csrf(alice: Any, bob: Any) -> list[tuple[dict[str, Any], Recorder]]:
    cookie = (await sync_to_async(login_headers)(alice, csrf=False))["Cookie"]
    return [forged_request("POST", "/mcp/messages/", query=f"session_id={UNKNOWN_ID}", headers=(("Cookie", cookie),))]


def simple(*args: Any, **kwargs: Any) -> Callable[[Any, Any], Awaitable[list[tuple[dict[str, Any], Recorder]]]]:
    async def requests(alice: Any, bob: Any) -> list[tuple[dict[str, Any], Recorder]]:
        return [forged_request(*args, **kwargs)]

    return requests


async def refuse_scope(alice: Any, bob: Any) -> list[tuple[dict[str, Any], Recorder]]:
    """A 2026-07-28 call of a tool beyond a step-up credential's scope (the tests' stand-in for an OAuth grant)."""
    from .test_modern import WHOAMI, WHOAMI_HEADERS

    headers = (("Authorization", f"Grant {alice.pk} mcp:tools:echo"), *WHOAMI_HEADERS.items())
    return [forged_request("POST", "/mcp-test/", headers=headers, body=json.dumps(WHOAMI).encode())]


REFUSED_ORIGIN = {"MCP_GATEWAY_ALLOWED_ORIGINS": ()}
# Every kind of refusal the audit trail records (the exceptions with an ``audit_kind``), each with CR/LF in its
# path, User-Agent and Origin; any Origin passes the Origin guard except in the case that tests it.
FORGED_CASES: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = [
    ("origin-refused", AuditKind.ORIGIN_REFUSED, simple("GET", "/mcp/sse"), REFUSED_ORIGIN),
    (
        "host-refused",
        AuditKind.HOST_REFUSED,
        simple("GET", "/mcp/sse", headers=(("Host", "evil.example"),)),
        {},
    ),
    (
        "payload-too-large",
        AuditKind.PAYLOAD_TOO_LARGE,
        simple("POST", "/mcp/messages/", headers=(("Content-Length", "5000"),), body=b"x" * 5000),
        {},
    ),
    (
        "invalid-token",
        AuditKind.INVALID_TOKEN,
        simple(
            "POST",
            "/mcp/messages/",
            query=f"session_id={UNKNOWN_ID}",
            headers=(("Authorization", "Bearer mcp_" + "x" * 43),),
        ),
        {},
    ),
    ("invalid-ticket", AuditKind.INVALID_TICKET, simple("GET", "/mcp/sse", query="ticket=bogus"), {}),
    ("csrf-failed", AuditKind.CSRF_FAILED, refuse_csrf, {}),
    ("rate-limited", AuditKind.RATE_LIMITED, refuse_rate, {}),
    ("session-limit", AuditKind.SESSION_LIMIT, refuse_session_limit, {}),
    ("foreign-session", AuditKind.FOREIGN_SESSION, refuse_foreign_session, {}),
    (
        "insufficient-scope",
        AuditKind.INSUFFICIENT_SCOPE,
        refuse_scope,
        {"MCP_GATEWAY_AUTHENTICATORS": ["tests.permission_servers.ScopedGrantAuthenticator"]},
    ),
]


def test_every_audited_refusal_kind_has_a_forged_line_case() -> None:
    from mcp_gateway import exceptions

    audited = {
        cls.audit_kind
        for cls in vars(exceptions).values()
        if isinstance(cls, type) and issubclass(cls, exceptions.GatewayError) and cls.audit_kind
    }
    assert audited | {AuditKind.FOREIGN_SESSION} == {kind for _, kind, _, _ in FORGED_CASES}


@pytest.mark.parametrize(
    ("kind", "requests", "overrides"), [c[1:] for c in FORGED_CASES], ids=[c[0] for c in FORGED_CASES]
)
async def test_client_supplied_cr_lf_never_starts_a_log_line_or_reaches_a_row(
    alice: Any,
    bob: Any,
    kind: str,
    requests: Callable[..., Awaitable[list[tuple[dict[str, Any], Recorder]]]],
    overrides: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {
        "MCP_GATEWAY_ALLOWED_ORIGINS": ("*",),
        "MCP_GATEWAY_RATE_LIMIT": (1, 60),
        "MCP_GATEWAY_MAX_SESSIONS_PER_USER": 1,
        "MCP_GATEWAY_MAX_BODY_SIZE": 1000,
        **overrides,
    }
    caplog.set_level(logging.INFO)
    with override_settings(**settings):
        for scope, recorder in await requests(alice, bob):
            await application(scope, recorder.receive, recorder.send)
            assert recorder.status is not None and recorder.status >= 400, recorder.sent
        # This request's row is among them (an earlier test's, queued before, may be written meanwhile).
        rows = await events(kind)
    if kind != AuditKind.FOREIGN_SESSION:  # whose detail names the session's owner instead
        assert any("6.6.6.6" in event.detail for event in rows), "the escaped path was expected in the detail"
    records = [r for r in caplog.records if r.name.startswith("mcp_gateway.security.")]
    assert any(r.audit_kind == kind for r in records)
    raw = [r.getMessage() for r in caplog.records if set(r.getMessage()) & {"\r", "\n"}]
    assert not raw, f"log messages with a raw CR or LF: {raw}"
    stored = [row async for row in AuditEvent.objects.values_list("detail", "username", "session_ref")]
    assert not [row for row in stored if set("".join(row)) & {"\r", "\n"}], stored


async def test_a_forged_line_in_the_path_stays_on_the_refusals_line(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    # The issue's reproduction, unauthenticated, through the launcher: the refusal logs the decoded path.
    url = f"{daphne.url}/mcp/%0d%0asession_opened%20user=1%20addr=6.6.6.6%0d%0a/sse"
    response = await http.get(url, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    await events(AuditKind.ORIGIN_REFUSED)
    lines = [line for line in daphne.log().splitlines() if "6.6.6.6" in line]
    assert lines, "the refusal was expected in the log"
    assert all("origin_refused" in line or line.startswith("127.0.0.1:") for line in lines), lines


# Audit rows and deleted users (the issue's item 6)


async def test_rows_keep_the_username_of_their_user(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne()
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers):
        [opened] = await events(AuditKind.SESSION_OPENED)
    [closed] = await events(AuditKind.SESSION_CLOSED)
    await sync_to_async(revoke)(
        McpSession.objects.filter(
            pk=(
                await McpSession.objects.acreate(
                    user=alice, id_hash="d" * 64, server="/mcp/", transport="sse", channel_name="x"
                )
            ).pk
        )
    )
    [revoked] = await events(AuditKind.SESSION_REVOKED)
    assert [e.username for e in (opened, closed, revoked)] == ["alice"] * 3
    await alice.adelete()
    assert {e.username async for e in AuditEvent.objects.all()} == {"alice"}
    assert not await AuditEvent.objects.filter(user__isnull=False).aexists()


def test_events_of_a_user_deleted_meanwhile_are_kept_without_the_user(alice: Any, bob: Any) -> None:
    from mcp_sessions.audit import _write

    events = [
        AuditEvent(kind=AuditKind.SESSION_CLOSED, user_id=alice.pk, username="alice", session_ref="a" * 12),
        AuditEvent(kind=AuditKind.CSRF_FAILED, user_id=bob.pk),
    ]
    alice.delete()
    _write(events)
    stored = {e.kind: (e.user_id, e.username) for e in AuditEvent.objects.all()}
    assert stored == {AuditKind.SESSION_CLOSED: (None, "alice"), AuditKind.CSRF_FAILED: (bob.pk, "bob")}


def test_admin_shows_the_username_after_the_user_is_gone(make_user: Any, alice: Any) -> None:
    from mcp_sessions import audit

    audit.record(AuditKind.CSRF_FAILED, user=alice, remote_addr="127.0.0.1")
    # A row written while its user was being deleted: it names a user that no longer exists.
    AuditEvent.objects.create(kind=AuditKind.RATE_LIMITED, user_id=alice.pk + 1000, username="carol")
    alice.delete()
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:mcp_sessions_auditevent_changelist")).content.decode()
    assert "alice (deleted)" in page and "carol (deleted)" in page
    search = client.get(reverse("admin:mcp_sessions_auditevent_changelist") + "?q=alice")
    assert search.context["cl"].result_count == 1
    dangling = AuditEvent.objects.get(username="carol")
    detail = client.get(reverse("admin:mcp_sessions_auditevent_change", args=[dangling.pk]))
    assert detail.status_code == 200 and "carol (deleted)" in detail.content.decode()


POSTGRESQL = os.environ.get("DATABASE_ENGINE") == "postgresql"


def write_rows_for(pk: int, username: str, started: threading.Event, failures: list[BaseException]) -> None:
    """Store audit rows for a user, one batch at a time, as the batch writer does; failures are collected."""
    from mcp_sessions.audit import _write

    try:
        started.set()
        for _ in range(40):
            _write([AuditEvent(kind=AuditKind.SESSION_CLOSED, user_id=pk, username=username)])
            _write([AuditEvent(kind=AuditKind.SESSION_REVOKED, user_id=pk)])
    except Exception as exc:  # reported by the test's thread
        failures.append(exc)
    finally:
        connections.close_all()


@pytest.mark.skipif(not POSTGRESQL, reason="the race needs PostgreSQL's deferred checks (DATABASE_ENGINE=postgresql)")
def test_deleting_a_user_while_their_audit_rows_are_written_never_fails(make_user: Any) -> None:
    """A writer thread stores rows for the user while the user is deleted: no IntegrityError, every row named."""
    for round_no in range(30):
        user = make_user(f"doomed{round_no}")
        started, failures = threading.Event(), []
        thread = threading.Thread(target=write_rows_for, args=(user.pk, user.username, started, failures))
        thread.start()
        started.wait(5)
        time.sleep(0.002 * (round_no % 5))
        user.delete()
        thread.join(30)
        assert not failures, failures
        assert AuditEvent.objects.filter(kind=AuditKind.SESSION_CLOSED, username=user.username).count() == 40
        # Rows stored before the deletion were named by the writer; none names a user without a username.
        assert not AuditEvent.objects.filter(username="").exclude(user_id=None).exists()


@pytest.mark.parametrize(
    ("address", "stored"),
    [("203.0.113.7", "203.0.113.7"), ("evil, 203.0.113.7", None), ("fe80::1%eth0", None), ("x\x00y", None)],
    ids=["an-address", "a-forwarded-list", "a-zoned-address", "garbage-with-nul"],
)
def test_a_clients_address_is_stored_as_the_records_store_it(address: str, stored: str | None) -> None:
    """Whatever ``X-Forwarded-For`` said: an invalid value would fail its whole batch on PostgreSQL."""
    from mcp_sessions import audit

    audit.record(AuditKind.CSRF_FAILED, remote_addr=address, detail="/mcp/")  # no loop running: written now
    assert AuditEvent.objects.get(kind=AuditKind.CSRF_FAILED).remote_addr == stored
