"""Streamable HTTP at ``<prefix>``: every status the transport can answer, ownership, isolation, resumption."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async

from demo.models import Note
from mcp_sessions.models import CloseReason, McpSession, Transport

from .clients import BOUND, INITIALIZE, INITIALIZED, jsonrpc, poll

pytestmark = pytest.mark.django_db(transaction=True)

ACCEPT = {"Accept": "application/json, text/event-stream"}
EVIL = "https://evil.example"


def sse_messages(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(event id, message) for each ``message`` event of an event-stream body."""
    found = []
    for block in text.split("\n\n"):
        fields = [line.partition(":")[::2] for line in block.splitlines() if line and not line.startswith(":")]
        data = "\n".join(v.removeprefix(" ") for k, v in fields if k == "data")
        event_id = next((v.strip() for k, v in fields if k == "id"), None)
        if data and dict(fields).get("event", " message").strip() == "message":
            found.append((event_id, json.loads(data)))
    return found


# The sweep saves each session's counts this often, so a test can wait for the server to have taken or sent
# messages (the keepalive comments this also sends are skipped by the readers).
SWEPT = {"MCP_GATEWAY_PING_INTERVAL": 0.1}


async def server_sent(count: int) -> None:
    """Wait (at most BOUND) for the sweep to have saved ``count`` messages from the server to the one session."""
    record = await poll(McpSession.objects.aget, lambda r: r.messages_out >= count)
    assert record.messages_out == count, f"{record.messages_out} messages from the server, {count} expected"


async def client_sent(count: int) -> None:
    """Wait (at most BOUND) for the sweep to have saved ``count`` messages from the client to the one session."""
    record = await poll(McpSession.objects.aget, lambda r: r.messages_in >= count)
    assert record.messages_in == count, f"{record.messages_in} messages from the client, {count} expected"


def reply_of(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a POST's response, whichever content type the server chose."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    return sse_messages(response.text)[-1][1]


@dataclass
class Peer:
    """One user's raw Streamable HTTP client."""

    http: httpx2.AsyncClient
    url: str
    headers: dict[str, str]
    session_id: str | None = None

    def with_session(self, **extra: str) -> dict[str, str]:
        headers = {**self.headers, **ACCEPT, **extra}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    async def post(self, message: Any, **extra: str) -> httpx2.Response:
        return await self.http.post(self.url, json=message, headers=self.with_session(**extra))

    async def open(self) -> Peer:
        response = await self.http.post(self.url, json=INITIALIZE, headers={**self.headers, **ACCEPT})
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        assert reply_of(response)["result"]["protocolVersion"] == "2025-11-25"
        assert (await self.post(INITIALIZED)).status_code == 202
        return self


@pytest.fixture
def peers(daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], bob_headers: dict[str, str]) -> Any:
    def make(prefix: str = "/mcp/") -> tuple[Peer, Peer]:
        url = f"{daphne.url}{prefix}"
        return Peer(http, url, alice_headers), Peer(http, url, bob_headers)

    return make


def add_note(title: str, request_id: int = 7) -> dict[str, Any]:
    return jsonrpc("tools/call", {"name": "add_note", "arguments": {"title": title}}, id=request_id)


@dataclass
class Case:
    """One request against alice's open session; bob's open session is there to be attacked."""

    request: Callable[[Peer, Peer], Any]
    status: int
    reason: str | None = None


async def _post_raw(peer: Peer, body: bytes, **extra: str) -> httpx2.Response:
    headers = {**peer.with_session(**extra), "Content-Type": "application/json"}
    return await peer.http.post(peer.url, content=body, headers=headers)


def _no_session(peer: Peer) -> Peer:
    return Peer(peer.http, peer.url, peer.headers)


def _as(peer: Peer, session_id: str | None, headers: dict[str, str] | None = None) -> Peer:
    return Peer(peer.http, peer.url, peer.headers if headers is None else headers, session_id)


STATUS_CASES = {
    "post-request-json": Case(lambda a, b: a.post(jsonrpc("tools/list", id=3)), 200),
    "post-notification-202": Case(
        lambda a, b: a.post(jsonrpc("notifications/cancelled", {"requestId": 99}, None)), 202
    ),
    "post-response-202": Case(lambda a, b: a.post({"jsonrpc": "2.0", "id": 99, "result": {}}), 202),
    "post-no-protocol-header-means-2025-03-26": Case(lambda a, b: a.post(jsonrpc("ping", id=4)), 200),
    "post-supported-protocol-version": Case(
        lambda a, b: a.post(jsonrpc("ping", id=4), **{"MCP-Protocol-Version": "2025-06-18"}), 200
    ),
    # A version outside the handshake era goes to the 2026-07-28 path, as in the SDK, whose classification refuses it.
    "post-unsupported-protocol-version": Case(
        lambda a, b: a.post(add_note("x"), **{"MCP-Protocol-Version": "1999-01-01"}),
        400,
        "protocol_rejected",
    ),
    "post-no-session-not-initialize": Case(lambda a, b: _no_session(a).post(add_note("x")), 400, "initialize_required"),
    "post-server-discover-stateless": Case(
        lambda a, b: _no_session(a).post(jsonrpc("server/discover", {}, id=1)), 400, "initialize_required"
    ),
    "post-malformed-session": Case(lambda a, b: _as(a, "short").post(add_note("x")), 400, "malformed_session_id"),
    "post-unknown-session": Case(lambda a, b: _as(a, "A" * 43).post(add_note("x")), 404, "session_not_found"),
    "post-foreign-session": Case(lambda a, b: _as(a, b.session_id).post(add_note("x")), 404, "session_not_found"),
    "post-batch": Case(lambda a, b: a.post([add_note("x"), jsonrpc("ping", id=5)]), 400, "batch_not_supported"),
    "post-invalid-json": Case(lambda a, b: _post_raw(a, b"{not json"), 400, "parse_error"),
    "post-not-jsonrpc": Case(lambda a, b: a.post({"hello": "world"}), 400, "invalid_message"),
    "post-accept-json-only": Case(lambda a, b: a.post(add_note("x"), Accept="application/json"), 406, "not_acceptable"),
    "post-wrong-content-type": Case(
        lambda a, b: a.http.post(a.url, content=b"{}", headers={**a.with_session(), "Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    ),
    "post-no-credentials": Case(lambda a, b: _as(a, a.session_id, {}).post(add_note("x")), 401),
    "post-cookie-without-csrf": Case(
        lambda a, b: _as(a, a.session_id, {"Cookie": a.headers["Cookie"]}).post(add_note("x")), 403, "csrf_failed"
    ),
    "post-foreign-origin": Case(lambda a, b: a.post(add_note("x"), Origin=EVIL), 403, "origin_not_allowed"),
    "get-no-session": Case(
        lambda a, b: a.http.get(a.url, headers={**a.headers, "Accept": "text/event-stream"}),
        400,
        "missing_session_id",
    ),
    "get-not-event-stream": Case(
        lambda a, b: a.http.get(a.url, headers=a.with_session(Accept="application/json")), 406, "not_acceptable"
    ),
    "get-foreign-session": Case(
        lambda a, b: a.http.get(a.url, headers=_as(a, b.session_id).with_session()), 404, "session_not_found"
    ),
    "get-unknown-session": Case(
        lambda a, b: a.http.get(a.url, headers=_as(a, "A" * 43).with_session()), 404, "session_not_found"
    ),
    "get-bad-last-event-id": Case(
        lambda a, b: a.http.get(a.url, headers=a.with_session(**{"Last-Event-ID": "nonsense"})),
        400,
        "invalid_event_id",
    ),
    "delete-foreign-session": Case(
        lambda a, b: a.http.delete(a.url, headers=_as(a, b.session_id).with_session()), 404, "session_not_found"
    ),
    "delete-no-session": Case(lambda a, b: a.http.delete(a.url, headers=a.headers), 400, "missing_session_id"),
    "put-not-allowed": Case(lambda a, b: a.http.put(a.url, json={}, headers=a.with_session()), 405),
}


@pytest.mark.parametrize("case", STATUS_CASES.values(), ids=STATUS_CASES.keys())
async def test_status_codes(peers: Any, alice: Any, bob: Any, case: Case) -> None:
    alice_peer, bob_peer = peers()
    await alice_peer.open()
    await bob_peer.open()
    response = await case.request(alice_peer, bob_peer)
    assert response.status_code == case.status, response.text
    if case.status >= 400 and case.status != 405:
        body = response.json()
        assert body["jsonrpc"] == "2.0" and body["error"]["code"] < 0
        if case.reason is not None:
            assert body["error"]["data"]["reason"] == case.reason
    # Nothing any refused request carried was executed, and both sessions still live.
    assert not await Note.objects.filter(title="x").aexists()
    assert await McpSession.objects.open().acount() == 2


async def test_initialize_issues_a_session_bound_to_the_caller(peers: Any, alice: Any) -> None:
    alice_peer, _ = peers()
    await alice_peer.open()
    record = await McpSession.objects.aget()
    assert (record.user_id, record.transport) == (alice.pk, Transport.STREAMABLE_HTTP)
    assert alice_peer.session_id not in record.id_hash
    response = await alice_peer.post(jsonrpc("tools/call", {"name": "whoami", "arguments": {}}, id=2))
    assert reply_of(response)["result"]["structuredContent"]["username"] == "alice"


async def test_a_second_get_stream_is_409_and_delete_ends_the_session(peers: Any, alice: Any) -> None:
    alice_peer, _ = peers()
    await alice_peer.open()
    async with alice_peer.http.stream("GET", alice_peer.url, headers=alice_peer.with_session()) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        second = await alice_peer.http.get(alice_peer.url, headers=alice_peer.with_session())
        assert second.status_code == 409
        assert second.json()["error"]["data"]["reason"] == "stream_conflict"
        deleted = await alice_peer.http.delete(alice_peer.url, headers=alice_peer.with_session())
        assert deleted.status_code == 204
        # Closed by then, with what the session learnt.
        record = await McpSession.objects.aget()
        assert record.closed_at is not None
        assert (record.messages_in, record.client_name) == (2, INITIALIZE["params"]["clientInfo"]["name"])
        with anyio.fail_after(BOUND):
            async for _ in stream.aiter_bytes():
                pass  # the GET stream ends with the session
    record = await McpSession.objects.aget()
    assert record.close_reason == CloseReason.TERMINATED
    for response in (
        await alice_peer.post(jsonrpc("ping", id=9)),
        await alice_peer.http.get(alice_peer.url, headers=alice_peer.with_session()),
        await alice_peer.http.delete(alice_peer.url, headers=alice_peer.with_session()),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["data"]["reason"] == "session_not_found"


async def test_foreign_delete_deletes_nothing(peers: Any, alice: Any, bob: Any) -> None:
    alice_peer, bob_peer = peers()
    await alice_peer.open()
    await bob_peer.open()
    response = await alice_peer.http.delete(alice_peer.url, headers=_as(alice_peer, bob_peer.session_id).with_session())
    assert response.status_code == 404
    assert reply_of(await bob_peer.post(jsonrpc("ping", id=2)))["result"] == {}
    assert await McpSession.objects.open().acount() == 2


async def test_a_request_with_notifications_streams_them_then_its_answer(peers: Any, alice: Any) -> None:
    alice_peer, _ = peers("/mcp-test/")
    await alice_peer.open()
    response = await alice_peer.post(jsonrpc("tools/call", {"name": "chatty", "arguments": {"steps": 3}}, id=5))
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = [m for _, m in sse_messages(response.text)]
    assert [m["params"]["message"] for m in messages[:-1]] == ["step 0", "step 1", "step 2"]
    assert messages[-1]["id"] == 5 and messages[-1]["result"]["content"][0]["text"] == "3 steps"


async def test_a_dropped_request_stream_resumes_with_get_and_last_event_id(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=SWEPT)
    peer = await Peer(http, f"{server.url}/mcp-test/", alice_headers).open()
    call = jsonrpc("tools/call", {"name": "chatty", "arguments": {"steps": 40}}, id=6)
    async with http.stream("POST", peer.url, json=call, headers=peer.with_session()) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                seen = line.partition(":")[2].strip()
                break  # drop the connection after the first event
    await server_sent(1 + 40 + 1)  # the whole request stream is out, into the buffer: initialize, 40 steps, answer
    resumed = await http.get(peer.url, headers=peer.with_session(**{"Last-Event-ID": seen}))
    assert resumed.status_code == 200
    events = sse_messages(resumed.text)
    # The rest of the request's stream, exactly once, in order, ending with its answer.
    assert [m["params"]["message"] for _, m in events[:-1]] == [f"step {n}" for n in range(1, 40)]
    assert events[-1][1]["id"] == 6 and "result" in events[-1][1]
    seqs = [int(str(e).rsplit(".", 1)[1]) for e, _ in events]
    assert seqs == list(range(int(seen.rsplit(".", 1)[1]) + 1, int(seen.rsplit(".", 1)[1]) + 1 + len(events)))


MiB = 1024 * 1024


async def test_large_replies_sent_as_json_are_not_kept(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    """A reply sent as a plain JSON response can never be replayed: 80 of 1 MiB must not stay in the server.

    The byte budget is set high enough to hold them all, so it is not what keeps them out.
    """
    server = start_daphne(overrides={"MCP_GATEWAY_EVENT_BUFFER_BYTES": 512 * MiB})
    peer = await Peer(http, f"{server.url}/mcp-test/", alice_headers).open()

    async def call(request_id: int) -> None:
        response = await peer.post(jsonrpc("tools/call", {"name": "blob", "arguments": {"size": MiB}}, id=request_id))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert len(response.json()["result"]["content"][0]["text"]) == MiB

    for request_id in range(1, 6):  # the allocator's working set for replies this large
        await call(request_id)
    rss_before = server.rss_bytes()
    for request_id in range(6, 86):
        await call(request_id)
    growth = server.rss_bytes() - rss_before
    assert growth < 24 * MiB, f"the server grew by {growth / MiB:.0f} MiB for 80 replies of 1 MiB"
    assert (await peer.http.delete(peer.url, headers=peer.with_session())).status_code == 204


async def test_fifty_concurrent_sessions_with_colliding_ids_get_only_their_own_answers(
    daphne: Any, http: httpx2.AsyncClient, make_user: Any
) -> None:
    from .conftest import login_headers

    users = [await sync_to_async(make_user)(f"user{n}") for n in range(50)]
    headers = [await sync_to_async(login_headers)(user) for user in users]
    limits = httpx2.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        peers = [Peer(client, f"{daphne.url}/mcp/", h) for h in headers]
        async with anyio.create_task_group() as tg:
            for peer in peers:
                tg.start_soon(peer.open)
        results: dict[int, list[Any]] = {}

        async def calls(n: int, peer: Peer) -> None:
            results[n] = []
            for request_id in (1, 2, 3):  # every session uses the same ids
                text = f"user{n}-{request_id}"
                response = await peer.post(jsonrpc("tools/call", {"name": "echo", "arguments": {"text": text}}, id=1))
                reply = reply_of(response)
                results[n].append((reply["id"], reply["result"]["structuredContent"]["result"]))
            who = reply_of(await peer.post(jsonrpc("tools/call", {"name": "whoami", "arguments": {}}, id=1)))
            results[n].append(who["result"]["structuredContent"]["username"])

        async with anyio.create_task_group() as tg:
            for n, peer in enumerate(peers):
                tg.start_soon(calls, n, peer)
    for n in range(50):
        assert results[n] == [(1, f"user{n}-1"), (1, f"user{n}-2"), (1, f"user{n}-3"), f"user{n}"]


async def test_a_session_is_served_by_every_worker_and_revoked_from_anywhere(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str], redis_settings: Any
) -> None:
    from mcp_sessions.revocation import revoke

    home, other = start_daphne(overrides={**redis_settings, **SWEPT}), start_daphne(overrides=redis_settings)
    peer = await Peer(http, f"{home.url}/mcp-test/", alice_headers).open()
    elsewhere = Peer(http, f"{other.url}/mcp-test/", alice_headers, peer.session_id)

    whoami = jsonrpc("tools/call", {"name": "whoami", "arguments": {}}, id=2)
    assert reply_of(await elsewhere.post(whoami))["result"]["content"][0]["text"] == "alice"
    chatty = await elsewhere.post(jsonrpc("tools/call", {"name": "chatty", "arguments": {"steps": 2}}, id=3))
    assert [m.get("id") for _, m in sse_messages(chatty.text)] == [None, None, 3]

    async with http.stream("GET", elsewhere.url, headers=elsewhere.with_session()) as stream:
        assert stream.status_code == 200
        conflict = await http.get(peer.url, headers=peer.with_session())
        assert conflict.status_code == 409
        async with anyio.create_task_group() as tg:
            pending: dict[str, httpx2.Response] = {}

            async def slow_call() -> None:
                call = jsonrpc("tools/call", {"name": "sleep", "arguments": {"seconds": 30}}, id=4)
                pending["response"] = await elsewhere.post(call)

            tg.start_soon(slow_call)
            await client_sent(5)  # initialize, initialized, whoami, chatty and the slow call reached the session
            await sync_to_async(revoke)(McpSession.objects.filter(user=alice))
            with anyio.fail_after(BOUND):
                async for _ in stream.aiter_bytes():
                    pass  # the GET stream held by the other worker ends
        # The request waiting on the other worker is answered: its session is gone.
        assert pending["response"].status_code == 404
    assert (await elsewhere.post(whoami)).status_code == 404
    assert (await McpSession.objects.aget()).close_reason == CloseReason.REVOKED


async def test_a_cancelled_request_ends_its_stream_and_frees_its_id(peers: Any, alice: Any) -> None:
    alice_peer, _ = peers("/mcp-test/")
    await alice_peer.open()
    sleeping = asyncio.ensure_future(
        alice_peer.post(jsonrpc("tools/call", {"name": "sleep", "arguments": {"seconds": 60}}, id=11))
    )
    # Cancelling a request the server has not seen yet is ignored: repeat until the call's stream ends.
    async with asyncio.timeout(BOUND):
        while not sleeping.done():
            cancel = jsonrpc("notifications/cancelled", {"requestId": 11, "reason": "user"}, None)
            assert (await alice_peer.post(cancel)).status_code == 202
            await asyncio.wait({sleeping}, timeout=0.1)
    answer = reply_of(sleeping.result())
    assert answer["id"] == 11 and answer["error"]["code"] == -32800
    again = await alice_peer.post(jsonrpc("tools/call", {"name": "whoami", "arguments": {}}, id=11))
    assert reply_of(again)["result"]["content"][0]["text"] == "alice"
