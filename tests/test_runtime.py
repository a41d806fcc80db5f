"""Session hosts in-process: what the worker's sweep saves to the session record, and when."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from mcp_gateway import runtime
from mcp_gateway.auth import authenticate
from mcp_gateway.conf import gateway_settings
from mcp_gateway.http import GatewayRequest
from mcp_gateway.routing import Mount
from mcp_sessions.models import AccessToken, CloseReason, McpSession, Transport

from .asgi_helpers import http_scope

pytestmark = pytest.mark.django_db(transaction=True)

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "sweep-test", "version": "1.0"},
    },
}


async def _started_host(user: Any) -> runtime.SessionHost:
    _, secret = await sync_to_async(AccessToken.objects.issue)(user, "agent")
    request = GatewayRequest(http_scope(headers=[("Authorization", f"Bearer {secret}")]))
    host, _ = await runtime.open_session(
        layer=get_channel_layer(),
        mount=Mount("/mcp/", gateway_settings.SERVER),
        request=request,
        credential=await authenticate(request),
        transport=Transport.STREAMABLE_HTTP,
    )
    host.start()
    await host.receive_message({"type": "mcp.inbound", "body": json.dumps(INITIALIZE)})
    for _ in range(100):  # the server loop answers on its own task
        if host.actor is not None and host.actor.activity.messages_out:
            break
        await asyncio.sleep(0.01)
    return host


async def test_a_sweep_saves_only_what_changed_since_the_last_one(alice: Any) -> None:
    host = await _started_host(alice)
    try:
        await runtime.Sweeper().sweep()
        record = await McpSession.objects.aget(pk=host.pk)
        assert (record.client_name, record.client_version, record.protocol_version) == (
            "sweep-test",
            "1.0",
            "2025-11-25",
        )
        assert (record.messages_in, record.messages_out) == (1, 1)
        assert host.pending_activity() is None

        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        await host.receive_message({"type": "mcp.inbound", "body": json.dumps(ping)})
        assert set(host.pending_activity() or {}) >= {"messages_in", "last_seen_at"}
        assert "client_name" not in (host.pending_activity() or {})
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


async def test_activity_reaches_the_record_when_it_closed_just_before_a_sweep(alice: Any) -> None:
    """A client's DELETE closes the record before its host hears of it; the sweep's write is then refused.

    The activity must still reach the record: the host writes all of it when it finishes.
    """
    host = await _started_host(alice)
    await McpSession.objects.filter(pk=host.pk).aupdate(closed_at=timezone.now(), close_reason=CloseReason.TERMINATED)
    await runtime.Sweeper().sweep()
    await asyncio.wait_for(host.close(CloseReason.TERMINATED), 5)
    record = await McpSession.objects.aget(pk=host.pk)
    assert record.close_reason == CloseReason.TERMINATED
    assert (record.client_name, record.protocol_version) == ("sweep-test", "2025-11-25")
    assert (record.messages_in, record.messages_out) == (1, 1)


async def test_a_failed_sweep_loses_no_activity(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    host = await _started_host(alice)
    try:

        def unavailable(changes: dict[int, Any]) -> set[int]:
            raise ConnectionError("database unavailable")

        with monkeypatch.context() as patched:
            patched.setattr(McpSession.objects, "record_activity", unavailable)
            with pytest.raises(ConnectionError):
                await runtime.Sweeper().sweep()
        await runtime.Sweeper().sweep()
        record = await McpSession.objects.aget(pk=host.pk)
        assert (record.client_name, record.messages_in) == ("sweep-test", 1)
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)
