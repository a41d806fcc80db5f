"""Worker leases: sessions of a worker killed with SIGKILL are detected, refused and closed."""

from __future__ import annotations

import signal
from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest
from django.utils import timezone

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import CloseReason, McpSession, Worker

from .clients import handshake, jsonrpc, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = {"MCP_GATEWAY_LEASE_TIMEOUT": 1.5, "MCP_GATEWAY_MAX_SESSIONS_PER_USER": 1}


async def test_sigkilled_workers_sessions_are_refused_closed_and_freed(
    start_daphne: Any,
    http: httpx2.AsyncClient,
    alice: Any,
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
) -> None:
    doomed, survivor = start_daphne(overrides=LEASE), start_daphne(overrides=LEASE)
    async with raw_stream(http, f"{survivor.url}/mcp/sse", bob_headers) as bobs:  # the survivor's lease is running
        await handshake(http, survivor.url, bobs, bob_headers)
        async with raw_stream(http, f"{doomed.url}/mcp/sse", alice_headers) as alices:
            await handshake(http, doomed.url, alices, alice_headers)
            endpoint = alices.endpoint
            assert (await http.get(f"{survivor.url}/mcp/sse", headers=alice_headers)).status_code == 429
            doomed.stop(signal.SIGKILL)

        # Within the lease (plus a heartbeat) the lost session is refused on the live worker...
        with anyio.fail_after(5):
            while (
                await http.post(survivor.url + endpoint, json=jsonrpc("ping"), headers=alice_headers)
            ).status_code != 404:
                await anyio.sleep(0.1)
        # ...its record is closed by the survivor's sweep...
        with anyio.fail_after(5):
            while (record := await McpSession.objects.aget(user=alice)).closed_at is None:
                await anyio.sleep(0.1)
        assert record.close_reason == CloseReason.WORKER_LOST
        # ...and alice's slot is free again, while bob's session on the survivor carries on.
        async with raw_stream(http, f"{survivor.url}/mcp/sse", alice_headers):
            pass
        await handshake(http, survivor.url, bobs, bob_headers)
        assert (await McpSession.objects.aget(user__username="bob")).closed_at is None


def test_leased_and_orphaned_querysets(alice: Any) -> None:
    now = timezone.now()
    alive = Worker.objects.create(id="a" * 32, hostname="h", pid=1, heartbeat_at=now)
    dead = Worker.objects.create(id="d" * 32, hostname="h", pid=2, heartbeat_at=now - timedelta(seconds=60))

    def session(worker: Worker | None) -> McpSession:
        return McpSession.objects.create(
            user=alice, id_hash=hash_session_id(new_session_id()), server="/mcp/", transport="sse",
            channel_name="c", worker=worker,
        )  # fmt: skip

    on_alive, on_dead, unowned = session(alive), session(dead), session(None)
    assert set(McpSession.objects.leased(45)) == {on_alive, unowned}
    assert list(McpSession.objects.orphaned(45)) == [on_dead]


def test_a_forked_process_takes_a_worker_id_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Siblings forked from one parent must not share an id: each one's heartbeat would close the others' sessions."""
    from mcp_gateway import lease as lease_module

    lease = lease_module.WorkerLease(start=lambda coro: pytest.fail("nothing starts here"), live_sessions=set)
    parent = lease.worker_id
    assert lease.worker_id == parent  # the same process keeps it
    real_pid = lease_module.os.getpid()
    monkeypatch.setattr(lease_module.os, "getpid", lambda: real_pid + 1)
    child = lease.worker_id
    assert child != parent
    assert lease.worker_id == child
