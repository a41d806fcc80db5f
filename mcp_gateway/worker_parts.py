"""What a worker's parts see of the :class:`~mcp_gateway.worker.Worker` that holds them, as protocols.

The worker builds its inbox (:mod:`~mcp_gateway.inbox`) and its sweep
(:mod:`~mcp_gateway.sweep`) and hands itself to them; they in turn call back
into its registries. Each part names here only what it uses of the worker, so
that neither imports :mod:`mcp_gateway.worker`, which imports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

from channels.layers import BaseChannelLayer

from .credcache import RevocationFeed
from .keepalive import Keepalive
from .listeners import ListenRegistry, Swept
from .senders import Senders
from .sessions.host import SessionHost
from .wire import Refusal


class StartsTasks(Protocol):
    """A worker as far as it runs background tasks (:meth:`~mcp_gateway.worker.Worker.start`)."""

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


class SweptWorker(StartsTasks, Protocol):
    """What the sweep (:class:`~mcp_gateway.sweep.Sweeper`) uses of its worker."""

    @property
    def listens(self) -> ListenRegistry: ...

    def has_sessions(self) -> bool: ...
    def swept(self) -> list[Swept]: ...


class InboxWorker(StartsTasks, Protocol):
    """What the inbox (:class:`~mcp_gateway.inbox.WorkerInbox`) uses of its worker."""

    @property
    def listens(self) -> ListenRegistry: ...
    @property
    def senders(self) -> Senders: ...
    @property
    def keepalive(self) -> Keepalive: ...
    @property
    def revocations(self) -> RevocationFeed: ...

    def local_host(self, pk: int | None) -> SessionHost | None: ...
    def hosts_on(self, loop: asyncio.AbstractEventLoop) -> list[SessionHost]: ...
    def refuse(self, layer: BaseChannelLayer, message: Mapping[str, Any], why: Refusal) -> None: ...
