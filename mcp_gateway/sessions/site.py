"""What a session host needs from the worker that runs it, and the host's own small vocabulary.

A :class:`~mcp_gateway.sessions.host.SessionHost` belongs to its worker
(:class:`~mcp_gateway.worker.Worker`) but knows it only as a :class:`Site`,
so the session runtime never imports the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from channels.layers import BaseChannelLayer

from ..wire import Refusal
from .streams import Outlet

# The host: generic here, so that this module needs nothing of host.py (which imports it).
Host = TypeVar("Host", contravariant=True)

# Waiting messages a session's inbox holds when the channel layer sets no capacity (as Channels' default).
DEFAULT_INBOX_CAPACITY = 100

# Seconds an evicted session still gives its requests in progress to be answered before it closes (see
# mcp_sessions.eviction: the open that evicted it could not know of a request that began since the last sweep).
EVICTION_GRACE = 10.0


class Site(Protocol[Host]):
    """What a host needs from the worker that runs it (the :class:`~mcp_gateway.worker.Worker`)."""

    def adopt(self, host: Host) -> None:
        """Register ``host``: messages and connections for its session find it from now on."""

    def runs(self, host: Host) -> bool:
        """Whether ``host`` is still registered (its record's close not written yet)."""

    def forget(self, host: Host) -> None:
        """Unregister ``host``: its record is closed."""

    def outlet_for(self, layer: BaseChannelLayer, channel: str) -> Outlet:
        """The connection at ``channel``: this worker's own, or one reached through the layer."""

    def refuse(self, layer: BaseChannelLayer, message: Mapping[str, Any], why: Refusal) -> None:
        """Answer a message the session cannot take, for whoever waits on it."""

    def sweep_soon(self) -> None:
        """Have the worker's sweep running (it retries a close that could not be written)."""

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a background task of the worker."""


class SessionClosing(Exception):
    """Raised inside a host's task to close the session for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
