"""What a worker holds of ``subscriptions/listen`` (2026-07-28): its live listen streams, and their listeners.

Each worker's :class:`~mcp_gateway.worker.Worker` has one :class:`ListenRegistry`:

- the live listen streams by record pk (:class:`Listening`, a
  :class:`~mcp_gateway.listening.ListenStream`), so that a revocation's
  ``mcp.close`` (:mod:`mcp_gateway.receivers`), the lease's reconciliation,
  the sweep and the shutdown reach them as they reach session hosts;
- the local fan-out (:class:`LocalFanout`): the listeners of this worker's
  streams, which every :class:`~mcp_gateway.wire.ListenEventMessage` arriving
  at the worker's inbox is handed to. The inbox joins
  :data:`~mcp_gateway.wire.LISTEN_EVENTS_GROUP` (:meth:`ListenRegistry.join`), so one
  ``group_send`` from any process reaches every worker once.

This module is below the worker: it imports no worker, stream or transport.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from channels.layers import BaseChannelLayer
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

from .wire import LISTEN_EVENTS_GROUP, ListenEventKind, ListenEventMessage

logger = logging.getLogger("mcp_gateway")

# Seconds between re-joins of the events group: Channels layers drop a member after ``group_expiry`` (a day by
# default), and a worker may run longer than that.
GROUP_REFRESH = 3600.0

Listener = Callable[[ServerEvent], None]

_KINDS: dict[type[ServerEvent], ListenEventKind] = {
    ToolsListChanged: "tools_list_changed",
    PromptsListChanged: "prompts_list_changed",
    ResourcesListChanged: "resources_list_changed",
    ResourceUpdated: "resource_updated",
}
_LIST_EVENTS: dict[str, ServerEvent] = {
    "tools_list_changed": ToolsListChanged(),
    "prompts_list_changed": PromptsListChanged(),
    "resources_list_changed": ResourcesListChanged(),
}


def event_message(event: ServerEvent, user: str | None) -> ListenEventMessage:
    """``event`` as it travels to every worker; ``user``: the pk (as text) of the only user it is for, or None."""
    message: ListenEventMessage = {"type": "mcp.listen_event", "kind": _KINDS[type(event)], "user": user}
    if isinstance(event, ResourceUpdated):
        message["uri"] = event.uri
    return message


def event_from_message(message: Mapping[str, Any]) -> tuple[ServerEvent, str | None] | None:
    """The event a :class:`~mcp_gateway.wire.ListenEventMessage` carries, and whom for; None if it is malformed."""
    kind, user = message.get("kind"), message.get("user")
    if user is not None and not isinstance(user, str):
        return None
    if kind == "resource_updated":
        uri = message.get("uri")
        return (ResourceUpdated(uri=uri), user) if isinstance(uri, str) else None
    event = _LIST_EVENTS.get(kind) if isinstance(kind, str) else None
    return (event, user) if event is not None else None


class LocalFanout:
    """This worker's listeners of listen events, each for one user's events or for everyone's.

    As the SDK's ``InMemorySubscriptionBus`` fans out, with one rule more: a
    listener subscribed for a user is handed the events for that user and
    those for everyone; one subscribed for no user only those for everyone.
    A per-user event never reaches another user's stream. Listeners are the
    SDK's ``ListenHandler`` deliveries: synchronous, into the stream's bounded
    buffer, which ends the stream when full.
    """

    def __init__(self) -> None:
        # Keyed by a token per subscription, as the SDK's bus: one callable may be subscribed twice.
        self._listeners: dict[object, tuple[str | None, Listener]] = {}

    def subscribe(self, listener: Listener, *, user: str | None) -> Callable[[], None]:
        """Register ``listener`` for ``user``'s events and everyone's (None: everyone's only); returns unsubscribe."""
        token = object()
        self._listeners[token] = (user, listener)

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    def deliver(self, event: ServerEvent, user: str | None) -> None:
        """Hand ``event`` (for ``user``, or everyone if None) to the listeners it is for; one failing is logged."""
        for owner, listener in list(self._listeners.values()):
            if user is not None and owner != user:
                continue
            try:
                listener(event)
            except Exception:  # the fan-out boundary: one listener must not starve the others
                logger.exception("A listen stream's listener failed; continuing")

    def receive(self, message: Mapping[str, Any]) -> None:
        """Fan out the event of a :class:`~mcp_gateway.wire.ListenEventMessage` (one malformed is dropped)."""
        parsed = event_from_message(message)
        if parsed is None:
            logger.warning("Dropped a malformed listen event of kind %r", message.get("kind"))
            return
        self.deliver(*parsed)

    def __len__(self) -> int:
        return len(self._listeners)


class Listening(Protocol):
    """A live listen stream, as its worker sees it (a :class:`~mcp_gateway.listening.ListenStream`)."""

    @property
    def pk(self) -> int: ...

    def post(self, message: Mapping[str, Any]) -> bool:
        """Act on an inbox message for the stream (``mcp.close``, ``mcp.layer_lost``); False if it takes none such."""

    def close_soon(self, reason: str) -> None:
        """End the stream for ``reason`` without waiting."""

    async def close(self, reason: str) -> None:
        """End the stream for ``reason`` and wait until its record is closed."""


class Swept(Protocol):
    """What the worker's sweep looks after: a session host, or a listen stream."""

    @property
    def pk(self) -> int: ...
    @property
    def loop(self) -> Any: ...  # the asyncio loop it runs on, or None
    @property
    def close_unwritten(self) -> bool: ...
    @property
    def last_seen(self) -> datetime: ...

    async def retry_close(self) -> None: ...
    def running_on(self, loop: Any) -> bool: ...
    def schedule_deadline(self) -> None: ...
    def sync_use(self) -> None: ...
    def pending_activity(self) -> dict[str, Any] | None: ...
    def activity_saved(self, fields: dict[str, Any]) -> None: ...
    def close_soon(self, reason: str) -> None: ...


class ListenRegistry:
    """A worker's live listen streams by record pk, its local fan-out, and its membership of the events group."""

    def __init__(self) -> None:
        self.fanout = LocalFanout()
        self._streams: dict[int, Listening] = {}
        self._joined: tuple[BaseChannelLayer, str, float] | None = None

    def add(self, stream: Listening) -> None:
        self._streams[stream.pk] = stream

    def discard(self, stream: Listening) -> None:
        if self._streams.get(stream.pk) is stream:
            del self._streams[stream.pk]

    def get(self, pk: Any) -> Listening | None:
        return self._streams.get(pk) if isinstance(pk, int) else None

    def pks(self) -> list[int]:
        return list(self._streams)

    def __iter__(self) -> Iterator[Listening]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)

    async def join(self, layer: BaseChannelLayer, channel: str) -> None:
        """Have ``channel`` (the worker's inbox) receive the events group's messages; a failure is logged."""
        try:
            await layer.group_add(LISTEN_EVENTS_GROUP, channel)
        except Exception:
            logger.warning("This worker could not join the listen events group; retrying at its next sweep")
            self._joined = (layer, channel, float("-inf"))
            return
        self._joined = (layer, channel, time.monotonic())

    async def leave(self) -> None:
        """The worker is shutting down: leave the events group (a killed worker's membership expires with it)."""
        joined, self._joined = self._joined, None
        if joined is not None:
            with contextlib.suppress(Exception):
                await joined[0].group_discard(LISTEN_EVENTS_GROUP, joined[1])

    async def refresh(self) -> None:
        """Join the events group again if the last join is an hour old (or failed): the sweep calls this."""
        if self._joined is not None and time.monotonic() - self._joined[2] > GROUP_REFRESH:
            await self.join(self._joined[0], self._joined[1])
