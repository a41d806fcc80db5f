"""Session hosts in-process: the worker's one inbox, what its sweep saves to the session records, lost records."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import threading
import time
import weakref
from datetime import timedelta
from typing import Any

import anyio
import pytest
from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.utils import timezone
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCResponse

from mcp_gateway.auth import authenticate
from mcp_gateway.conf import gateway_settings
from mcp_gateway.exceptions import SessionNotFound
from mcp_gateway.http import GatewayRequest
from mcp_gateway.mounts import Mount
from mcp_gateway.opening import open_session
from mcp_gateway.sessions.host import SessionHost
from mcp_gateway.wire import BUSY
from mcp_gateway.worker import worker
from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, CloseReason, McpSession, Transport, Worker
from mcp_sessions.revocation import revoke

from . import servers
from .asgi_helpers import http_scope
from .clients import closed_session, until
from .support.workers import stop

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


async def _host(user: Any, layer: BaseChannelLayer | None = None, server: Any = None) -> SessionHost:
    _, secret = await sync_to_async(AccessToken.objects.issue)(user, "agent")
    request = GatewayRequest(http_scope(headers=[("Authorization", f"Bearer {secret}")]))
    host, _ = await open_session(
        layer=layer or get_channel_layer(),
        mount=Mount("/mcp/", server or gateway_settings.SERVER),
        request=request,
        credential=await authenticate(request),
        transport=Transport.STREAMABLE_HTTP,
    )
    return host


async def _started_host(user: Any, server: Any = None) -> SessionHost:
    host = await _host(user, server=server)
    host.start()
    await host.receive_message({"type": "mcp.inbound", "body": json.dumps(INITIALIZE)})
    # The server loop answers on its own task.
    await until(lambda: host.actor is not None and host.actor.activity.messages_out > 0, "the initialize answer")
    return host


async def test_a_sweep_saves_only_what_changed_since_the_last_one(alice: Any) -> None:
    host = await _started_host(alice)
    try:
        await worker.sweeper.sweep()
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
    await worker.sweeper.sweep()
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
                await worker.sweeper.sweep()
        await worker.sweeper.sweep()
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
            await worker.send_to_session(layer, host.inbox, host.pk, ping)
        with pytest.raises(ChannelFull):
            await worker.send_to_session(layer, host.inbox, host.pk, ping)
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

    The other worker tells this one it sends to the session before it sends
    (:mod:`mcp_gateway.senders`); from then on this worker's messages for it go
    through the layer too, behind it: a local shortcut would let ``tools/list``
    overtake the ``initialize`` before it.
    """
    from channels_redis.core import RedisChannelLayer

    from mcp_gateway.worker import Worker

    layer = RedisChannelLayer(**redis_settings["CHANNEL_LAYERS"]["default"]["CONFIG"])
    host = await _host(alice, layer)  # not started: its inbox shows the order messages reached it
    other = Worker()  # another process's worker, as far as sending goes: it runs no host
    try:
        initialize = {"type": "mcp.inbound", "body": json.dumps(INITIALIZE)}
        await other.send_to_session(layer, host.inbox, host.pk, initialize)  # type: ignore[arg-type]
        tools_list = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        await worker.send_to_session(layer, host.inbox, host.pk, {"type": "mcp.inbound", "body": tools_list})
        await until(lambda: len(host._mail) >= 2, "both messages in the inbox")
        assert [json.loads(message["body"])["method"] for message in host._mail] == ["initialize", "tools/list"]
        assert not worker.senders.direct(host.pk)
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)
        await stop(other)
        await layer.flush()
    assert worker.senders.direct(host.pk)  # forgotten with its host


async def test_a_message_for_a_session_here_that_only_this_worker_sends_to_skips_the_layer(
    alice: Any, redis_settings: Any
) -> None:
    """On Redis too: handed to the host at once, not sent and received back (eight round trips)."""
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(**redis_settings["CHANNEL_LAYERS"]["default"]["CONFIG"])
    host = await _host(alice, layer)  # not started: its inbox shows what reached it
    try:
        tools_list = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        await worker.send_to_session(layer, host.inbox, host.pk, {"type": "mcp.inbound", "body": tools_list})
        assert [json.loads(message["body"])["method"] for message in host._mail] == ["tools/list"]
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)
        await layer.flush()


async def test_a_worker_announcing_itself_to_a_session_gone_is_told_not_found(alice: Any, redis_settings: Any) -> None:
    from channels_redis.core import RedisChannelLayer

    from mcp_gateway.worker import Worker

    layer = RedisChannelLayer(**redis_settings["CHANNEL_LAYERS"]["default"]["CONFIG"])
    host = await _host(alice, layer)
    await host.close(CloseReason.SERVER_SHUTDOWN)
    other = Worker()
    try:
        with pytest.raises(SessionNotFound):
            await other.send_to_session(layer, host.inbox, host.pk, {"type": "mcp.inbound", "body": "{}"})
    finally:
        await stop(other)
        await layer.flush()
        await layer.close_pools()


async def test_a_session_that_is_ending_takes_no_more_messages(alice: Any) -> None:
    layer = InMemoryChannelLayer()
    host = await _host(alice, layer)
    host.start()
    host.close_soon(CloseReason.REVOKED)
    with pytest.raises(SessionNotFound):
        await worker.send_to_session(layer, host.inbox, host.pk, {"type": "mcp.inbound", "body": "{}"})
    await host.close(CloseReason.REVOKED)


async def test_a_request_left_in_the_inbox_of_a_closing_session_is_answered(alice: Any) -> None:
    """Its connection, waiting in this worker, is ended (404) rather than left to time out."""
    layer = InMemoryChannelLayer()
    host = await _host(alice, layer)  # not started: nothing reads the inbox
    outlet = RecordingOutlet()
    worker.register_outlet("waiting-request", outlet)
    try:
        request = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
        inbound = {"type": "mcp.inbound", "body": json.dumps(request), "reply_to": "waiting-request"}
        await worker.send_to_session(layer, host.inbox, host.pk, inbound)
        await host.close(CloseReason.REVOKED)
        await until(lambda: bool(outlet.ended), "the waiting request's connection ended")
        assert outlet.ended == [CloseReason.REVOKED]
    finally:
        worker.unregister_outlet("waiting-request")


async def test_a_request_from_another_worker_to_a_full_inbox_is_refused_as_busy(alice: Any) -> None:
    layer = InMemoryChannelLayer(capacity=1)
    host = await _host(alice, layer)  # not started: nothing reads the inbox
    try:
        await worker.send_to_session(layer, host.inbox, host.pk, {"type": "mcp.inbound", "body": "{}"})
        reply_to = await layer.new_channel()
        await layer.send(host.inbox, {"type": "mcp.inbound", "session": host.pk, "body": "{}", "reply_to": reply_to})
        assert await asyncio.wait_for(layer.receive(reply_to), 5) == {"type": "mcp.end", "reason": BUSY}
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


@pytest.mark.parametrize("fault", ["task-stopped", "malformed-message"])
async def test_the_worker_inbox_keeps_serving_after_a_fault(alice: Any, fault: str) -> None:
    layer = InMemoryChannelLayer()
    host = await _host(alice, layer)
    host.start()
    try:
        if fault == "task-stopped":
            task = worker.inbox._task
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
            assert await worker.inbox.address(layer) == host.inbox  # listening again, same address
        else:
            await layer.send(host.inbox, {"type": "mcp.close", "sessions": 5, "reason": "x"})
        reply_to = await layer.new_channel()
        await layer.send(
            host.inbox, {"type": "mcp.attach", "session": host.pk, "reply_to": reply_to, "stream": 0, "after": None}
        )
        assert await asyncio.wait_for(layer.receive(reply_to), 5) == {"type": "mcp.attached", "status": "ok"}
    finally:
        await host.close(CloseReason.SERVER_SHUTDOWN)


def _answered(actor: Any, count: int) -> bool:
    return bool(actor.activity.messages_out == count)


def _queued(actor: Any, count: int) -> bool:
    return bool(actor._out_recv.statistics().current_buffer_used == count)


def _tool_running() -> bool:
    """Whether a task is inside the test server's tool handler (somewhere down the chain its coroutine awaits)."""
    for task in asyncio.all_tasks():
        awaited: Any = task.get_coro()
        while awaited is not None:
            if getattr(awaited, "cr_code", None) is servers.call_tool.__code__:
                return True
            awaited = getattr(awaited, "cr_await", None)
    return False


@pytest.mark.parametrize("closing", ["deleted-idle", "deleted-mid-call", "revoked"])
async def test_a_closed_sessions_host_and_actor_are_freed_by_reference_counting(alice: Any, closing: str) -> None:
    """No reference cycle keeps a closed session (and its buffered events) until a full collection.

    With the collector off, the host and its MCP server loop must be gone as
    soon as the test drops its last reference: a closed session's memory is
    back at once, not after an unrelated collection.
    """
    gc.collect()
    gc.disable()
    outlet = RecordingOutlet()
    worker.register_outlet("request-stream", outlet)
    try:
        host = await _started_host(alice, server=servers.lowlevel)
        actor = host.actor
        assert actor is not None and actor.activity.messages_out == 1  # the server loop answered
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        host.post({"type": "mcp.inbound", "body": json.dumps(initialized)})
        call = {"name": "sleep", "arguments": {"seconds": 60}} if closing == "deleted-mid-call" else {"name": "whoami"}
        request = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}
        host.post({"type": "mcp.inbound", "body": json.dumps(request), "reply_to": "request-stream"})
        if closing == "deleted-mid-call":
            await until(_tool_running, "the tool running")  # the handler is cancelled by the close
        else:
            await until(functools.partial(_answered, actor, 2), "two answers")
        if closing == "revoked":
            host.post({"type": "mcp.close", "reason": CloseReason.REVOKED})
            await asyncio.wait_for(host.wait_closed(), 5)
        else:
            await asyncio.wait_for(host.close(CloseReason.TERMINATED), 5)
        assert not _tool_running()
        freed = weakref.ref(host), weakref.ref(actor)
        del host, actor
        assert [ref() for ref in freed] == [None, None]
    finally:
        worker.unregister_outlet("request-stream")
        gc.enable()


class StuckOutlet(RecordingOutlet):
    """A connection whose client stopped reading: the first event it is given never leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = asyncio.Event()

    async def deliver(self, event: Any) -> None:
        self.stuck.set()
        await asyncio.Event().wait()


def _messages_about(request_id: int) -> list[SessionMessage]:
    """The server's messages about request ``request_id`` (its notifications and answer) still in memory."""
    found = []
    for candidate in gc.get_objects():
        if isinstance(candidate, SessionMessage):
            message = candidate.message
            related = getattr(candidate.metadata, "related_request_id", None)
            if related == request_id or (isinstance(message, JSONRPCResponse) and message.id == request_id):
                found.append(candidate)
    return found


async def test_what_a_closed_session_had_not_delivered_is_freed_by_reference_counting(alice: Any) -> None:
    """Messages queued for a client that stopped reading go with its session, not at the next full collection."""
    gc.collect()
    gc.disable()
    outlet = StuckOutlet()
    worker.register_outlet("request-stream", outlet)
    try:
        host = await _started_host(alice, server=servers.lowlevel)
        actor = host.actor
        assert actor is not None
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        host.post({"type": "mcp.inbound", "body": json.dumps(initialized)})
        call = {"name": "chatty", "arguments": {"steps": 5}}
        request = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}
        host.post({"type": "mcp.inbound", "body": json.dumps(request), "reply_to": "request-stream"})
        await asyncio.wait_for(outlet.stuck.wait(), 5)
        # The first notification is stuck in the connection; the other four and the answer wait in the queue.
        await until(functools.partial(_queued, actor, 5), "five queued messages")
        await asyncio.wait_for(host.close(CloseReason.TERMINATED), 5)
        del host, actor
        assert _messages_about(2) == []
    finally:
        worker.unregister_outlet("request-stream")
        gc.enable()


# Housekeeping that one session cannot stop


async def test_a_sessions_failed_activity_write_leaves_the_others_swept(alice: Any) -> None:
    """The others' activity is saved and a revocation found; the failed one stays unsaved, open, and is retried."""
    hosts = [await _started_host(alice) for _ in range(3)]
    bad, revoked, saved = hosts
    assert bad.actor is not None
    try:
        bad.actor.activity.messages_in = -1  # the column's check constraint refuses it, on every database
        await McpSession.objects.filter(pk=revoked.pk).aupdate(closed_at=timezone.now(), close_reason="revoked")
        await worker.sweeper.sweep()
        await asyncio.wait_for(revoked.wait_closed(), 5)
        record = await McpSession.objects.aget(pk=saved.pk)
        assert (record.client_name, record.messages_in, record.closed_at) == ("sweep-test", 1, None)
        assert saved.pending_activity() is None
        assert bad.accepting and "messages_in" in (bad.pending_activity() or {})
        assert (await McpSession.objects.aget(pk=bad.pk)).messages_in == 0

        bad.actor.activity.messages_in = 1
        await worker.sweeper.sweep()
        assert (await McpSession.objects.aget(pk=bad.pk)).client_name == "sweep-test"
        assert bad.pending_activity() is None
    finally:
        for host in hosts:
            await host.close(CloseReason.SERVER_SHUTDOWN)


async def test_a_host_whose_close_was_not_written_stays_registered_until_a_sweep_writes_it(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = await _started_host(alice)
    with monkeypatch.context() as patched:

        def unavailable(pk: int, reason: str, changes: Any) -> str:
            raise ConnectionError("database unavailable")

        patched.setattr(McpSession.objects, "close", unavailable)
        await asyncio.wait_for(host.close(CloseReason.TERMINATED), 5)
    assert worker.local_host(host.pk) is host and not host.accepting
    assert (await McpSession.objects.aget(pk=host.pk)).closed_at is None

    await worker.sweeper.sweep()
    assert worker.local_host(host.pk) is None
    record = await McpSession.objects.aget(pk=host.pk)
    assert (record.close_reason, record.messages_in) == (CloseReason.TERMINATED, 1)
    await audit_row(AuditKind.SESSION_CLOSED, session_ref=host.ref, detail=CloseReason.TERMINATED)


async def audit_row(kind: str, **lookup: Any) -> AuditEvent:
    """The audit row of ``kind`` matching ``lookup``, once the batch writer has stored it."""
    with anyio.fail_after(5):
        while (row := await AuditEvent.objects.filter(kind=kind, **lookup).afirst()) is None:
            await asyncio.sleep(0.05)
    return row


def slowed_open_for(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make ``open_for`` dawdle in its thread after its insert; the event is set once the row is in."""
    inserted = threading.Event()
    original = McpSession.objects.open_for

    def open_for(user: Any, **fields: Any) -> McpSession:
        record = original(user, **fields)
        inserted.set()
        time.sleep(0.5)
        return record

    monkeypatch.setattr(McpSession.objects, "open_for", open_for)
    return inserted


async def cancel_once_inserted(alice: Any, inserted: threading.Event) -> McpSession:
    """Open a session and cancel the opening task while its record is being written; the record."""
    opening = asyncio.get_running_loop().create_task(_host(alice))
    await until(inserted.is_set, "the record inserted")
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    return await McpSession.objects.aget(user=alice)


async def test_a_record_written_for_a_cancelled_opening_is_closed(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client left, or the server is stopping, while its record was written: no host will ever close it."""
    record = await cancel_once_inserted(alice, slowed_open_for(monkeypatch))
    assert worker.local_host(record.pk) is None
    closed = await closed_session(pk=record.pk)
    assert closed.close_reason == CloseReason.HOST_LOST
    await audit_row(AuditKind.SESSION_CLOSED, session_ref=record.ref, detail=CloseReason.HOST_LOST)


async def test_the_heartbeat_closes_this_workers_records_that_no_live_session_holds(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record left open with no host (its opening was cancelled and closing it failed too) is closed, audited.

    Not before it is older than a lease (a host is registered moments after its record is written), and
    never a record with a live session, nor one of another worker.
    """
    refused = threading.Event()
    with monkeypatch.context() as patched:

        def unavailable(pk: int, reason: str, changes: Any) -> str:
            refused.set()
            raise ConnectionError("database unavailable")

        inserted = slowed_open_for(patched)
        patched.setattr(McpSession.objects, "close", unavailable)
        lost = await cancel_once_inserted(alice, inserted)
        # The insert's thread has returned, and closing its record failed.
        await until(refused.is_set, "the close refused")
    live = await _host(alice)
    other = await Worker.objects.acreate(id="o" * 32, hostname="h", pid=3)
    elsewhere = await McpSession.objects.acreate(
        user=alice,
        id_hash=hash_session_id(new_session_id()),
        server="/mcp/",
        transport=Transport.SSE,
        channel_name="c",
        worker=other,
    )
    try:
        await worker.lease.beat()
        assert await McpSession.objects.open().filter(pk=lost.pk).aexists(), "closed within its grace period"

        long_ago = timezone.now() - timedelta(seconds=2 * gateway_settings.LEASE_TIMEOUT)
        await McpSession.objects.filter(pk__in=[lost.pk, live.pk, elsewhere.pk]).aupdate(created_at=long_ago)
        await worker.lease.beat()
        assert (await McpSession.objects.aget(pk=lost.pk)).close_reason == CloseReason.HOST_LOST
        await audit_row(AuditKind.SESSION_CLOSED, session_ref=lost.ref, detail=CloseReason.HOST_LOST)
        assert {r.pk async for r in McpSession.objects.open()} == {live.pk, elsewhere.pk}
        assert worker.local_host(live.pk) is live
    finally:
        await live.close(CloseReason.SERVER_SHUTDOWN)
