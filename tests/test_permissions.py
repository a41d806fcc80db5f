"""Permissions on tools, resources and prompts, scoped tokens and call records, through real daphne launchers.

The servers are tests/permission_servers.py: an ``MCPServer`` marked with ``@require`` at ``/mcp-perms/`` and a
low-level ``Server`` guarded with ``protect()`` at ``/mcp-perms-low/``. Each is driven by the official client over
both transports and in both eras (``legacy``: the initialize handshake; ``auto``: 2026-07-28), and by raw requests
where the very bytes matter.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import mcp_types as types
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group, Permission
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_sessions.models import AccessToken, CallRecord

from .clients import (
    BOUND,
    INITIALIZE,
    INITIALIZED,
    TRANSPORTS,
    RawStream,
    handshake,
    jsonrpc,
    poll,
    raw_stream,
    transport_streams,
)
from .conftest import login_headers
from .test_modern import envelope, modern_headers, post

pytestmark = pytest.mark.django_db(transaction=True)

MODES = ["legacy", "auto"]
GUARDED = "/mcp-perms/"
LOW = "/mcp-perms-low/"


def grant(user: Any, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def editors_group(*codenames: str) -> Group:
    group = Group.objects.create(name="editors")
    group.permissions.add(*Permission.objects.filter(codename__in=codenames))
    return group


def make_caller(make_user: Any, kind: str) -> Any:
    """A user as the case names it."""
    if kind == "plain":
        return make_user("plain")
    if kind == "with-permission":
        user = make_user("viewer")
        grant(user, "view_note")
        return user
    if kind == "through-group":
        user = make_user("grouped", is_staff=True)
        user.groups.add(editors_group("delete_note", "view_note"))
        return user
    if kind == "staff":
        return make_user("staffer", is_staff=True)
    if kind == "superuser":
        return get_superuser(make_user)
    raise AssertionError(kind)


def get_superuser(make_user: Any) -> Any:
    user = make_user("root", is_staff=True, is_superuser=True)
    return user


ALL_TOOLS = {"public", "staff_only", "notes", "editor", "boom"}
# (who calls, the tools they see on either server)
LISTS = [
    pytest.param("plain", {"public", "boom"}, id="no-permission-sees-unguarded-only"),
    pytest.param("with-permission", {"public", "boom", "notes"}, id="user-permission-shows-its-tool"),
    pytest.param("through-group", {"public", "boom", "notes", "editor", "staff_only"}, id="group-grants-tools"),
    pytest.param("staff", {"public", "boom", "staff_only"}, id="staff-check-passes"),
    pytest.param("superuser", ALL_TOOLS, id="superuser-sees-all"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("who", "expected"), LISTS)
@pytest.mark.parametrize("prefix", [GUARDED, LOW], ids=["mcpserver", "lowlevel"])
async def test_lists_show_each_user_what_they_may_use(
    daphne: Any, make_user: Any, who: str, expected: set[str], transport: str, mode: str, prefix: str
) -> None:
    user = await sync_to_async(make_caller)(make_user, who)
    headers = await sync_to_async(login_headers)(user)
    async with Client(transport_streams(daphne.url, headers, prefix, transport), mode=mode) as client:  # type: ignore[arg-type]
        assert {tool.name for tool in (await client.list_tools()).tools} == expected
        for name in expected - {"boom"}:
            result = await client.call_tool(name, {})
            assert not result.is_error, (name, result)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_resources_templates_and_prompts_are_listed_per_user(
    daphne: Any, make_user: Any, transport: str, mode: str
) -> None:
    plain = await sync_to_async(make_caller)(make_user, "plain")
    viewer = await sync_to_async(make_caller)(make_user, "with-permission")
    seen = {}
    for user in (plain, viewer):
        headers = await sync_to_async(login_headers)(user)
        async with Client(transport_streams(daphne.url, headers, GUARDED, transport), mode=mode) as client:  # type: ignore[arg-type]
            seen[user.username] = (
                {str(r.uri) for r in (await client.list_resources()).resources},
                {t.uri_template for t in (await client.list_resource_templates()).resource_templates},
                {p.name for p in (await client.list_prompts()).prompts},
            )
    assert seen["plain"] == ({"notes://public"}, set(), {"greet"})
    assert seen["viewer"] == ({"notes://public", "notes://mine"}, {"notes://by-id/{pk}"}, {"greet", "summarize"})


# (the method, a guarded name, an unknown one, the params naming it)
HIDDEN = [
    pytest.param("tools/call", "notes", "nosuch", "name", GUARDED, id="tool-call-mcpserver"),
    pytest.param("tools/call", "notes", "nosuch", "name", LOW, id="tool-call-lowlevel"),
    pytest.param("resources/read", "notes://mine", "notes://nosuch", "uri", GUARDED, id="resource-read"),
    pytest.param("resources/read", "notes://by-id/3", "notes://nosuch/3", "uri", GUARDED, id="template-read"),
    pytest.param("prompts/get", "summarize", "nosuch", "name", GUARDED, id="prompt-get"),
    pytest.param("completion/complete", "summarize", "nosuch", "ref", GUARDED, id="completion-of-a-prompt"),
]


def _params(method: str, field: str, name: str) -> dict[str, Any]:
    if method == "completion/complete":
        return {"ref": {"type": "ref/prompt", "name": name}, "argument": {"name": "topic", "value": "x"}}
    extra = {"arguments": {"topic": "x"}} if method == "prompts/get" else {}
    extra = {"arguments": {}} if method == "tools/call" else extra
    return {field: name, **extra}


@pytest.mark.parametrize(("method", "guarded", "unknown", "field", "prefix"), HIDDEN)
async def test_a_refused_use_answers_byte_for_byte_as_an_unknown_name_2026(
    daphne: Any,
    alice_headers: dict[str, str],
    http: httpx2.AsyncClient,
    method: str,
    guarded: str,
    unknown: str,
    field: str,
    prefix: str,
) -> None:
    answers = []
    # A header the tool's schema does not declare: the SDK checks it before any middleware, against the schema.
    extra = {"Mcp-Param-Text": "x"} if method == "tools/call" else {}
    for name in (guarded, unknown):
        body = envelope(method, 7, **_params(method, field, name))
        headers = {
            **modern_headers(method, None if method == "completion/complete" else name),
            **extra,
            **alice_headers,
        }
        response = await post(http, f"{daphne.url}{prefix}", body, headers)
        answers.append((response.status_code, response.text.replace(json.dumps(name)[1:-1], "<NAME>")))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("method", "guarded", "unknown", "field", "prefix"), HIDDEN)
async def test_a_refused_use_answers_as_an_unknown_name_in_a_handshake_session(
    daphne: Any,
    alice_headers: dict[str, str],
    transport: str,
    method: str,
    guarded: str,
    unknown: str,
    field: str,
    prefix: str,
) -> None:
    answers = []
    async with Client(transport_streams(daphne.url, alice_headers, prefix, transport), mode="legacy") as client:  # type: ignore[arg-type]
        for name in (guarded, unknown):
            try:
                if method == "tools/call":
                    outcome: Any = (await client.call_tool(name, {})).model_dump(mode="json")
                elif method == "resources/read":
                    outcome = (await client.read_resource(name)).model_dump(mode="json")
                elif method == "completion/complete":
                    ref = types.PromptReference(type="ref/prompt", name=name)
                    outcome = (await client.complete(ref, {"name": "topic", "value": "x"})).model_dump(mode="json")
                else:
                    outcome = (await client.get_prompt(name, {"topic": "x"})).model_dump(mode="json")
            except MCPError as exc:
                outcome = exc.error.model_dump(mode="json")
            answers.append(json.dumps(outcome, sort_keys=True).replace(name, "<NAME>"))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_a_permission_removed_applies_to_the_next_call_of_an_open_session(
    start_daphne: Any, make_user: Any, transport: str, mode: str
) -> None:
    # No cache: every request reads the user and their permissions again.
    server = start_daphne(overrides={"MCP_GATEWAY_PERMISSION_CACHE_TTL": 0})
    user = await sync_to_async(make_caller)(make_user, "with-permission")
    headers = await sync_to_async(login_headers)(user)
    async with Client(transport_streams(server.url, headers, GUARDED, transport), mode=mode) as client:  # type: ignore[arg-type]
        assert not (await client.call_tool("notes", {})).is_error
        await sync_to_async(user.user_permissions.clear)()
        result = await client.call_tool("notes", {})
        assert result.is_error and result.content[0].text == "Unknown tool: notes"  # type: ignore[union-attr]
        assert "notes" not in {tool.name for tool in (await client.list_tools()).tools}


# (what changes in the admin, a user who may call ``editor`` before)
CHANGES = [
    pytest.param("permission-removed", id="a-permission-removed"),
    pytest.param("left-group", id="removed-from-the-group"),
    pytest.param("group-lost-permission", id="the-group-lost-the-permission"),
    pytest.param("no-longer-staff", id="no-longer-staff"),
]


@pytest.mark.parametrize("change", CHANGES)
async def test_a_change_in_the_admin_reaches_every_workers_cache_at_once(
    start_daphne: Any, redis_settings: dict[str, Any], make_user: Any, change: str
) -> None:
    # Cached for a minute: only the broadcast (over Redis, as in production) can make the worker forget in time.
    server = start_daphne(overrides={**redis_settings, "MCP_GATEWAY_PERMISSION_CACHE_TTL": 60})
    user = await sync_to_async(make_caller)(make_user, "through-group")
    headers = await sync_to_async(login_headers)(user)

    def apply() -> None:
        group = user.groups.get()
        if change == "permission-removed":
            group.permissions.remove(Permission.objects.get(codename="delete_note"))
        elif change == "left-group":
            user.groups.clear()
        elif change == "group-lost-permission":
            Permission.objects.get(codename="delete_note").group_set.clear()
        else:
            user.is_staff = False
            user.save()

    async with Client(transport_streams(server.url, headers, GUARDED, "streamable_http")) as client:
        assert not (await client.call_tool("editor", {})).is_error
        await sync_to_async(apply)()
        result = await poll(lambda: client.call_tool("editor", {}), lambda r: bool(r.is_error))
        assert result.is_error and result.content[0].text == "Unknown tool: editor"  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_a_token_scoped_to_one_tool_cannot_call_another_its_user_may(
    daphne: Any, make_user: Any, transport: str, mode: str
) -> None:
    user = await sync_to_async(make_caller)(make_user, "superuser")
    _, secret = await sync_to_async(AccessToken.objects.issue)(user, "one tool", tools=["public"])
    headers = {"Authorization": f"Bearer {secret}"}
    async with Client(transport_streams(daphne.url, headers, GUARDED, transport), mode=mode) as client:  # type: ignore[arg-type]
        assert {tool.name for tool in (await client.list_tools()).tools} == {"public"}
        assert not (await client.call_tool("public", {})).is_error
        refused = await client.call_tool("notes", {})
        assert refused.is_error and refused.content[0].text == "Unknown tool: notes"  # type: ignore[union-attr]
        assert (await client.list_prompts()).prompts == []


def _reply(response: httpx2.Response) -> dict[str, Any]:
    """A POSTed request's reply: the JSON body, or the data of the SSE event carrying it."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()  # type: ignore[no-any-return]
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:") and '"id"' in line]
    return json.loads(data[-1])  # type: ignore[no-any-return]


async def test_each_request_of_a_session_is_limited_by_its_own_credential(
    daphne: Any, make_user: Any, http: httpx2.AsyncClient
) -> None:
    user = await sync_to_async(make_caller)(make_user, "superuser")
    login = await sync_to_async(login_headers)(user)
    _, secret = await sync_to_async(AccessToken.objects.issue)(user, "one tool", tools=["public"])
    accept = {"Accept": "application/json, text/event-stream"}
    opened = await http.post(f"{daphne.url}{GUARDED}", json=INITIALIZE, headers={**login, **accept})
    session = {**accept, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    await http.post(f"{daphne.url}{GUARDED}", json=INITIALIZED, headers={**login, **session})
    call = jsonrpc("tools/call", {"name": "notes", "arguments": {}}, id=2)
    as_login = _reply(await http.post(f"{daphne.url}{GUARDED}", json=call, headers={**login, **session}))
    token = {"Authorization": f"Bearer {secret}", **session}
    as_token = _reply(await http.post(f"{daphne.url}{GUARDED}", json=call, headers=token))
    assert not as_login["result"].get("isError")
    assert as_token["result"]["isError"] and as_token["result"]["content"][0]["text"] == "Unknown tool: notes"
    rows = await poll(
        lambda: sync_to_async(list)(CallRecord.objects.filter(user_id=user.pk).order_by("pk")),
        lambda found: len(found) >= 2,
    )
    assert [(r.credential_kind, r.outcome) for r in rows] == [("login", "ok"), ("token", "refused")]


STEP_UP = {"MCP_GATEWAY_AUTHENTICATORS": ["tests.permission_servers.ScopedGrantAuthenticator"]}


@pytest.mark.parametrize(
    ("scope", "name", "status"),
    [
        pytest.param("mcp:tools:public", "notes", 403, id="missing-scope-403-insufficient-scope"),
        pytest.param("mcp:tools:public", "nosuch", 403, id="unknown-name-same-403"),
        pytest.param("mcp:tools:public", "public", 200, id="granted-scope-200"),
        pytest.param("mcp:tools", "notes", 200, id="broad-scope-200-then-permission-decides"),
    ],
)
async def test_a_step_up_credential_missing_a_scope_gets_403_insufficient_scope(
    start_daphne: Any, alice: Any, http: httpx2.AsyncClient, scope: str, name: str, status: int
) -> None:
    server = start_daphne(overrides=STEP_UP)
    headers = {"Authorization": f"Grant {alice.pk} {scope}"}
    body = envelope("tools/call", 7, name=name, arguments={})
    response = await post(http, f"{server.url}{GUARDED}", body, {**modern_headers("tools/call", name), **headers})
    assert response.status_code == status, response.text
    if status == 403:
        challenge = response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and f'scope="mcp:tools:{name}"' in challenge
        assert response.json()["id"] == 7


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_step_up_in_a_handshake_session_too(
    start_daphne: Any, alice: Any, http: httpx2.AsyncClient, transport: str
) -> None:
    server = start_daphne(overrides=STEP_UP)
    grant = {"Authorization": f"Grant {alice.pk} mcp:tools:public"}
    call = jsonrpc("tools/call", {"name": "notes", "arguments": {}}, id=2)
    if transport == "sse":
        async with raw_stream(http, f"{server.url}{GUARDED}sse", grant) as stream:
            await handshake(http, server.url, stream, grant)
            response = await http.post(server.url + stream.endpoint, json=call, headers=grant)
    else:
        headers = {**grant, "Accept": "application/json, text/event-stream"}
        opened = await http.post(f"{server.url}{GUARDED}", json=INITIALIZE, headers=headers)
        session = {**headers, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        assert (await http.post(f"{server.url}{GUARDED}", json=INITIALIZED, headers=session)).status_code == 202
        response = await http.post(f"{server.url}{GUARDED}", json=call, headers=session)
    assert response.status_code == 403, response.text
    assert 'scope="mcp:tools:notes"' in response.headers["www-authenticate"] and response.json()["id"] == 2


BACKENDS = {
    "AUTHENTICATION_BACKENDS": [
        "django.contrib.auth.backends.ModelBackend",
        "tests.permission_servers.ReaderBackend",
    ]
}


@pytest.mark.parametrize(
    ("username", "sees_notes"),
    [pytest.param("reader-1", True, id="custom-backend-grants"), pytest.param("writer-1", False, id="it-does-not")],
)
async def test_a_custom_permission_backend_decides_too(
    start_daphne: Any, make_user: Any, username: str, sees_notes: bool
) -> None:
    server = start_daphne(overrides=BACKENDS)
    user = await sync_to_async(make_user)(username)
    headers = await sync_to_async(login_headers)(user)
    async with Client(transport_streams(server.url, headers, GUARDED, "streamable_http")) as client:
        assert ("notes" in {tool.name for tool in (await client.list_tools()).tools}) is sees_notes
        assert (await client.call_tool("notes", {})).is_error is not sees_notes


async def test_a_deactivated_user_is_refused_before_any_permission(
    daphne: Any, make_user: Any, http: httpx2.AsyncClient
) -> None:
    user = await sync_to_async(make_caller)(make_user, "superuser")
    headers = await sync_to_async(login_headers)(user)
    user.is_active = False
    await user.asave()
    body = envelope("tools/call", 7, name="public", arguments={})
    response = await post(http, f"{daphne.url}{GUARDED}", body, {**modern_headers("tools/call", "public"), **headers})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("permitted", "honoured"),
    [
        pytest.param(False, ["notes://public"], id="unreadable-resource-left-out"),
        pytest.param(True, ["notes://mine", "notes://public"], id="readable-resources-kept"),
    ],
)
async def test_a_listen_stream_subscribes_only_to_resources_its_caller_may_read(
    daphne: Any,
    http: httpx2.AsyncClient,
    alice: Any,
    alice_headers: dict[str, str],
    permitted: bool,
    honoured: list[str],
) -> None:
    if permitted:
        await sync_to_async(grant)(alice, "view_note")
    wanted = {"resourceSubscriptions": ["notes://mine", "notes://public"]}
    body = json.dumps(envelope("subscriptions/listen", "sub-1", notifications=wanted)).encode()
    headers = {"Content-Type": "application/json", **modern_headers("subscriptions/listen"), **alice_headers}
    async with http.stream("POST", f"{daphne.url}/mcp-perms/", content=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        _, data = await RawStream(response).next_event(timeout=BOUND)
    ack = json.loads(data)
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"].get("resourceSubscriptions") == honoured
