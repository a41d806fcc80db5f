"""Listen events across workers (mcp_gateway/bus.py, mcp_gateway/listeners.py): two workers on one real Redis.

Each worker is a :class:`~mcp_gateway.worker.Worker` of its own with a ``RedisChannelLayer`` of its own, in
this one process: its inbox joins the events group, as in a daphne process. Streams are the SDK's own
``ListenHandler`` over a user's view of the bus, fed through a recording session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from mcp.server.subscriptions import ListenHandler
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp_types import SubscriptionFilter, SubscriptionsListenRequestParams

from mcp_gateway.bus import ChannelLayerBus
from mcp_gateway.listeners import LocalFanout, event_from_message, event_message
from mcp_gateway.wire import LISTEN_EVENTS_GROUP
from mcp_gateway.worker import Worker

from .clients import until
from .support.launcher import free_port
from .support.workers import stop

ALL_EVENTS: list[ServerEvent] = [
    ToolsListChanged(),
    PromptsListChanged(),
    ResourcesListChanged(),
    ResourceUpdated(uri="notes://1"),
]


@dataclass
class Recorded:
    """What the SDK's handler sends on a listen stream: a stand-in for the transport's response stream."""

    sent: list[Any] = field(default_factory=list)

    async def send_notification(self, notification: Any, related_request_id: Any = None) -> None:
        self.sent.append(notification)

    def methods(self) -> list[str]:
        return [n.method for n in self.sent]


@dataclass
class Ctx:
    request_id: str
    session: Recorded


@dataclass
class Node:
    """One worker: its Worker, its own Redis layer, and the bus as it publishes and subscribes there."""

    worker: Worker
    layer: Any
    bus: ChannelLayerBus


@contextlib.asynccontextmanager
async def two_workers(redis_settings: dict[str, Any]) -> AsyncIterator[tuple[Node, Node]]:
    from channels_redis.core import RedisChannelLayer

    config = redis_settings["CHANNEL_LAYERS"]["default"]["CONFIG"]
    nodes = []
    for _ in range(2):
        worker, layer = Worker(), RedisChannelLayer(**config)
        await worker.inbox.address(layer)
        nodes.append(Node(worker, layer, ChannelLayerBus(layer=layer, fanout=worker.listens.fanout)))
    try:
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            await stop(node.worker)
        await nodes[0].layer.flush()
        for node in nodes:
            await node.layer.close_pools()


@contextlib.asynccontextmanager
async def listening(bus: Any, wanted: SubscriptionFilter, name: str = "listen-1") -> AsyncIterator[Recorded]:
    """A stream served by the SDK's ListenHandler over ``bus``, acknowledged, until the block ends."""
    session = Recorded()
    handler = ListenHandler(bus, max_buffered_events=8)
    async with anyio.create_task_group() as group:
        group.start_soon(handler, Ctx(name, session), SubscriptionsListenRequestParams(notifications=wanted))
        await until(lambda: bool(session.sent), "the acknowledgement")
        yield session
        handler.close()


@pytest.mark.parametrize(
    "event",
    [pytest.param(event, id=type(event).__name__) for event in ALL_EVENTS],
)
def test_an_event_survives_its_trip_on_the_wire(event: ServerEvent) -> None:
    assert event_from_message(event_message(event, "7")) == (event, "7")
    assert event_from_message(event_message(event, None)) == (event, None)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param({"kind": "resource_updated"}, id="resource-without-uri"),
        pytest.param({"kind": "resource_updated", "uri": 5}, id="uri-not-text"),
        pytest.param({"kind": "everything_changed"}, id="unknown-kind"),
        pytest.param({"kind": "tools_list_changed", "user": 7}, id="user-not-text"),
        pytest.param({}, id="empty"),
    ],
)
def test_a_malformed_event_is_dropped_not_delivered(message: dict[str, Any]) -> None:
    fanout, got = LocalFanout(), []
    fanout.subscribe(got.append, user=None)
    fanout.receive({"type": "mcp.listen_event", **message})
    assert got == []


@pytest.mark.parametrize(
    ("listener_user", "event_user", "delivered"),
    [
        pytest.param("1", None, True, id="everyone's-event-reaches-a-user"),
        pytest.param("1", "1", True, id="own-event-reaches-its-user"),
        pytest.param("1", "2", False, id="another-user's-event-never-does"),
        pytest.param(None, None, True, id="everyone's-event-reaches-a-server-wide-listener"),
        pytest.param(None, "1", False, id="a-user's-event-never-reaches-a-server-wide-listener"),
    ],
)
def test_the_local_fanout_scopes_events_by_user(
    listener_user: str | None, event_user: str | None, delivered: bool
) -> None:
    fanout, got = LocalFanout(), []
    fanout.subscribe(got.append, user=listener_user)
    fanout.deliver(ToolsListChanged(), event_user)
    assert got == ([ToolsListChanged()] if delivered else [])


def test_a_failing_listener_does_not_starve_the_others() -> None:
    fanout, got = LocalFanout(), []

    def broken(event: ServerEvent) -> None:
        raise RuntimeError("broken listener")

    fanout.subscribe(broken, user=None)
    unsubscribe = fanout.subscribe(got.append, user=None)
    fanout.deliver(ToolsListChanged(), None)
    unsubscribe()
    unsubscribe()  # idempotent
    fanout.deliver(ToolsListChanged(), None)
    assert got == [ToolsListChanged()]


async def test_an_event_published_on_one_worker_reaches_listeners_on_the_other(
    redis_settings: dict[str, Any],
) -> None:
    async with two_workers(redis_settings) as (a, b):
        wanted = SubscriptionFilter(tools_list_changed=True, resource_subscriptions=["notes://1"])
        async with (
            listening(b.bus.for_user("1"), wanted) as on_b,
            listening(a.bus.for_user("1"), wanted) as on_a,
        ):
            await a.bus.publish(ToolsListChanged())
            await a.bus.publish(ResourceUpdated(uri="notes://1"))
            for stream in (on_b, on_a):  # the publishing worker hears its own events through the layer too
                await until(lambda s=stream: len(s.sent) == 3, "both events on each worker")  # type: ignore[misc]
                assert stream.methods()[1:] == ["notifications/tools/list_changed", "notifications/resources/updated"]
                assert stream.sent[2].params.uri == "notes://1"


async def test_a_users_event_never_reaches_another_users_stream(redis_settings: dict[str, Any]) -> None:
    async with two_workers(redis_settings) as (a, b):
        wanted = SubscriptionFilter(tools_list_changed=True, prompts_list_changed=True)
        async with (
            listening(b.bus.for_user("1"), wanted, "alice") as alice,
            listening(b.bus.for_user("2"), wanted, "bob") as bob,
        ):
            await a.bus.publish_for(ToolsListChanged(), "1")
            await a.bus.publish(PromptsListChanged())  # for everyone: after it, bob has seen all he will
            await until(lambda: len(bob.sent) == 2 and len(alice.sent) == 3, "the events")
            assert alice.methods()[1:] == ["notifications/tools/list_changed", "notifications/prompts/list_changed"]
            assert bob.methods()[1:] == ["notifications/prompts/list_changed"]


async def test_a_stream_receives_only_what_its_filter_asks_for(redis_settings: dict[str, Any]) -> None:
    async with two_workers(redis_settings) as (a, b):
        async with listening(b.bus.for_user("1"), SubscriptionFilter(resource_subscriptions=["notes://2"])) as stream:
            for event in [*ALL_EVENTS, ResourceUpdated(uri="notes://2")]:
                await a.bus.publish(event)
            await until(lambda: len(stream.sent) >= 2, "the subscribed resource's event")
            await a.bus.publish(ResourceUpdated(uri="notes://2"))  # a marker: everything before it has arrived
            await until(lambda: len(stream.sent) >= 3, "the marker")
            assert stream.methods()[1:] == ["notifications/resources/updated"] * 2
            assert {n.params.uri for n in stream.sent[1:]} == {"notes://2"}


async def test_a_stream_that_stops_reading_is_ended_at_its_buffer_bound(
    redis_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The fan-out never queues without bound: the SDK's per-stream buffer ends a stream that does not drain."""
    async with two_workers(redis_settings) as (a, b):
        gate = asyncio.Event()

        class Stuck(Recorded):
            async def send_notification(self, notification: Any, related_request_id: Any = None) -> None:
                self.sent.append(notification)
                if len(self.sent) > 1:
                    await gate.wait()  # a client that stopped reading

        session = Stuck()
        handler = ListenHandler(b.bus.for_user("1"), max_buffered_events=4)
        params = SubscriptionsListenRequestParams(notifications=SubscriptionFilter(tools_list_changed=True))
        task = asyncio.ensure_future(handler(Ctx("stuck", session), params))
        await until(lambda: bool(session.sent), "the acknowledgement")
        for _ in range(10):
            await a.bus.publish(ToolsListChanged())
        await until(lambda: "backlog full" in caplog.text, "the stream ended at its bound")
        gate.set()  # the write it was stuck in returns: the handler ends, and its listener goes
        await asyncio.wait_for(task, 10)
        assert len(b.worker.listens.fanout) == 0
        assert len(session.sent) <= 1 + 1 + 4  # the ack, the event being written, the buffer


async def test_the_plain_subscribe_hears_only_events_for_everyone(redis_settings: dict[str, Any]) -> None:
    """The SDK's own handler over the bus itself (``MCPServer(subscriptions=bus)``) never sees a user's event."""
    async with two_workers(redis_settings) as (a, b):
        got: list[ServerEvent] = []
        unsubscribe = b.bus.subscribe(got.append)
        try:
            await a.bus.publish_for(ToolsListChanged(), "1")
            await a.bus.publish(PromptsListChanged())
            await until(lambda: bool(got), "the event for everyone")
            assert got == [PromptsListChanged()]
        finally:
            unsubscribe()


async def test_a_publish_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that is not there (a port nothing listens on): the publisher carries on."""
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_timeout": 2}])
    bus = ChannelLayerBus(layer=layer, fanout=LocalFanout())
    try:
        assert await bus.publish_for(ToolsListChanged(), None) is False
        await bus.publish(ToolsListChanged())
    finally:
        await layer.close_pools()
    assert "Could not publish a listen event" in caplog.text


async def test_every_workers_inbox_joins_the_events_group(redis_settings: dict[str, Any]) -> None:
    async with two_workers(redis_settings) as (a, b):
        channels = {await node.worker.inbox.address(node.layer) for node in (a, b)}
        key = a.layer._group_key(LISTEN_EVENTS_GROUP)
        async with a.layer.connection(a.layer.consistent_hash(LISTEN_EVENTS_GROUP)) as connection:
            members = {member.decode() for member in await connection.zrange(key, 0, -1)}
        assert channels <= members
