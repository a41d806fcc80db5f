"""Session hosts in-process: the worker's one inbox, and what its sweep saves to the session records."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.utils import timezone

from mcp_gateway import runtime
from mcp_gateway.auth import authenticate
from mcp_gateway.conf import gateway_settings
from mcp_gateway.exceptions import SessionNotFound
from mcp_gateway.http import GatewayRequest
from mcp_gateway.routing import Mount
from mcp_sessions.models import AccessToken, CloseReason, McpSession, Transport
from mcp_sessions.revocation import revoke

from .asgi_helpers import http_scope
from .clients import until

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


async def _host(user: Any, layer: BaseChannelLayer | None = None) -> runtime.SessionHost:
    _, secret = await sync_to_async(AccessToken.objects.issue)(user, "agent")
    request = GatewayRequest(http_scope(headers=[("Authorization", f"Bearer {secret}")]))
    host, _ = await runtime.open_session(
        layer=layer or get_channel_layer(),
        mount=Mount("/mcp/", gateway_settings.SERVER),
        request=request,
        credential=await authenticate(request),
        transport=Transport.STREAMABLE_HTTP,
    )
    return host


async def _started_host(user: Any) -> runtime.SessionHost:
    host = await _host(user)
    host.start()
    await host.receive_message({"type": "mcp.inbound", "body": json.dumps(INITIALIZE)})
    # The server loop answers on its own task.
    await until(lambda: host.actor is not None and host.actor.activity.messages_out > 0, "the initialize answer")
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


# The worker's one inbox


async def test_a_workers_sessions_share_one_address_and_no_channel_queue(alice: Any) -> None:
    layer = InMemoryChannelLayer()
    hosts = [await _host(alice, layer) for _ in range(3)]
    try:
        for host in hosts:
            host.start()
        await until(lambda: bool(layer.channels), "the worker inbox listening")
        records = [await McpSession.objects.aget(pk=host.pk) for host in hosts]
        assert len({record.channel_name for record in records}) == 1
        assert {host.inbox for host in hosts} == {records[0].channel_name}
        assert list(layer.channels) == [records[0].channel_name]  # one queue: the worker's, not one per session
    finally:
        for host in hosts:
            await host.close(CloseReason.SERVER_SHUTDOWN)


async def test_a_message_from_another_worker_reaches_its_session(alice: Any) -> None:
    layer = InMemoryChannelLayer()
    host = await _host(alice, layer)
    host.start()
    try:
        reply_to = await layer.new_channel()
        # What another worker sends: the message, tagged with the session it is for, to this worker's address.
        await layer.send(host.inbox, {"type": "mcp.inbound", "session": host.pk, "body": json.dumps(INITIALIZE)})
        await layer.send(
            host.inbox,
            {"type": "mcp.attach", "session": host.pk, "reply_to": reply_to, "stream": 0, "after": None},
        )
        assert await asyncio.wait_for(layer.receive(reply_to), 5) == {"type": "mcp.attached", "status": "ok"}
        event = await asyncio.wait_for(layer.receive(reply_to), 5)
        assert event["type"] == "mcp.event" and '"serverInfo"' in event["data"]
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


@pytest.mark.parametrize(
    ("message", "answer"),
    [
        ({"type": "mcp.attach", "stream": 0, "after": None}, {"type": "mcp.attached", "status": "gone"}),
        ({"type": "mcp.inbound", "body": "{}"}, {"type": "mcp.end", "reason": CloseReason.REVOKED}),
    ],
    ids=["attach-is-told-gone", "request-stream-is-ended"],
)
async def test_a_message_for_a_session_no_longer_here_is_answered(
    alice: Any, message: dict[str, Any], answer: dict[str, Any]
) -> None:
    """A waiting connection in another worker learns at once that the session is gone, rather than timing out."""
    layer = InMemoryChannelLayer()
    host = await _host(alice, layer)
    host.start()
    await host.close(CloseReason.TERMINATED)
    reply_to = await layer.new_channel()
    await layer.send(host.inbox, {**message, "session": host.pk, "reply_to": reply_to})
    assert await asyncio.wait_for(layer.receive(reply_to), 5) == answer


async def test_a_local_sender_is_refused_when_the_sessions_inbox_is_full(alice: Any) -> None:
    layer = InMemoryChannelLayer(capacity=2)
    host = await _host(alice, layer)  # not started: nothing reads its inbox
    try:
        ping = {"type": "mcp.inbound", "body": json.dumps({"jsonrpc": "2.0", "method": "notifications/x"})}
        for _ in range(2):
            await runtime.send_to_session(layer, host.inbox, host.pk, ping)
        with pytest.raises(ChannelFull):
            await runtime.send_to_session(layer, host.inbox, host.pk, ping)
        assert layer.channels.get(host.inbox) is None or layer.channels[host.inbox].empty()  # the layer was skipped
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


async def test_revoking_many_sessions_of_a_worker_sends_it_one_message(alice: Any) -> None:
    layer = get_channel_layer()
    hosts = [await _host(alice, layer) for _ in range(3)]
    for host in hosts:
        host.start()
    sent: list[tuple[str, dict[str, Any]]] = []
    original_send = layer.send

    async def counting_send(channel: str, message: dict[str, Any]) -> None:
        sent.append((channel, message))
        await original_send(channel, message)

    layer.send = counting_send  # type: ignore[method-assign]
    try:
        await sync_to_async(revoke)(McpSession.objects.filter(pk__in=[host.pk for host in hosts]))
        for host in hosts:
            await asyncio.wait_for(host.wait_closed(), 5)
    finally:
        del layer.send
        for host in hosts:
            await host.close(CloseReason.SERVER_SHUTDOWN)
    assert [message["type"] for _, message in sent] == ["mcp.close"]
    assert sorted(sent[0][1]["sessions"]) == sorted(host.pk for host in hosts)


class RecordingOutlet:
    """A connection in this worker, as the host sees it: what it was told."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    async def deliver(self, event: Any) -> None:
        pass

    async def end(self, reason: str) -> None:
        self.ended.append(reason)


async def test_a_sessions_messages_keep_their_order_across_workers(alice: Any, redis_settings: Any) -> None:
    """A message accepted from another worker is handled before one accepted here after it.

    Both travel through the channel layer, which keeps them in order: a local
    shortcut would let ``tools/list`` overtake the ``initialize`` before it.
    """
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(**redis_settings["CHANNEL_LAYERS"]["default"]["CONFIG"])
    host = await _host(alice, layer)  # not started: its inbox shows the order messages reached it
    try:
        await layer.send(host.inbox, {"type": "mcp.inbound", "session": host.pk, "body": json.dumps(INITIALIZE)})
        tools_list = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        await runtime.send_to_session(layer, host.inbox, host.pk, {"type": "mcp.inbound", "body": tools_list})
        await until(lambda: len(host._mail) >= 2, "both messages in the inbox")
        assert [json.loads(message["body"])["method"] for message in host._mail] == ["initialize", "tools/list"]
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)
        await layer.flush()


async def test_a_session_that_is_ending_takes_no_more_messages(alice: Any) -> None:
    layer = InMemoryChannelLayer()
    host = await _host(alice, layer)
    host.start()
    host.end_soon(CloseReason.REVOKED)
    with pytest.raises(SessionNotFound):
        await runtime.send_to_session(layer, host.inbox, host.pk, {"type": "mcp.inbound", "body": "{}"})
    await host.close(CloseReason.REVOKED)


async def test_a_request_left_in_the_inbox_of_a_closing_session_is_answered(alice: Any) -> None:
    """Its connection, waiting in this worker, is ended (404) rather than left to time out."""
    layer = InMemoryChannelLayer()
    host = await _host(alice, layer)  # not started: nothing reads the inbox
    outlet = RecordingOutlet()
    runtime.register_outlet("waiting-request", outlet)
    try:
        request = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
        inbound = {"type": "mcp.inbound", "body": json.dumps(request), "reply_to": "waiting-request"}
        await runtime.send_to_session(layer, host.inbox, host.pk, inbound)
        await host.close(CloseReason.REVOKED)
        await until(lambda: bool(outlet.ended), "the waiting request's connection ended")
        assert outlet.ended == [CloseReason.REVOKED]
    finally:
        runtime.unregister_outlet("waiting-request")


async def test_a_request_from_another_worker_to_a_full_inbox_is_refused_as_busy(alice: Any) -> None:
    layer = InMemoryChannelLayer(capacity=1)
    host = await _host(alice, layer)  # not started: nothing reads the inbox
    try:
        await runtime.send_to_session(layer, host.inbox, host.pk, {"type": "mcp.inbound", "body": "{}"})
        reply_to = await layer.new_channel()
        await layer.send(host.inbox, {"type": "mcp.inbound", "session": host.pk, "body": "{}", "reply_to": reply_to})
        assert await asyncio.wait_for(layer.receive(reply_to), 5) == {"type": "mcp.end", "reason": runtime.BUSY}
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


@pytest.mark.parametrize("fault", ["task-stopped", "malformed-message"])
async def test_the_worker_inbox_keeps_serving_after_a_fault(alice: Any, fault: str) -> None:
    layer = InMemoryChannelLayer()
    host = await _host(alice, layer)
    host.start()
    try:
        if fault == "task-stopped":
            task = runtime._worker_inbox._task
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
            assert await runtime._worker_inbox.address(layer) == host.inbox  # listening again, same address
        else:
            await layer.send(host.inbox, {"type": "mcp.close", "sessions": 5, "reason": "x"})
        reply_to = await layer.new_channel()
        await layer.send(
            host.inbox, {"type": "mcp.attach", "session": host.pk, "reply_to": reply_to, "stream": 0, "after": None}
        )
        assert await asyncio.wait_for(layer.receive(reply_to), 5) == {"type": "mcp.attached", "status": "ok"}
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)
