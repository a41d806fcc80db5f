"""The call records' writer, signal, admin (filters, search, CSV export) and retention (mcp_sessions.calls)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.test import Client as DjangoClient
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_sessions import calls
from mcp_sessions.calls import arguments_digest, canonical_json
from mcp_sessions.choices import CallOutcome
from mcp_sessions.models import CallRecord
from mcp_sessions.signals import call_recorded

from .clients import TRANSPORTS, poll, transport_streams
from .conftest import login_headers
from .test_permissions import GUARDED, MODES, make_caller

CHANGELIST = reverse("admin:mcp_sessions_callrecord_changelist")


def facts(user: Any, name: str = "public", outcome: str = CallOutcome.OK, **extra: Any) -> dict[str, Any]:
    """What the gatekeeper hands :func:`mcp_sessions.calls.record` for one call."""
    return {
        "user": user,
        "credential_kind": "login",
        "credential_ref": "abc123",
        "token_id": None,
        "client_id": "",
        "session_ref": "0123456789ab",
        "transport": "sse",
        "method": "tools/call",
        "name": name,
        "arguments": {"b": 2, "a": "é"},
        "outcome": outcome,
        "error_code": None,
        "duration": 0.0012,
        "result_size": 42,
        "server": "/mcp/",
        "protocol_version": "2025-11-25",
        "request_id": 3,
        **extra,
    }


def test_the_digest_is_sha256_of_canonical_json() -> None:
    assert canonical_json({"b": 2, "a": "é"}) == '{"a":"é","b":2}'.encode()
    assert arguments_digest({"b": 2, "a": 1}) == arguments_digest({"a": 1, "b": 2})
    assert arguments_digest({"a": 1}) != arguments_digest({"a": 2})


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("stored", "rows"),
    [pytest.param(True, 1, id="stored-and-signalled"), pytest.param(False, 0, id="signalled-only-when-off")],
)
async def test_a_record_is_signalled_then_stored_unless_records_are_off(
    make_user: Any, stored: bool, rows: int
) -> None:
    user = await sync_to_async(make_user)("alice")
    received: list[CallRecord] = []

    def receiver(sender: Any, record: CallRecord, **kwargs: Any) -> None:
        if record.user_id == user.pk:  # not one an earlier test queued in this process and flushed meanwhile
            received.append(record)

    call_recorded.connect(receiver)
    try:
        with override_settings(MCP_GATEWAY_CALL_RECORDS=stored):
            calls.record(**facts(user))
            await poll(lambda: asyncio.sleep(0, received), lambda got: bool(got))
            mine = CallRecord.objects.filter(user_id=user.pk)  # a shared server may still write an earlier test's
            await poll(lambda: mine.acount(), lambda count: count == rows)
            await asyncio.sleep(calls.FLUSH_DELAY * 2)
    finally:
        call_recorded.disconnect(receiver)
    (record,) = received
    assert record.username == "alice" and record.duration_ms == 1.2 and record.request_id == "3"
    assert record.arguments is None and record.arguments_digest == arguments_digest({"a": "é", "b": 2})
    assert await mine.acount() == rows


def test_clear_mcp_sessions_removes_call_records_past_the_audit_retention(make_user: Any, db: None) -> None:
    user = make_user("alice")
    common = {k: v for k, v in facts(user).items() if k not in {"user", "arguments", "duration", "request_id"}}
    common.pop("token_id")
    old = CallRecord.objects.create(
        **common, user=user, arguments_digest="0" * 64, duration_ms=1, created_at=timezone.now() - timedelta(days=91)
    )
    recent = CallRecord.objects.create(**common, user=user, arguments_digest="0" * 64, duration_ms=1)
    out = StringIO()
    call_command("clear_mcp_sessions", stdout=out)
    assert list(CallRecord.objects.values_list("pk", flat=True)) == [recent.pk]
    assert old.pk != recent.pk and "Deleted 1 call record(s) older than 90 days." in out.getvalue()


@pytest.fixture
def records(make_user: Any, db: None) -> dict[str, CallRecord]:
    alice, bob = make_user("alice"), make_user("bob")
    made = {}
    for key, user, name, outcome in [
        ("alice-ok", alice, "public", CallOutcome.OK),
        ("alice-refused", alice, "=cmd|' /C calc'!A0", CallOutcome.REFUSED),
        ("bob-failed", bob, "boom", CallOutcome.FAILED),
    ]:
        fields = facts(user, name, outcome)
        for key_ in ("user", "arguments", "duration", "request_id", "token_id"):
            fields.pop(key_)
        made[key] = CallRecord.objects.create(
            **fields, user=user, username=user.username, arguments_digest=key.ljust(64, "0"), duration_ms=1
        )
    return made


@pytest.fixture
def admin_client(make_user: Any) -> DjangoClient:
    client = DjangoClient()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("", {"alice-ok", "alice-refused", "bob-failed"}, id="all"),
        pytest.param("?outcome=refused", {"alice-refused"}, id="filter-outcome"),
        pytest.param("?q=bob", {"bob-failed"}, id="search-user"),
        pytest.param("?q=boom", {"bob-failed"}, id="search-name"),
        pytest.param("?method=prompts%2Fget", set(), id="filter-method"),
    ],
)
def test_the_admin_filters_and_searches(
    admin_client: DjangoClient, records: dict[str, CallRecord], query: str, expected: set[str]
) -> None:
    response = admin_client.get(CHANGELIST + query)
    assert response.status_code == 200
    shown = {key for key, row in records.items() if f"/{row.pk}/change/" in response.content.decode()}
    assert shown == expected


def test_the_admin_exports_csv_with_formulas_defused(
    admin_client: DjangoClient, records: dict[str, CallRecord]
) -> None:
    form = {"action": "export_csv", "_selected_action": [r.pk for r in records.values()]}
    response = admin_client.post(CHANGELIST, form)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))  # type: ignore[attr-defined]
    assert rows[0][:3] == ["created_at", "username", "user_id"] and len(rows) == 4
    assert {row[1] for row in rows[1:]} == {"alice", "bob"}
    assert "'=cmd|' /C calc'!A0" in {row[13] for row in rows[1:]}


def test_records_cannot_be_added_edited_or_deleted(admin_client: DjangoClient, records: dict[str, CallRecord]) -> None:
    row = records["alice-ok"]
    assert admin_client.get(reverse("admin:mcp_sessions_callrecord_add")).status_code == 403
    assert admin_client.post(reverse("admin:mcp_sessions_callrecord_delete", args=[row.pk])).status_code == 403
    page = admin_client.get(reverse("admin:mcp_sessions_callrecord_change", args=[row.pk])).content.decode()
    assert row.arguments_digest in page


# Through real launchers: every call, read and get leaves one record


async def _records(user: Any, count: int) -> list[CallRecord]:
    """The user's records, once ``count`` are there (a shared server may still be writing an earlier test's)."""
    rows = CallRecord.objects.filter(user_id=user.pk).order_by("pk")
    return await poll(lambda: sync_to_async(list)(rows.all()), lambda found: len(found) >= count)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_every_call_leaves_one_record_with_its_outcome(
    daphne: Any, make_user: Any, transport: str, mode: str
) -> None:
    user = await sync_to_async(make_caller)(make_user, "plain")
    headers = await sync_to_async(login_headers)(user)
    async with Client(transport_streams(daphne.url, headers, GUARDED, transport), mode=mode) as client:  # type: ignore[arg-type]
        await client.call_tool("public", {"text": "secret-value"})
        await client.call_tool("boom", {})
        await client.call_tool("notes", {"text": "hidden-value"})
        with pytest.raises(MCPError):
            await client.read_resource("notes://mine")
        await client.get_prompt("greet", {"name": "x"})
    rows = await _records(user, 5)
    assert len(rows) == 5
    seen = [(r.method, r.name, r.outcome) for r in rows]
    assert seen == [
        ("tools/call", "public", CallOutcome.OK),
        ("tools/call", "boom", CallOutcome.TOOL_ERROR),
        ("tools/call", "notes", CallOutcome.REFUSED),
        ("resources/read", "notes://mine", CallOutcome.REFUSED),
        ("prompts/get", "greet", CallOutcome.OK),
    ]
    first = rows[0]
    assert first.username == "plain" and first.user_id == user.pk and first.credential_kind == "login"
    assert first.server == GUARDED and first.transport == transport and first.protocol_version
    assert (first.session_ref == "") == (mode == "auto" and transport == "streamable_http")
    assert first.arguments_digest == arguments_digest({"text": "secret-value"}) and first.arguments is None
    assert first.duration_ms >= 0 and first.result_size > 0
    dumped = json.dumps([list(r.__dict__.values()) for r in rows], default=str)
    assert "secret-value" not in dumped and "hidden-value" not in dumped


@pytest.mark.django_db(transaction=True)
async def test_arguments_are_stored_only_through_the_sites_hook(
    start_daphne: Any, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_CALL_ARGUMENTS": "tests.permission_servers.keep_text"})
    async with Client(transport_streams(server.url, alice_headers, GUARDED, "streamable_http")) as client:
        await client.call_tool("public", {"text": "kept"})
    (row,) = await _records(alice, 1)
    assert row.arguments == {"text": "kept"}


@pytest.mark.django_db(transaction=True)
async def test_a_flood_is_capped_and_the_log_counts_it(
    start_daphne: Any, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_CALL_RECORDS_PER_MINUTE": 3})
    async with Client(transport_streams(server.url, alice_headers, GUARDED, "streamable_http")) as client:
        for _ in range(8):
            await client.call_tool("public", {})
    # The batches may split the flood: the last line counts all that were not stored.
    await poll(lambda: sync_to_async(server.log)(), lambda out: "over 3 per minute (5 in all so far)" in out)
    assert await CallRecord.objects.filter(user_id=alice.pk).acount() == 3


def test_a_staff_member_who_may_only_view_the_records_may_export_them(
    make_user: Any, records: dict[str, CallRecord]
) -> None:
    from django.contrib.auth.models import Permission

    viewer = make_user("auditor", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_callrecord"))
    client = DjangoClient()
    client.force_login(viewer)
    assert 'value="export_csv"' in client.get(CHANGELIST).content.decode()
    form = {"action": "export_csv", "_selected_action": [r.pk for r in records.values()]}
    response = client.post(CHANGELIST, form)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
