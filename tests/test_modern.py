"""Protocol 2026-07-28 at ``<prefix>`` (mcp_gateway/transports/modern.py), driven by the official mcp 2.3 client
and by raw requests, on a real daphne."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types.version import LATEST_MODERN_VERSION

from mcp_gateway import events
from mcp_sessions.choices import CredentialKind
from mcp_sessions.models import AccessToken, ClientUsage, CloseReason, McpSession, Transport

from .clients import BOUND, RawStream, closed_session, poll, until
from .conftest import login_headers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bearer_headers(alice: Any) -> dict[str, str]:
    _, secret = AccessToken.objects.issue(alice, "modern")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def cookie_without_csrf(alice: Any) -> dict[str, str]:
    return login_headers(alice, csrf=False)


@pytest.mark.parametrize("credential", ["cookie", "bearer"])
async def test_client_in_auto_mode_negotiates_2026_and_calls_a_tool_without_initialize(
    daphne: Any, alice_headers: dict[str, str], bearer_headers: dict[str, str], credential: str
) -> None:
    headers = alice_headers if credential == "cookie" else bearer_headers
    sent: list[bytes] = []

    async def record(request: httpx2.Request) -> None:
        sent.append(request.content)

    async with (
        httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"request": [record]}) as http,
        Client(streamable_http_client(f"{daphne.url}/mcp-test/", http_client=http)) as client,
    ):
        assert "whoami" in {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("whoami", {})
    assert result.content[0].text == "alice"
    assert sent and not any(b'"initialize"' in body for body in sent), sent
    assert any(LATEST_MODERN_VERSION.encode() in body for body in sent)
    assert not await McpSession.objects.aexists()  # served per request: no session


SETTINGS = {"MCP_GATEWAY_RATE_LIMIT": [3, 60], "MCP_GATEWAY_MAX_BODY_SIZE": 2000}
ACCEPT = "application/json, text/event-stream"


def envelope(method: str, request_id: Any = 7, **params: Any) -> dict[str, Any]:
    """A 2026-07-28 request: its ``_meta`` names the protocol version, the client and its capabilities."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": LATEST_MODERN_VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}


def modern_headers(method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": LATEST_MODERN_VERSION, "Mcp-Method": method, "Accept": ACCEPT}
    if name is not None:
        headers["Mcp-Name"] = name
    return {**headers, **extra}


async def post(http: httpx2.AsyncClient, url: str, body: Any, headers: dict[str, str]) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await http.post(url, content=content, headers={"Content-Type": "application/json", **headers})


WHOAMI = envelope("tools/call", 7, name="whoami", arguments={})
WHOAMI_HEADERS = modern_headers("tools/call", "whoami")


async def flood(http: httpx2.AsyncClient, url: str, credentials: dict[str, str]) -> httpx2.Response:
    for _ in range(3):
        assert (await post(http, url, WHOAMI, {**WHOAMI_HEADERS, **credentials})).status_code == 200
    return await post(http, url, WHOAMI, {**WHOAMI_HEADERS, **credentials})


# (what is sent, with which credentials, expected status, JSON-RPC code, the id the error must carry)
REFUSALS = [
    pytest.param("plain", "none", 401, -32600, 7, id="no-credential-401"),
    pytest.param("plain", "bad-token", 401, -32600, 7, id="unknown-token-401"),
    pytest.param("foreign-origin", "bearer", 403, -32600, None, id="foreign-origin-403-before-the-body-is-read"),
    pytest.param("plain", "cookie-without-csrf", 403, -32600, 7, id="cookie-without-csrf-403"),
    pytest.param("too-large", "bearer", 413, -32600, None, id="body-over-limit-413-unread"),
    pytest.param("flood", "bearer", 429, -32600, 7, id="rate-limit-429"),
    pytest.param("not-acceptable", "bearer", 406, -32600, 7, id="accept-without-event-stream-406"),
]


@pytest.mark.parametrize(("sent", "credential", "status", "code", "answered_id"), REFUSALS)
async def test_per_request_refusals_are_json_rpc_errors_carrying_the_id(
    start_daphne: Any,
    http: httpx2.AsyncClient,
    bearer_headers: dict[str, str],
    cookie_without_csrf: dict[str, str],
    sent: str,
    credential: str,
    status: int,
    code: int,
    answered_id: Any,
) -> None:
    server = start_daphne(overrides=SETTINGS)
    url = f"{server.url}/mcp-test/"
    credentials = {
        "none": {},
        "bad-token": {"Authorization": "Bearer mcp_not-a-token"},
        "bearer": bearer_headers,
        "cookie-without-csrf": cookie_without_csrf,
    }[credential]
    headers = {**WHOAMI_HEADERS, **credentials}
    if sent == "flood":
        response = await flood(http, url, credentials)
    elif sent == "too-large":
        response = await post(http, url, envelope("tools/call", 7, name="whoami", arguments={"x": "y" * 3000}), headers)
    else:
        if sent == "foreign-origin":
            headers["Origin"] = "https://evil.example"
        if sent == "not-acceptable":
            headers["Accept"] = "application/json"
        response = await post(http, url, WHOAMI, headers)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == code
    assert "id" in body and body["id"] == answered_id
    assert not await McpSession.objects.aexists()


# Requests the SDK's classification refuses, or its dispatch answers with an error: the status its table gives the
# code, and the request's id.
PROTOCOL_ERRORS = [
    pytest.param(
        {"jsonrpc": "2.0", "id": "a", "method": "tools/list", "params": {}},
        modern_headers("tools/list"),
        400,
        -32602,
        "a",
        id="no-envelope-invalid-params",
    ),
    pytest.param(envelope("tools/list", 8), modern_headers("tools/call"), 400, -32020, 8, id="mcp-method-mismatch"),
    pytest.param(
        envelope("tools/list", 9),
        {**modern_headers("tools/list"), "MCP-Protocol-Version": "2099-01-01"},
        400,
        -32020,
        9,
        id="version-header-mismatch",
    ),
    pytest.param(envelope("initialize", 10), modern_headers("initialize"), 404, -32601, 10, id="initialize-not-found"),
    pytest.param(envelope("no/such", 11), modern_headers("no/such"), 404, -32601, 11, id="unknown-method-not-found"),
    pytest.param(b"{not json", modern_headers("tools/list"), 400, -32700, None, id="bad-json-parse-error"),
    pytest.param(b"[]", modern_headers("tools/list"), 400, -32600, None, id="batch-refused"),
]


@pytest.mark.parametrize(("body", "headers", "status", "code", "answered_id"), PROTOCOL_ERRORS)
async def test_protocol_errors_carry_the_sdk_status_and_the_id(
    daphne: Any,
    http: httpx2.AsyncClient,
    bearer_headers: dict[str, str],
    body: Any,
    headers: dict[str, str],
    status: int,
    code: int,
    answered_id: Any,
) -> None:
    response = await post(http, f"{daphne.url}/mcp-test/", body, {**headers, **bearer_headers})
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"]["code"] == code and "id" in answer and answer["id"] == answered_id


# The handshake era answers its refusals with the request's id too.
HANDSHAKE_REFUSALS = [
    pytest.param("/mcp-test/", {"Accept": ACCEPT}, id="streamable-http-no-credential"),
    pytest.param("/mcp-test/messages/?session_id=x", {}, id="sse-messages-no-credential"),
]


@pytest.mark.parametrize(("path", "headers"), HANDSHAKE_REFUSALS)
async def test_handshake_era_refusals_carry_the_id(
    daphne: Any, http: httpx2.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    request = {"jsonrpc": "2.0", "id": 42, "method": "tools/list", "params": {}}
    response = await post(http, f"{daphne.url}{path}", request, headers)
    assert response.status_code == 401 and response.json()["id"] == 42


async def test_a_tool_sees_the_caller_and_no_session_is_opened(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    response = await post(http, f"{daphne.url}/mcp-test/", WHOAMI, {**WHOAMI_HEADERS, **alice_headers})
    assert response.status_code == 200 and "mcp-session-id" not in response.headers
    answer = response.json()
    assert answer["id"] == 7 and answer["result"]["content"][0]["text"] == "alice"
    assert not await McpSession.objects.aexists()


async def test_a_tools_notifications_stream_ahead_of_its_answer(
    daphne: Any, http: httpx2.AsyncClient, bearer_headers: dict[str, str]
) -> None:
    """Each notification the handler sends goes out as it comes, on the request's event stream, then the answer."""
    call = envelope("tools/call", 9, name="chatty", arguments={"steps": 3})
    call["params"]["_meta"]["progressToken"] = "chatty"
    response = await post(
        http, f"{daphne.url}/mcp-test/", call, {**modern_headers("tools/call", "chatty"), **bearer_headers}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    assert [m.get("method") for m in messages] == ["notifications/progress"] * 3 + [None]
    assert [m["params"]["progress"] for m in messages[:3]] == [0, 1, 2]
    assert messages[-1]["id"] == 9 and messages[-1]["result"]["content"][0]["text"] == "3 steps"


async def test_notifications_are_accepted_and_other_methods_refused(
    daphne: Any, http: httpx2.AsyncClient, bearer_headers: dict[str, str]
) -> None:
    url = f"{daphne.url}/mcp-test/"
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    response = await post(http, url, note, {**modern_headers("notifications/cancelled"), **bearer_headers})
    assert response.status_code == 202
    response = await http.get(url, headers={**modern_headers("tools/list"), **bearer_headers})
    assert response.status_code == 405 and response.headers["allow"] == "POST"


async def test_listen_streams_the_acknowledgement_first_and_ends_with_the_client(
    daphne: Any, http: httpx2.AsyncClient, bearer_headers: dict[str, str]
) -> None:
    listen = envelope("subscriptions/listen", "sub-1", notifications={"toolsListChanged": True})
    headers = {"Content-Type": "application/json", **modern_headers("subscriptions/listen"), **bearer_headers}
    url = f"{daphne.url}/mcp-conformance/"
    async with http.stream("POST", url, content=json.dumps(listen).encode(), headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        first = await RawStream(response).next_event(timeout=BOUND)
    ack = json.loads(first[1])
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1"


def _round(request_id: int, state: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "test_input_required_result_tampered_state", "arguments": {}}
    if state is not None:
        params |= {"requestState": state, "inputResponses": {"confirm": {"action": "accept", "content": {"ok": True}}}}
    return envelope("tools/call", request_id, **params)


STATE_REPLAYS = [
    pytest.param("same-credential", True, id="same-user-same-credential-completes"),
    pytest.param("other-user", False, id="other-user-refused"),
    pytest.param("same-user-other-credential", False, id="same-user-other-credential-refused"),
    pytest.param("tampered", False, id="tampered-refused"),
]


@pytest.mark.parametrize(("replayed_by", "completes"), STATE_REPLAYS)
async def test_request_state_is_bound_to_the_caller_and_credential(
    daphne: Any,
    http: httpx2.AsyncClient,
    bearer_headers: dict[str, str],
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
    replayed_by: str,
    completes: bool,
) -> None:
    url = f"{daphne.url}/mcp-conformance/"
    headers = modern_headers("tools/call", "test_input_required_result_tampered_state")
    first_response = await post(http, url, _round(1), {**headers, **bearer_headers})
    first = first_response.json().get("result") or pytest.fail(first_response.text)
    assert first["resultType"] == "input_required"
    state = first["requestState"] + ("x" if replayed_by == "tampered" else "")
    credentials = {
        "same-credential": bearer_headers,
        "tampered": bearer_headers,
        "other-user": bob_headers,
        "same-user-other-credential": alice_headers,
    }[replayed_by]
    response = await post(http, url, _round(2, state), {**headers, **credentials})
    answer = response.json()
    if completes:
        assert response.status_code == 200 and answer["result"]["resultType"] == "complete", answer
    else:
        assert response.status_code == 400 and answer["error"]["code"] == -32602 and answer["id"] == 2, answer


async def test_each_request_is_counted_for_the_admin_in_batches(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, bearer_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_USAGE_FLUSH_INTERVAL": 0.2})
    url = f"{server.url}/mcp-test/"
    for _ in range(3):
        assert (await post(http, url, WHOAMI, {**WHOAMI_HEADERS, **bearer_headers})).status_code == 200
    row = await poll(
        lambda: ClientUsage.objects.filter(user=alice).afirst(), lambda row: row is not None and row.requests == 3
    )
    assert (row.client_name, row.client_version, row.protocol_version) == ("raw", "0", LATEST_MODERN_VERSION)
    assert row.credential_kind == CredentialKind.TOKEN and row.token_id is not None and row.refusals == 0


async def test_a_listen_stream_is_owned_hears_django_events_and_ends_when_revoked(
    start_daphne: Any, redis_settings: dict[str, Any], alice: Any, bob: Any, bearer_headers: dict[str, str]
) -> None:
    """The official client listens on a real daphne; this process (another one) sends events and revokes."""
    server = start_daphne(overrides=redis_settings)
    heard: list[Any] = []
    state = {"subscribed": False, "ended": False}

    async with (
        httpx2.AsyncClient(headers=bearer_headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(f"{server.url}/mcp/", http_client=http)) as client,
        anyio.create_task_group() as group,
    ):

        async def consume() -> None:
            async with client.listen(tools_list_changed=True, resource_subscriptions=["notes://1"]) as subscription:
                state["subscribed"] = True
                async for event in subscription:
                    heard.append(event)
            state["ended"] = True  # the server's graceful close, not a drop (that raises SubscriptionLost)

        group.start_soon(consume)
        await until(lambda: state["subscribed"], "the acknowledgement")
        record = await McpSession.objects.aget(user=alice, transport=Transport.LISTEN)
        assert record.is_open and record.token_id is not None and record.protocol_version == LATEST_MODERN_VERSION
        assert record.listen_filter == {"lists": ["tools"], "resources": ["notes://1"], "resource_count": 1}

        await sync_to_async(events.notify_resource_updated)("notes://1", user=bob)  # bob's: never reaches alice
        await sync_to_async(events.notify_resource_updated)("notes://1", user=alice)
        await sync_to_async(events.notify_tool_list_changed)()
        await until(lambda: len(heard) == 2, "alice's event and everyone's")
        assert heard == [ResourceUpdated(uri="notes://1"), ToolsListChanged()]

        await sync_to_async(McpSession.objects.filter(pk=record.pk).revoke)()
        await until(lambda: state["ended"], "the stream ended by the revocation")
    assert (await closed_session(pk=record.pk)).close_reason == CloseReason.REVOKED


async def test_a_listen_stream_over_the_cap_is_refused_with_429(
    start_daphne: Any, alice: Any, bearer_headers: dict[str, str], http: httpx2.AsyncClient
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_MAX_SESSIONS_PER_USER": 0})
    listen = envelope("subscriptions/listen", "sub-1", notifications={"toolsListChanged": True})
    response = await post(
        http, f"{server.url}/mcp/", listen, {**modern_headers("subscriptions/listen"), **bearer_headers}
    )
    assert response.status_code == 429 and response.json()["id"] == "sub-1"
    assert not await McpSession.objects.aexists()
