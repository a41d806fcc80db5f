"""Worker leases: noticing that the process holding a session died.

A session runs in the worker that holds its stream. If that worker is killed
(SIGKILL, OOM, a lost machine) nothing runs its cleanup, so each worker keeps
a lease instead: a row in :class:`~mcp_sessions.models.Worker` whose heartbeat
it renews every third of ``MCP_GATEWAY_LEASE_TIMEOUT``. Sessions name their
worker. Once a worker misses its lease:

- binding treats its sessions as gone, so POSTs to them get 404 and clients
  open a new session on a live worker;
- every live worker's heartbeat sweeps them closed (``worker_lost``), which
  also frees the user's session slots.

The heartbeat also closes (``host_lost``) the records open on its own worker
that no live session of the worker holds: one whose session never got its
host (the opening request was cancelled while the record was being written,
and closing it then failed too), or lost it with the record still open. It
runs whether or not the worker has sessions left.

One heartbeat per worker, not per session: the database load does not grow
with the number of streams. The lease belongs to the process's
:class:`~mcp_gateway.worker.Worker`, which starts its task and tells it which
sessions are live.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Collection, Coroutine
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone

from mcp_sessions import audit
from mcp_sessions.models import CloseReason, McpSession, Worker
from mcp_sessions.revocation import revoke

from .conf import gateway_settings
from .tasks import stop_if_cancelled

logger = logging.getLogger("mcp_gateway")

# Worker rows that stopped beating this long ago, with no open session left, are deleted.
FORGET_AFTER = timedelta(days=1)


class WorkerLease:
    """This process's row in the workers table, and the heartbeat that keeps it, and its sessions, alive."""

    def __init__(
        self,
        *,
        start: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        live_sessions: Callable[[], Collection[int]] | None,
    ) -> None:
        self._id = uuid.uuid4().hex
        self._pid = os.getpid()
        self._start = start
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # The pks of the sessions this process runs (the worker's registry); None: not known, so no record is
        # taken for lost.
        self.live_sessions = live_sessions

    @property
    def worker_id(self) -> str:
        """This process's id: a new one in a process forked from the one that imported the gateway.

        Siblings forked from one parent must not share an id: each worker's heartbeat closes the records of its
        own id that it runs no session for, which would be its siblings' live sessions.
        """
        if os.getpid() != self._pid:
            self._id, self._pid = uuid.uuid4().hex, os.getpid()
            self._task = None  # the parent's heartbeat task does not run here
        return self._id

    async def ensure(self) -> str:
        """This process's worker id, registering it and starting its heartbeat the first time."""
        if self._task is None or self._task.done():
            async with self._lock:
                if self._task is None or self._task.done():
                    await self.register()
                    self._task = self._start(self._heartbeat())
        return self.worker_id

    async def register(self) -> None:
        """Write this worker's row now (again, if the database lost it)."""
        await database_sync_to_async(self._beat_once)()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(gateway_settings.LEASE_TIMEOUT / 3)
            try:
                await self.beat()
            except Exception:
                stop_if_cancelled()
                logger.exception("Worker heartbeat failed; retrying")

    async def beat(self) -> None:
        """Renew the lease, close the sessions of workers that missed theirs, and this worker's lost records.

        A record is lost when it is open on this worker, none of its live
        sessions holds it, and it was created more than ``LEASE_TIMEOUT`` ago:
        a session's host is registered moments after its record is written,
        and a lease is how long the gateway already lets a worker go
        unanswered before its sessions count as lost. The live sessions are
        read here, on the event loop that changes them, before the thread hop.
        """
        live = frozenset(self.live_sessions()) if self.live_sessions is not None else None
        created_before = timezone.now() - timedelta(seconds=gateway_settings.LEASE_TIMEOUT)
        lost = await database_sync_to_async(self._beat_once)(live, created_before)
        for record in lost:
            logger.warning("Closed MCP session %s: open on this worker, which no longer runs it", record.ref)
            audit.session_closed(
                user_id=record.user_id,
                remote_addr=record.remote_addr,
                session_ref=record.ref,
                reason=CloseReason.HOST_LOST,
            )

    def _beat_once(
        self, live: Collection[int] | None = None, created_before: datetime | None = None
    ) -> list[McpSession]:
        """One heartbeat, in one thread hop; with ``live``, also closes the lost records (see :meth:`beat`)."""
        now = timezone.now()
        if not Worker.objects.filter(pk=self.worker_id).update(heartbeat_at=now):
            Worker.objects.get_or_create(
                id=self.worker_id, defaults={"hostname": socket.gethostname()[:200], "pid": os.getpid()}
            )
        orphans = McpSession.objects.orphaned(gateway_settings.LEASE_TIMEOUT)
        if closed := revoke(orphans, reason=CloseReason.WORKER_LOST):
            logger.warning("Closed %d session(s) of workers that missed their lease", closed)
        busy = McpSession.objects.open().filter(worker__isnull=False).values("worker_id")
        Worker.objects.filter(heartbeat_at__lt=now - FORGET_AFTER).exclude(pk__in=busy).delete()
        if live is None or created_before is None:
            return []
        return McpSession.objects.close_hostless(self.worker_id, live, created_before)
