"""Stream tickets: issued to an authenticated caller, opening one stream, once, from the origin that asked."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.test import Client
from django.utils.crypto import get_random_string

from mcp_sessions.ids import hash_token
from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, McpSession, StreamTicket
from mcp_sessions.revocation import login_session_hash

from .clients import BOUND, RawStream, handshake, jsonrpc, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def get_ticket(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> str:
    response = await http.post(f"{url}/mcp/tickets", headers=headers, json={})
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["expires_in"] == 60
    return body["ticket"]


ISSUE_CASES = [
    ("cookie-with-csrf", lambda a, t: a, 201),
    ("cookie-without-csrf", lambda a, t: {"Cookie": a["Cookie"]}, 403),
    ("bearer-token", lambda a, t: {"Authorization": f"Bearer {t}"}, 201),
    ("no-credential", lambda a, t: {}, 401),
    ("foreign-origin", lambda a, t: {**a, "Origin": "http://evil.example"}, 403),
]


@pytest.mark.parametrize(("headers", "status"), [c[1:] for c in ISSUE_CASES], ids=[c[0] for c in ISSUE_CASES])
async def test_issuing_tickets(
    daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str], headers: Any, status: int
) -> None:
    _, token = await sync_to_async(AccessToken.objects.issue)(alice, "t")
    response = await http.post(f"{daphne.url}/mcp/tickets", headers=headers(alice_headers, token), json={})
    assert response.status_code == status
    if status == 201:
        ticket = response.json()["ticket"]
        stored = await StreamTicket.objects.aget()
        assert stored.ticket_hash == hash_token(ticket) and stored.user_id == alice.pk
        assert ticket not in str([v async for v in StreamTicket.objects.values()])


async def test_a_ticket_opens_a_stream_as_its_user_without_other_credentials(
    daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    ticket = await get_ticket(http, daphne.url, alice_headers)
    async with raw_stream(http, f"{daphne.url}/mcp/sse?ticket={ticket}") as stream:
        # The page then posts with its cookie and CSRF token, as fetch() does.
        await handshake(http, daphne.url, stream, alice_headers)
        call = jsonrpc("tools/call", {"name": "whoami", "arguments": {}}, id=2)
        assert (await http.post(daphne.url + stream.endpoint, json=call, headers=alice_headers)).status_code == 202
        assert (await stream.next_message())["result"]["structuredContent"]["username"] == "alice"
    record = await McpSession.objects.aget()
    # The session keeps the login the ticket was asked with, so logging out of it ends the stream.
    session_key = alice_headers["Cookie"].split(";")[0].split("=", 1)[1]
    assert record.user_id == alice.pk and record.login_session_hash == login_session_hash(session_key)


async def reuse(http: httpx2.AsyncClient, url: str, ticket: str) -> dict[str, str]:
    async with raw_stream(http, f"{url}/mcp/sse?ticket={ticket}"):
        pass
    return {}


async def nothing(http: httpx2.AsyncClient, url: str, ticket: str) -> dict[str, str]:
    return {}


Spoil = Callable[[httpx2.AsyncClient, str, str], Awaitable[dict[str, str]]]
REFUSED: list[tuple[str, Spoil, Callable[[str], str]]] = [
    ("replayed", reuse, lambda t: t),
    ("unknown", nothing, lambda t: "mst_" + "A" * 43),
    ("malformed", nothing, lambda t: "abc"),
]


@pytest.mark.parametrize(("spoil", "present"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_bad_tickets_are_401_and_audited(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], spoil: Spoil, present: Callable[[str], str]
) -> None:
    ticket = await get_ticket(http, daphne.url, alice_headers)
    headers = await spoil(http, daphne.url, ticket)
    response = await http.get(f"{daphne.url}/mcp/sse?ticket={present(ticket)}", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["data"]["reason"] == "invalid_ticket"
    assert 'error="invalid_ticket"' in response.headers["www-authenticate"]
    with anyio.fail_after(BOUND):
        while not await AuditEvent.objects.filter(kind=AuditKind.INVALID_TICKET).aexists():
            await anyio.sleep(0.05)


async def test_expired_ticket_is_refused(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_TICKET_LIFETIME": 0.3})
    response = await http.post(f"{server.url}/mcp/tickets", headers=alice_headers, json={})
    ticket = response.json()["ticket"]
    await anyio.sleep(0.5)
    assert (await http.get(f"{server.url}/mcp/sse?ticket={ticket}")).status_code == 401


async def test_a_ticket_asked_from_one_origin_is_refused_from_another(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    app = "http://app.example"  # a second origin the guard allows, so only the ticket's binding can refuse it
    server = start_daphne(overrides={"MCP_GATEWAY_ALLOWED_ORIGINS": [app]})
    site = {"Origin": server.url}
    ticket = await get_ticket(http, server.url, {**alice_headers, **site})
    refused = await http.get(f"{server.url}/mcp/sse?ticket={ticket}", headers={"Origin": app})
    assert refused.status_code == 401 and refused.json()["error"]["data"]["reason"] == "invalid_ticket"
    # From the origin that asked, or with no Origin at all (a same-origin EventSource sends none), it opens.
    for headers in (site, {}):
        ticket = await get_ticket(http, server.url, {**alice_headers, **site})
        async with raw_stream(http, f"{server.url}/mcp/sse?ticket={ticket}", headers):
            pass


async def test_tickets_can_be_required_for_browsers(
    start_daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_REQUIRE_TICKET_FOR_BROWSERS": True})
    site = {"Origin": server.url}
    refused = await http.get(f"{server.url}/mcp/sse", headers={**alice_headers, **site})
    assert refused.status_code == 401 and refused.json()["error"]["data"]["reason"] == "ticket_required"
    ticket = await get_ticket(http, server.url, {**alice_headers, **site})
    async with raw_stream(http, f"{server.url}/mcp/sse?ticket={ticket}", site):
        pass
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers):  # no Origin: not a browser
        pass


# A ticket dies with the login it was issued under


def logged_in(user: Any) -> tuple[Client, dict[str, str]]:
    """A login of ``user`` (the client that can log it out), and the headers a page sends with it."""
    client = Client()
    client.force_login(user)
    csrf = get_random_string(32)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.session.session_key}; {settings.CSRF_COOKIE_NAME}={csrf}"
    return client, {"Cookie": cookie, "X-CSRFToken": csrf}


def log_out(client: Client, user: Any) -> None:
    client.logout()


def change_password(client: Client, user: Any) -> None:
    user.set_password("changed")
    user.save()


def change_password_in_bulk(client: Client, user: Any) -> None:
    """Without signals: only the session auth hash the ticket remembers can tell."""
    type(user).objects.filter(pk=user.pk).update(password=make_password("changed"))


def delete_login_session(client: Client, user: Any) -> None:
    """The login ends without the logout signal (expired and cleared, deleted by hand)."""
    import_module(settings.SESSION_ENGINE).SessionStore(client.session.session_key).delete()


# (id, asked for with, what happens before it is used, status of the stream, then of a POST with that credential)
LOGIN_CASES: list[tuple[str, str, Callable[[Client, Any], None] | None, int, int | None]] = [
    ("unchanged", "login", None, 200, 202),
    ("after-logout", "login", log_out, 401, None),
    ("after-password-change", "login", change_password, 401, None),
    ("after-password-change-bypassing-signals", "login", change_password_in_bulk, 401, None),
    ("asked-with-a-token-after-password-change", "bearer", change_password, 200, 202),
    ("login-session-deleted-without-a-signal", "login", delete_login_session, 200, 401),
]


@pytest.mark.parametrize(
    ("asked_with", "spoil", "stream_status", "post_status"),
    [c[1:] for c in LOGIN_CASES],
    ids=[c[0] for c in LOGIN_CASES],
)
async def test_a_ticket_dies_with_its_login(
    daphne: Any,
    http: httpx2.AsyncClient,
    alice: Any,
    asked_with: str,
    spoil: Callable[[Client, Any], None] | None,
    stream_status: int,
    post_status: int | None,
) -> None:
    client, login = await sync_to_async(logged_in)(alice)
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "t")
    headers = login if asked_with == "login" else {"Authorization": f"Bearer {secret}"}
    ticket = await get_ticket(http, daphne.url, headers)
    stored = await StreamTicket.objects.aget()
    if asked_with == "login":  # what it remembers of the login: only hashes
        auth_hash = alice.get_session_auth_hash()
        assert stored.session_auth_hash == hashlib.sha256(auth_hash.encode()).hexdigest() != auth_hash
    if spoil is not None:
        await sync_to_async(spoil)(client, alice)
    async with http.stream("GET", f"{daphne.url}/mcp/sse?ticket={ticket}") as response:
        assert response.status_code == stream_status  # (a stream that opened cannot be read to its end)
        if stream_status != 200:
            assert 'error="invalid_ticket"' in response.headers["www-authenticate"]
            return
        stream = RawStream(response)
        event, stream.endpoint = await stream.next_event()
        assert event == "endpoint"
        # Nothing reaches the session but with a credential that still holds.
        post = await http.post(daphne.url + stream.endpoint, json=jsonrpc("ping", id=1), headers=headers)
        assert post.status_code == post_status, post.text
        if post_status == 202:
            assert (await stream.next_message())["id"] == 1
