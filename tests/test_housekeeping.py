"""A worker's housekeeping survives what one client names itself: on PostgreSQL, through a real launcher.

PostgreSQL refuses a NUL in text. A client that put one in its
``clientInfo.name`` used to make every sweep of its worker fail, for every
session there: no activity saved, no revocation noticed, no idle expiry, and
its own record never closed.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from mcp_sessions.models import CloseReason, McpSession
from mcp_sessions.revocation import revoke_for_user

from .clients import INITIALIZE, INITIALIZED, RawStream, closed_session, handshake, jsonrpc, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)

# Sweeps every 0.2 s, so the test waits on them briefly.
SETTINGS = {"MCP_GATEWAY_PING_INTERVAL": 0.2}

NASTY_INFO = {"name": "evil\x00name\x07\x1b\u202e\x9b", "version": "1.0\x00\x01"}


@pytest.fixture(autouse=True)
def _postgresql() -> None:
    # SQLite stores a NUL; the CI runs the suite a second time on PostgreSQL, where this test counts.
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_ENGINE=postgresql), which refuses a NUL in text")


async def nasty_handshake(http: httpx2.AsyncClient, base_url: str, stream: RawStream, headers: dict[str, str]) -> None:
    initialize = {**INITIALIZE, "params": {**INITIALIZE["params"], "clientInfo": NASTY_INFO}}
    assert (await http.post(base_url + stream.endpoint, json=initialize, headers=headers)).status_code == 202
    assert "result" in await stream.next_message()
    assert (await http.post(base_url + stream.endpoint, json=INITIALIZED, headers=headers)).status_code == 202


async def record_where(within: float, condition: Any, **lookup: Any) -> McpSession:
    with anyio.fail_after(within):
        while not condition(record := await McpSession.objects.aget(**lookup)):
            await anyio.sleep(0.05)
    return record


async def test_a_nul_in_a_clients_name_breaks_no_sweep_and_the_record_shows_it_cleaned(
    start_daphne: Any,
    http: httpx2.AsyncClient,
    alice: Any,
    bob: Any,
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
) -> None:
    """The other sessions' activity is saved, and their revocation noticed, by the sweep; the nasty one closes.

    This process and the server share no channel layer: a revocation here reaches the server's sessions only
    through its sweep, which finds their records closed, as when the revocation's message is lost.
    """
    server = start_daphne(overrides=SETTINGS)
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as nasty:
        await nasty_handshake(http, server.url, nasty, alice_headers)  # first: the sweep writes it first
        async with raw_stream(http, f"{server.url}/mcp/sse", bob_headers) as other:
            await handshake(http, server.url, other, bob_headers)

            saved = await record_where(10, lambda r: r.messages_in == 2, user=bob)
            assert (saved.client_name, saved.closed_at) == ("raw-test", None)
            cleaned = await record_where(10, lambda r: r.messages_in == 2, user=alice)
            assert (cleaned.client_name, cleaned.client_version) == ("evilname", "1.0")

            assert await sync_to_async(revoke_for_user)(bob) == 1
            with anyio.fail_after(10):
                try:
                    while True:
                        await other.next_event(timeout=10)
                except EOFError:
                    pass  # ended by the server's sweep

        # The nasty session carries on, and its close, once its client leaves, reaches the record.
        response = await http.post(server.url + nasty.endpoint, json=jsonrpc("ping", id=5), headers=alice_headers)
        assert response.status_code == 202
        assert (await nasty.next_message())["id"] == 5
    record = await closed_session(user=alice)
    assert record.close_reason == CloseReason.CLIENT_DISCONNECT
    assert (record.client_name, record.messages_in) == ("evilname", 3)
