"""Telling listening MCP clients that something changed: the public API for Django code.

Clients on protocol 2026-07-28 learn of changes through their ``subscriptions/listen`` streams. Call these
from anywhere in the site, a view, a model's ``save``, a signal receiver, a management command, the admin::

    from mcp_gateway import events

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        events.notify_resource_updated(f"notes://{self.pk}", user=self.owner)

- ``notify_resource_updated(uri, *, user=None)``: the resource at ``uri`` changed (streams that subscribed to
  that exact URI hear of it);
- ``notify_resource_list_changed(user=None)``, ``notify_tool_list_changed(user=None)``,
  ``notify_prompt_list_changed(user=None)``: the list changed.

``user`` (a user, or a user's pk) limits the event to that user's streams; ``None`` sends it to everyone's.
The event goes, through the channel layer (``MCP_GATEWAY_CHANNEL_LAYER``), to every gateway worker, which hands
it to its streams whose filter asks for it. So the calling process needs the site's channel layer, a shared one
(Redis) for the event to reach daphne from another process; with Channels' in-memory layer only streams of the
same process hear of it.

**Transactions**: called inside ``transaction.atomic()``, the sync functions send when the transaction
commits (``transaction.on_commit``, on the ``using`` database), and never if it rolls back, so that a client
refetching at once reads the new state; outside one, they send at once. They return before the event is
delivered, and never raise for a failed delivery (it is logged; a listen event is a hint, and clients
refetch when they re-listen): a model's save never fails for it. Called from a coroutine, the sync functions
schedule the send on the running loop; await the async twins (``anotify_…``) there instead, which send at
once, outside any transaction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

logger = logging.getLogger("mcp_gateway")

__all__ = [
    "anotify_prompt_list_changed",
    "anotify_resource_list_changed",
    "anotify_resource_updated",
    "anotify_tool_list_changed",
    "notify_prompt_list_changed",
    "notify_resource_list_changed",
    "notify_resource_updated",
    "notify_tool_list_changed",
]

# Sends scheduled from a coroutine, held until done (the loop keeps only weak references to tasks).
_scheduled: set[asyncio.Task[bool]] = set()


def user_key(user: Any) -> str | None:
    """Whose streams an event is for, as it travels: the user's pk as text; None for everyone.

    A user without a pk (``AnonymousUser``, an unsaved one) is refused: sending it to everyone instead
    would tell every user what was meant for one.
    """
    if user is None:
        return None
    pk = user.pk if hasattr(user, "pk") else user
    if pk is None or isinstance(pk, bool):
        raise ValueError("A listen event is for a saved user (or a user's pk), or for everyone (None)")
    return str(pk)


async def _publish(event: ServerEvent, user: str | None) -> bool:
    # Imported here: a models module may import this one before the apps (and so the gateway's runtime) load.
    from .bus import bus

    return await bus.publish_for(event, user)


def _send(event: ServerEvent, user: Any, using: str | None) -> None:
    key = user_key(user)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        transaction.on_commit(lambda: async_to_sync(_publish)(event, key), using=using, robust=True)
        return
    # In a coroutine: no transaction of this thread to wait for (the ORM runs async code's queries in a thread).
    task = loop.create_task(_publish(event, key))
    _scheduled.add(task)
    task.add_done_callback(_scheduled.discard)


def notify_resource_updated(uri: str, *, user: Any = None, using: str | None = None) -> None:
    """The resource at ``uri`` changed: tell the listen streams subscribed to it (``user``'s only, if given)."""
    _send(ResourceUpdated(uri=str(uri)), user, using)


def notify_resource_list_changed(user: Any = None, *, using: str | None = None) -> None:
    """The list of resources changed: tell the listen streams that asked (``user``'s only, if given)."""
    _send(ResourcesListChanged(), user, using)


def notify_tool_list_changed(user: Any = None, *, using: str | None = None) -> None:
    """The list of tools changed: tell the listen streams that asked (``user``'s only, if given)."""
    _send(ToolsListChanged(), user, using)


def notify_prompt_list_changed(user: Any = None, *, using: str | None = None) -> None:
    """The list of prompts changed: tell the listen streams that asked (``user``'s only, if given)."""
    _send(PromptsListChanged(), user, using)


async def anotify_resource_updated(uri: str, *, user: Any = None) -> bool:
    """:func:`notify_resource_updated`, sent now; whether the channel layer took it (a failure is logged)."""
    return await _publish(ResourceUpdated(uri=str(uri)), user_key(user))


async def anotify_resource_list_changed(user: Any = None) -> bool:
    """:func:`notify_resource_list_changed`, sent now; whether the channel layer took it."""
    return await _publish(ResourcesListChanged(), user_key(user))


async def anotify_tool_list_changed(user: Any = None) -> bool:
    """:func:`notify_tool_list_changed`, sent now; whether the channel layer took it."""
    return await _publish(ToolsListChanged(), user_key(user))


async def anotify_prompt_list_changed(user: Any = None) -> bool:
    """:func:`notify_prompt_list_changed`, sent now; whether the channel layer took it."""
    return await _publish(PromptsListChanged(), user_key(user))
