"""Stream tickets: issued to an authenticated caller, opening one stream, once, from the origin that asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async

from mcp_sessions.ids import hash_token
from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, McpSession, StreamTicket
from mcp_sessions.revocation import login_session_hash

from .clients import BOUND, handshake, jsonrpc, raw_stream

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
