"""The audit trail: a row per refusal kind and per session event, capped, secret-free, read-only in admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, McpSession
from mcp_sessions.revocation import revoke

from .clients import BOUND, RawStream, closed_session, handshake, jsonrpc, raw_stream

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
    assert server.log().count("WARNING mcp_gateway.security: origin_refused") == 40


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


def test_events_of_a_user_deleted_meanwhile_are_kept_without_the_user(alice: Any, bob: Any) -> None:
    from mcp_gateway.audit import _write

    events = [
        AuditEvent(kind=AuditKind.SESSION_CLOSED, user_id=alice.pk, session_ref="a" * 12),
        AuditEvent(kind=AuditKind.CSRF_FAILED, user_id=bob.pk),
    ]
    alice.delete()
    _write(events)
    stored = {e.kind: e.user_id for e in AuditEvent.objects.all()}
    assert stored == {AuditKind.SESSION_CLOSED: None, AuditKind.CSRF_FAILED: bob.pk}
