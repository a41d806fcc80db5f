"""The public API for Django code (mcp_gateway/events.py): from sync code, in transactions, from another process.

(Named for what it tests: ``tests/test_events.py`` is the session runtime's event buffer.) This process's
worker listens on the real Redis; what its listeners hear is what a listen stream here would be handed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

from mcp_gateway import events
from mcp_gateway.bus import bus
from mcp_gateway.worker import worker

from .clients import until
from .support.launcher import free_port
from .support.process import run_django
from .support.workers import inbox_on

pytestmark = pytest.mark.django_db(transaction=True)

MARKER = ResourceUpdated(uri="marker://end")


@pytest.fixture
async def heard(redis_settings: dict[str, Any], alice: Any) -> AsyncIterator[list[ServerEvent]]:
    """What alice's listen streams in this worker would be handed, in order (this worker's inbox on Redis)."""
    layer = get_channel_layer()
    got: list[ServerEvent] = []
    unsubscribe = bus.for_user(str(alice.pk)).subscribe(got.append)
    try:
        async with inbox_on(worker, layer):
            yield got
    finally:
        unsubscribe()
        await layer.flush()
        await layer.close_pools()


async def heard_up_to_marker(got: list[ServerEvent]) -> list[ServerEvent]:
    """Everything heard before the marker, once the marker (sent last, for everyone) has arrived."""
    await events.anotify_resource_updated(MARKER.uri)
    await until(lambda: MARKER in got, "the marker")
    return got[: got.index(MARKER)]


SYNC_CALLS: list[Any] = [
    pytest.param(
        lambda user: events.notify_resource_updated("notes://1", user=user),
        ResourceUpdated(uri="notes://1"),
        id="resource-updated",
    ),
    pytest.param(events.notify_resource_list_changed, ResourcesListChanged(), id="resource-list"),
    pytest.param(events.notify_tool_list_changed, ToolsListChanged(), id="tool-list"),
    pytest.param(events.notify_prompt_list_changed, PromptsListChanged(), id="prompt-list"),
]


@pytest.mark.parametrize(("notify", "event"), SYNC_CALLS)
async def test_each_sync_function_reaches_the_users_streams(
    heard: list[ServerEvent], alice: Any, bob: Any, notify: Callable[[Any], None], event: ServerEvent
) -> None:
    await sync_to_async(notify)(alice)
    await sync_to_async(notify)(bob)  # another user's: never heard here
    await sync_to_async(notify)(None)  # everyone's
    assert await heard_up_to_marker(heard) == [event, event]


@pytest.mark.parametrize(
    "anotify",
    [
        pytest.param(lambda user: events.anotify_resource_updated("notes://1", user=user), id="resource-updated"),
        pytest.param(events.anotify_resource_list_changed, id="resource-list"),
        pytest.param(events.anotify_tool_list_changed, id="tool-list"),
        pytest.param(events.anotify_prompt_list_changed, id="prompt-list"),
    ],
)
async def test_each_async_twin_sends_at_once(heard: list[ServerEvent], alice: Any, bob: Any, anotify: Any) -> None:
    assert await anotify(alice.pk) is True  # a pk does as well as the user
    assert await anotify(bob) is True
    assert len(await heard_up_to_marker(heard)) == 1


async def test_inside_a_transaction_the_event_waits_for_the_commit(heard: list[ServerEvent], alice: Any) -> None:
    def save() -> None:
        with transaction.atomic():
            events.notify_tool_list_changed(alice)
            async_publish_now(PromptsListChanged())  # sent at once: it must arrive first

    await sync_to_async(save)()
    assert await heard_up_to_marker(heard) == [PromptsListChanged(), ToolsListChanged()]


async def test_a_rolled_back_transaction_sends_nothing(heard: list[ServerEvent], alice: Any) -> None:
    def failed_save() -> None:
        with contextlib.suppress(RuntimeError), transaction.atomic():
            events.notify_tool_list_changed(alice)
            raise RuntimeError("rolled back")

    await sync_to_async(failed_save)()
    assert await heard_up_to_marker(heard) == []


async def test_called_from_a_coroutine_the_sync_function_schedules_the_send(heard: list[ServerEvent]) -> None:
    events.notify_tool_list_changed()  # on the running loop: no thread hop, no blocking, no ORM
    await until(lambda: heard == [ToolsListChanged()], "the event, sent by a task of its own")


async def test_another_process_reaches_this_workers_streams(
    heard: list[ServerEvent], alice: Any, redis_settings: dict[str, Any]
) -> None:
    """A management command, the admin's process: any process with the channel layer."""
    code = (
        "from mcp_gateway import events\n"
        f"events.notify_resource_updated('notes://7', user={alice.pk})\n"
        "events.notify_tool_list_changed()\n"
    )
    await run_django(code, redis_settings)
    assert await heard_up_to_marker(heard) == [ResourceUpdated(uri="notes://7"), ToolsListChanged()]


@pytest.mark.parametrize(
    "user",
    [pytest.param(AnonymousUser(), id="anonymous"), pytest.param(True, id="a-bool-is-no-pk")],
)
def test_an_event_for_a_user_without_a_pk_is_refused_not_sent_to_everyone(user: Any) -> None:
    with pytest.raises(ValueError, match="saved user"):
        events.notify_tool_list_changed(user)


def test_a_failing_channel_layer_never_fails_the_save(
    settings: Any, alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_timeout": 2}]},
        }
    }
    with transaction.atomic():
        alice.first_name = "Alice"
        alice.save()
        events.notify_resource_updated("notes://1", user=alice)
    alice.refresh_from_db()
    assert alice.first_name == "Alice"
    assert "Could not publish a listen event" in caplog.text


def async_publish_now(event: ServerEvent) -> None:
    from asgiref.sync import async_to_sync

    async_to_sync(bus.publish)(event)
