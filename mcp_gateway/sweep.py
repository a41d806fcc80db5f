"""A worker's housekeeping of its sessions (:class:`Sweeper`): one task and one database hop per ``PING_INTERVAL``.

Split from :mod:`mcp_gateway.worker`, which starts it when a session opens
and tells it what to sweep (:meth:`~mcp_gateway.worker.Worker.swept`): the
session hosts and the listen streams, seen here only as
:class:`~mcp_gateway.listeners.Swept`. It knows its worker only as the
:class:`~mcp_gateway.worker_parts.SweptWorker` it is given, so this module
does not import :mod:`mcp_gateway.worker`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone

from mcp_sessions.models import CloseReason, McpSession

from .conf import gateway_settings
from .listeners import Swept
from .tasks import stop_if_cancelled
from .worker_parts import SweptWorker

logger = logging.getLogger("mcp_gateway")

# Sessions the sweep visits per loop turn: 10,000 of them in one turn held up every request for tens of ms.
SWEEP_SLICE = 256


class Sweeper:
    """Housekeeping for all of a worker's sessions, in one task and one database hop per ``PING_INTERVAL``.

    Saves the activity counts of each session and whether it is in use
    (:mod:`~mcp_gateway.sessions.usage`), closes those whose record was
    closed elsewhere (a revocation whose message to the session was lost) and
    those idle longer than ``IDLE_TIMEOUT``. One query per interval for the
    whole worker, not one per session, and no task per session. A session
    whose activity could not be written is left for the next sweep without
    holding up the others; a session whose close could not be written when
    it closed is closed again (its host stays registered until it is).
    """

    def __init__(self, worker: SweptWorker) -> None:
        self._worker = worker
        self._task: asyncio.Task[None] | None = None

    def ensure(self) -> None:
        """Have the sweep running on this loop (it stops when the worker has no session left)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = self._worker.start(self._run())

    async def _run(self) -> None:
        while self._worker.has_sessions():
            await asyncio.sleep(gateway_settings.PING_INTERVAL)
            try:
                await self.sweep()
            except Exception:
                stop_if_cancelled()
                logger.exception("Could not save the activity of this worker's sessions; retrying")

    async def sweep(self) -> None:
        loop = asyncio.get_running_loop()
        for host in [host for host in self._worker.swept() if host.close_unwritten and host.loop is loop]:
            await host.retry_close()
        if self._worker.listens:
            await self._worker.listens.refresh()
        hosts = [host for host in self._worker.swept() if host.running_on(loop)]
        if not hosts:
            return
        changes: dict[int, dict[str, Any] | None] = {}
        async for host in _a_slice_per_turn(hosts):
            host.schedule_deadline()
            host.sync_use()  # a request in progress across a sweep counts as use; a short one costs nothing
            changes[host.pk] = host.pending_activity()
        still_open, written = await database_sync_to_async(McpSession.objects.record_activity)(changes)
        idle_timeout = gateway_settings.IDLE_TIMEOUT
        now = timezone.now()
        async for host in _a_slice_per_turn(hosts):
            if host.pk in written and (fields := changes[host.pk]):
                host.activity_saved(fields)
            if not host.running_on(loop):
                continue  # it closed meanwhile
            if host.pk not in still_open:
                host.close_soon(CloseReason.REVOKED)  # closed elsewhere; the record keeps its own reason
            elif idle_timeout is not None and (now - host.last_seen).total_seconds() > idle_timeout:
                host.close_soon(CloseReason.EXPIRED)


async def _a_slice_per_turn(hosts: list[Swept]) -> AsyncIterator[Swept]:
    """``hosts`` one by one, letting the loop run whatever waits after each :data:`SWEEP_SLICE` of them."""
    for n, host in enumerate(hosts):
        if n and not n % SWEEP_SLICE:
            await asyncio.sleep(0)
        yield host
