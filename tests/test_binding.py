"""Session binding: the seed PR's six cases, hijack attempts by another user, and the database-free path."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from demo.models import Note
from mcp_gateway import identity
from mcp_gateway.auth import Credential, authenticate
from mcp_gateway.binding import bind
from mcp_gateway.conf import gateway_settings
from mcp_gateway.credcache import credential_cache
from mcp_gateway.http import GatewayRequest
from mcp_gateway.identity import pinned_session
from mcp_gateway.mounts import Mount
from mcp_gateway.opening import open_session
from mcp_sessions.ids import hash_session_id, is_well_formed, new_session_id
from mcp_sessions.models import AccessToken, CloseReason, McpSession, Transport

from .asgi_helpers import http_scope
from .clients import INITIALIZE, INITIALIZED, handshake, jsonrpc, mcp_client, raw_stream
from .conftest import Daphne, login_headers

pytestmark = pytest.mark.django_db(transaction=True)


# The seed PR's six


async def test_session_id_is_the_records_key_and_stored_only_hashed(
    daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
        session_id = stream.session_id
        record = await McpSession.objects.aget(user=alice)
        assert record.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
        assert await McpSession.objects.filter(id_hash=hash_session_id(session_id)).acount() == 1

        def stored_anywhere() -> bool:
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM mcp_sessions_mcpsession")
                return any(session_id in str(value) for row in cursor.fetchall() for value in row)

        assert not await sync_to_async(stored_anywhere)()


async def test_concurrent_connections_get_unique_random_ids(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    ids: list[str] = []

    async def connect() -> None:
        async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
            ids.append(stream.session_id)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(connect)
    assert len(set(ids)) == 20
    assert all(is_well_formed(session_id) for session_id in ids)
    # 43 url-safe base64 characters: 256 random bits, sharing no common prefix.
    assert len({session_id[:8] for session_id in ids}) == 20


async def test_missing_session_id_is_400(daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]) -> None:
    response = await http.post(f"{daphne.url}/mcp/messages/", json=jsonrpc("ping"), headers=alice_headers)
    assert response.status_code == 400


async def test_bogus_session_id_is_404(daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]) -> None:
    response = await http.post(
        f"{daphne.url}/mcp/messages/?session_id={'A' * 43}", json=jsonrpc("ping"), headers=alice_headers
    )
    assert response.status_code == 404


async def test_each_post_reaches_the_session_it_names(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    async with (
        raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as first,
        raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as second,
    ):
        for stream in (first, second):
            await handshake(http, daphne.url, stream, alice_headers)
        for stream, text in ((first, "to-first"), (second, "to-second")):
            call = jsonrpc("tools/call", {"name": "echo", "arguments": {"text": text}}, id=1)
            response = await http.post(daphne.url + stream.endpoint, json=call, headers=alice_headers)
            assert response.status_code == 202
        assert (await first.next_message())["result"]["structuredContent"] == {"result": "to-first"}
        assert (await second.next_message())["result"]["structuredContent"] == {"result": "to-second"}


async def test_fifty_concurrent_clients_with_identical_request_ids_get_only_their_own_results(
    daphne: Any, make_user: Any
) -> None:
    users = [await sync_to_async(make_user)(f"user{i}") for i in range(5)]
    headers = [await sync_to_async(login_headers)(user) for user in users]
    results: dict[int, list[tuple[str, str]]] = {}

    async def run(client_no: int) -> None:
        # Every client numbers its requests from the same start, so JSON-RPC ids collide across sessions.
        user_no = client_no % len(users)
        async with mcp_client(daphne.url, headers[user_no]) as client:
            mine = []
            for call_no in range(3):
                text = f"client{client_no}-call{call_no}"
                echoed = await client.call_tool("echo", {"text": text})
                who = await client.call_tool("whoami", {})
                mine.append((echoed.structured_content["result"], who.structured_content["username"]))
            results[client_no] = mine

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for client_no in range(50):
                tg.start_soon(run, client_no)

    assert len(results) == 50
    for client_no, mine in results.items():
        assert mine == [(f"client{client_no}-call{n}", f"user{client_no % len(users)}") for n in range(3)]


# Hijack attempts


async def test_other_user_cannot_inject_a_tool_call(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], bob_headers: dict[str, str]
) -> None:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, daphne.url, stream, alice_headers)
        call = jsonrpc("tools/call", {"name": "add_note", "arguments": {"title": "from bob"}}, id=99)
        response = await http.post(daphne.url + stream.endpoint, json=call, headers=bob_headers)
        assert response.status_code == 404
        # Alice's stream carries nothing for Bob's request; her next reply is her own.
        ping = await http.post(daphne.url + stream.endpoint, json=jsonrpc("ping", id=5), headers=alice_headers)
        assert ping.status_code == 202
        assert (await stream.next_message())["id"] == 5
    assert await Note.objects.acount() == 0


async def test_stream_opened_with_anothers_session_id_gets_nothing_of_theirs(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], bob_headers: dict[str, str]
) -> None:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as alices:
        await handshake(http, daphne.url, alices, alice_headers)
        url = f"{daphne.url}/mcp/sse?session_id={alices.session_id}"
        async with raw_stream(http, url, bob_headers) as bobs:
            assert bobs.session_id != alices.session_id  # the parameter is ignored: Bob gets a session of his own
            call = jsonrpc("tools/call", {"name": "whoami", "arguments": {}}, id=1)
            assert (await http.post(daphne.url + alices.endpoint, json=call, headers=alice_headers)).status_code == 202
            assert (await alices.next_message())["result"]["structuredContent"]["username"] == "alice"
            with pytest.raises(TimeoutError):
                await bobs.next_event(timeout=0.5)


async def test_no_cookie_gets_401(daphne: Any, http: httpx2.AsyncClient) -> None:
    response = await http.get(f"{daphne.url}/mcp/sse")
    assert response.status_code == 401
    assert json.loads(response.content)["error"]["data"]["reason"] == "authentication_required"


# The database-free path: a session in this worker, reached with the credential that opened it


class NoFingerprintAuthenticator:
    """A custom authenticator that cannot name credentials without I/O."""

    scheme = "custom"

    def challenge(self) -> str:
        return 'Custom realm="mcp"'

    async def authenticate(self, request: GatewayRequest) -> Credential | None:
        return None


def _headers_for(kind: str, secrets: dict[str, str], cookies: dict[str, dict[str, str]]) -> dict[str, str]:
    if kind in cookies:
        return cookies[kind]
    return {"Authorization": f"Bearer {secrets[kind]}"}


# (id, opened with, request credential, what to change, admitted?)
PINNED_CASES = [
    ("same-token", "alice-token", "alice-token", None, True),
    ("same-login", "alice-login", "alice-login", None, True),
    ("another-token-of-the-owner", "alice-token", "alice-token-2", None, False),
    ("the-owners-login-for-a-token-session", "alice-token", "alice-login", None, False),
    ("another-users-token", "alice-token", "bob-token", None, False),
    ("another-users-login", "alice-login", "bob-login", None, False),
    ("a-bearer-header-decides-over-the-cookie", "alice-login", "alice-login+bob-token", None, False),
    ("malformed-token", "alice-token", "garbage-token", None, False),
    ("no-credential", "alice-token", "none", None, False),
    ("unknown-session-id", "alice-token", "alice-token", "other-id", False),
    ("another-mount", "alice-token", "alice-token", "other-mount", False),
    ("another-transport", "alice-token", "alice-token", "other-transport", False),
    ("check-older-than-recheck-interval", "alice-token", "alice-token", "stale", False),
    ("recheck-disabled", "alice-token", "alice-token", "recheck-0", False),
    ("session-ending", "alice-token", "alice-token", "ending", False),
    ("authenticator-without-fingerprints-first", "alice-token", "alice-token", "custom-first", False),
]


@pytest.mark.parametrize(
    ("opened_with", "presented", "change", "admitted"),
    [case[1:] for case in PINNED_CASES],
    ids=[case[0] for case in PINNED_CASES],
)
async def test_pinned_session_admits_only_the_opening_credential_while_fresh(
    alice: Any, bob: Any, opened_with: str, presented: str, change: str | None, admitted: bool
) -> None:
    secrets = {
        "alice-token": (await sync_to_async(AccessToken.objects.issue)(alice, "one"))[1],
        "alice-token-2": (await sync_to_async(AccessToken.objects.issue)(alice, "two"))[1],
        "bob-token": (await sync_to_async(AccessToken.objects.issue)(bob, "bob"))[1],
        "garbage-token": "not-a-token",
    }
    cookies = {
        "alice-login": await sync_to_async(login_headers)(alice),
        "bob-login": await sync_to_async(login_headers)(bob),
        "none": {},
    }
    cookies["alice-login+bob-token"] = {**cookies["alice-login"], "Authorization": f"Bearer {secrets['bob-token']}"}

    opener = GatewayRequest(http_scope(headers=_headers_for(opened_with, secrets, cookies).items()))
    credential = await authenticate(opener)
    mount = Mount("/mcp/", gateway_settings.SERVER)
    host, session_id = await open_session(
        layer=get_channel_layer(), mount=mount, request=opener, credential=credential, transport=Transport.SSE
    )
    try:
        server, transport = "/mcp/", Transport.SSE
        if change == "other-id":
            session_id = new_session_id()
        elif change == "other-mount":
            server = "/other/"
        elif change == "other-transport":
            transport = Transport.STREAMABLE_HTTP
        elif change == "stale":
            host.pin.checked_at -= gateway_settings.RECHECK_INTERVAL + 1
        elif change == "ending":
            host.close_soon(CloseReason.REVOKED)
        request = GatewayRequest(http_scope(method="POST", headers=_headers_for(presented, secrets, cookies).items()))
        overrides: dict[str, Any] = {}
        if change == "recheck-0":
            overrides["MCP_GATEWAY_RECHECK_INTERVAL"] = 0
        if change == "custom-first":
            overrides["MCP_GATEWAY_AUTHENTICATORS"] = (
                "tests.test_binding.NoFingerprintAuthenticator",
                *gateway_settings.AUTHENTICATORS,
            )
        with override_settings(**overrides):
            pinned = pinned_session(request, session_id, server=server, transport=transport)
        if admitted:
            assert pinned is not None
            assert pinned.user.pk == alice.pk
            assert (
                pinned.session is not None
                and pinned.session.pk == host.pk
                and pinned.session.channel_name == host.inbox
            )
        else:
            assert pinned is None
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


async def test_a_full_check_renews_the_pin_only_for_the_opening_credential(alice: Any) -> None:
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "one")
    _, other = await sync_to_async(AccessToken.objects.issue)(alice, "two")
    opener = GatewayRequest(http_scope(headers=[("Authorization", f"Bearer {secret}")]))
    credential = await authenticate(opener)
    mount = Mount("/mcp/", gateway_settings.SERVER)
    host, session_id = await open_session(
        layer=get_channel_layer(), mount=mount, request=opener, credential=credential, transport=Transport.SSE
    )
    try:
        host.pin.checked_at -= gateway_settings.RECHECK_INTERVAL + 1
        request = GatewayRequest(http_scope(method="POST", headers=[("Authorization", f"Bearer {secret}")]))
        assert pinned_session(request, session_id, server="/mcp/", transport=Transport.SSE) is None

        # Another credential of the owner passes the full check but does not renew the pin ...
        second = GatewayRequest(http_scope(method="POST", headers=[("Authorization", f"Bearer {other}")]))
        await bind(second, await authenticate(second), session_id, server="/mcp/", transport=Transport.SSE)
        assert pinned_session(request, session_id, server="/mcp/", transport=Transport.SSE) is None

        # ... the opening one does.
        await bind(request, await authenticate(request), session_id, server="/mcp/", transport=Transport.SSE)
        assert pinned_session(request, session_id, server="/mcp/", transport=Transport.SSE) is not None
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


@pytest.mark.parametrize("revoked", [False, True], ids=["valid-credential-renewed", "revoked-credential-lapses"])
# An interval long enough that the pin, moved into its last tenth, cannot lapse while a loaded machine runs the test.
@override_settings(MCP_GATEWAY_RECHECK_INTERVAL=60)
async def test_a_pin_in_its_last_quarter_is_rechecked_off_the_requests_path(alice: Any, revoked: bool) -> None:
    token, secret = await sync_to_async(AccessToken.objects.issue)(alice, "one")
    opener = GatewayRequest(http_scope(headers=[("Authorization", f"Bearer {secret}")]))
    mount = Mount("/mcp/", gateway_settings.SERVER)
    host, session_id = await open_session(
        layer=get_channel_layer(), mount=mount, request=opener, credential=await authenticate(opener), transport="sse"
    )
    try:
        host.pin.checked_at -= gateway_settings.RECHECK_INTERVAL * 0.9
        last_check = host.pin.checked_at
        if revoked:  # in bulk: no signal ends the session, only the database check can see it
            await AccessToken.objects.filter(pk=token.pk).aupdate(revoked_at=timezone.now())
        request = GatewayRequest(http_scope(method="POST", headers=[("Authorization", f"Bearer {secret}")]))
        # Still within the interval: admitted at once, and the check runs in the background.
        assert pinned_session(request, session_id, server="/mcp/", transport=Transport.SSE) is not None
        assert host.pin.renewing and len(identity._renewals) == 1
        assert pinned_session(request, session_id, server="/mcp/", transport=Transport.SSE) is not None
        assert len(identity._renewals) == 1, "one check at a time"
        await asyncio.gather(*identity._renewals)
        assert not host.pin.renewing
        if revoked:
            assert host.pin.checked_at == last_check
        else:
            assert host.pin.checked_at > last_check + gateway_settings.RECHECK_INTERVAL * 0.8
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


async def test_out_of_band_token_revocation_is_seen_within_the_recheck_interval(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any
) -> None:
    """A bulk update fires no signal, so nothing ends the session; the next database check refuses the token."""
    token, secret = await sync_to_async(AccessToken.objects.issue)(alice, "agent")
    server = start_daphne(overrides={"MCP_GATEWAY_RECHECK_INTERVAL": 0.5})
    headers = {"Authorization": f"Bearer {secret}"}
    async with raw_stream(http, f"{server.url}/mcp/sse", headers) as stream:
        first = await http.post(server.url + stream.endpoint, json=jsonrpc("ping", id=1), headers=headers)
        assert first.status_code == 202
        await AccessToken.objects.filter(pk=token.pk).aupdate(revoked_at=timezone.now())
        await anyio.sleep(0.6)
        late = await http.post(server.url + stream.endpoint, json=jsonrpc("ping", id=2), headers=headers)
    assert late.status_code == 401


# CSRF follows what each request presents, not what opened its session


@pytest.fixture(scope="module")
def pinning_daphne(django_db_setup: None, django_db_blocker: Any) -> Iterator[Daphne]:
    """A server whose pins outlast any test, so a request presenting the opening credential is surely pinned."""
    server = Daphne(overrides={"MCP_GATEWAY_RECHECK_INTERVAL": 600.0})
    yield server
    server.stop()


STREAMABLE_ACCEPT = {"Accept": "application/json, text/event-stream"}
NOTIFICATION = jsonrpc("notifications/roots/list_changed", id=None)


@contextlib.asynccontextmanager
async def opened_session(
    http: httpx2.AsyncClient, url: str, opened_with: str, transport: str, creds: dict[str, dict[str, str]]
) -> AsyncIterator[Callable[[dict[str, str]], Awaitable[httpx2.Response]]]:
    """A session opened as ``opened_with``, its handshake done with that credential; yields a POST to it."""
    opener = creds["ticket-opener" if opened_with.startswith("ticket") else opened_with]
    if transport == "sse":
        if opened_with.startswith("ticket"):
            response = await http.post(f"{url}/mcp/tickets", headers=opener, json={})
            assert response.status_code == 201, response.text
            stream_url, stream_headers = f"{url}/mcp/sse?ticket={response.json()['ticket']}", {}
        else:
            stream_url, stream_headers = f"{url}/mcp/sse", opener
        async with raw_stream(http, stream_url, stream_headers) as stream:
            # The handshake, with what the page posts with: it confirms the pin (a login ticket's at once).
            await handshake(http, url, stream, opener)

            async def post_sse(headers: dict[str, str]) -> httpx2.Response:
                return await http.post(url + stream.endpoint, json=NOTIFICATION, headers=headers)

            yield post_sse
        return
    response = await http.post(f"{url}/mcp/", json=INITIALIZE, headers={**opener, **STREAMABLE_ACCEPT})
    assert response.status_code == 200, response.text
    session = {"Mcp-Session-Id": response.headers["mcp-session-id"], **STREAMABLE_ACCEPT}
    response = await http.post(f"{url}/mcp/", json=INITIALIZED, headers={**opener, **session})
    assert response.status_code == 202, response.text

    async def post_streamable(headers: dict[str, str]) -> httpx2.Response:
        return await http.post(f"{url}/mcp/", json=NOTIFICATION, headers={**headers, **session})

    try:
        yield post_streamable
    finally:
        await http.delete(f"{url}/mcp/", headers={**opener, **session})


# (opened with, transport); tickets open HTTP+SSE streams only
OPENED = [
    ("ticket-from-login", "sse"),
    ("ticket-from-bearer", "sse"),
    ("login", "sse"),
    ("login", "streamable_http"),
    ("bearer", "sse"),
    ("bearer", "streamable_http"),
]
# (what the POST presents, status, reason)
POSTED = [
    ("cookie-without-csrf", 403, "csrf_failed"),
    ("cookie-with-csrf", 202, None),
    ("bearer", 202, None),
    ("another-users-cookie-with-csrf", 404, "session_not_found"),
]
CSRF_CASES = [(o, t, p, s, r) for o, t in OPENED for p, s, r in POSTED]


@pytest.mark.parametrize(
    ("opened_with", "transport", "posted", "status", "reason"),
    CSRF_CASES,
    ids=[f"{o}-{t}-then-{p}" for o, t, p, _, _ in CSRF_CASES],
)
async def test_every_cookie_post_passes_the_csrf_check_whatever_opened_the_session(
    pinning_daphne: Daphne,
    http: httpx2.AsyncClient,
    alice: Any,
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
    opened_with: str,
    transport: str,
    posted: str,
    status: int,
    reason: str | None,
) -> None:
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "agent")
    bearer = {"Authorization": f"Bearer {secret}"}
    creds = {
        "login": alice_headers,
        "bearer": bearer,
        "ticket-opener": bearer if opened_with == "ticket-from-bearer" else alice_headers,
        "cookie-without-csrf": {"Cookie": alice_headers["Cookie"].split(";")[0]},
        "cookie-with-csrf": alice_headers,
        "another-users-cookie-with-csrf": bob_headers,
    }
    async with opened_session(http, pinning_daphne.url, opened_with, transport, creds) as post:
        response = await post(creds[posted])
        assert response.status_code == status, response.text
        if reason is not None:
            assert response.json()["error"]["data"]["reason"] == reason
        # The session's own credential still gets through afterwards.
        assert (
            await post(creds["ticket-opener" if opened_with.startswith("ticket") else opened_with])
        ).status_code == 202


# Unknown and foreign sessions: the same steps until the answer (the issue's item 11)


async def test_unknown_and_foreign_sessions_take_the_same_steps_until_answered(
    alice: Any, bob: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same queries, same answer; the foreign one's audit event is logged and queued only after the answer."""
    from django.db.backends.utils import CursorWrapper

    from mcp_sessions import audit

    from .asgi import application
    from .asgi_helpers import Recorder

    steps: list[tuple[str, str]] = []
    execute = CursorWrapper.execute

    def noting_execute(self: CursorWrapper, sql: str, params: Any = None) -> Any:
        if "mcp_sessions_auditevent" not in sql:  # the audit batch writer, later, off any request's path
            steps.append(("query", sql))
        return execute(self, sql, params)

    record = audit.record

    def noting_record(kind: str, **fields: Any) -> None:
        steps.append(("audit", kind))
        record(kind, **fields)

    monkeypatch.setattr(CursorWrapper, "execute", noting_execute)
    monkeypatch.setattr(audit, "record", noting_record)
    foreign_id = new_session_id()
    await McpSession.objects.acreate(
        user=bob, id_hash=hashlib.sha256(foreign_id.encode()).hexdigest(), server="/mcp/", transport="sse"
    )
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "probe")
    body = json.dumps(jsonrpc("ping")).encode()

    async def probe(session_id: str) -> tuple[list[tuple[str, str]], Recorder]:
        steps.clear()
        credential_cache.clear()  # each probe authenticates in full, not from the first one's check
        headers = [("Authorization", f"Bearer {secret}"), ("Content-Type", "application/json")]
        scope = http_scope("POST", "/mcp/messages/", headers=headers, query=f"session_id={session_id}")
        recorder = Recorder([body])

        async def send(message: Any) -> None:
            steps.append(("send", message["type"]))
            await recorder.send(message)

        await application(scope, recorder.receive, send)
        assert recorder.status == 404
        return steps[:], recorder

    await probe(new_session_id())  # the token's first use is noted in the database: not part of the comparison
    unknown, unknown_answer = await probe(new_session_id())
    foreign, foreign_answer = await probe(foreign_id)
    with anyio.fail_after(5):
        while ("audit", "foreign_session") not in steps:
            await anyio.sleep(0.01)
    assert unknown_answer.body == foreign_answer.body
    assert foreign == unknown
    assert len([step for step in unknown if step[0] == "query"]) >= 3, "authentication and the two lookups"
    assert unknown[-1] == ("send", "http.response.body") and not any(kind == "audit" for kind, _ in unknown)
    assert steps[len(foreign) :] == [("audit", "foreign_session")], "recorded once, after the answer"
