"""A session record's ``in_use`` column, kept in step with what its host knows, in few writes.

Whether a session is in use (holds a stream, or has a request in progress)
decides whether it may be closed to make room for another session of its
user (:mod:`mcp_sessions.eviction`), on whichever worker that open lands. The
host knows; the record says it for the other workers. It is written only when
it changed since the last write, and only when asked: by the host when its
main stream gets or loses a connection, and by the worker's sweep for the
rest. One write at a time per session, the last one always the latest state:
two writers could otherwise land out of order and leave the record saying
"not in use" for a session holding a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from channels.db import database_sync_to_async

from mcp_sessions.models import McpSession, error_summary

logger = logging.getLogger("mcp_gateway")

Start = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class UsageFlag:
    """What one session's record says of its use, and the write bringing it up to date, if one is under way."""

    # Slots: every open session holds one.
    __slots__ = ("_pk", "_ref", "_writing", "written")

    def __init__(self, pk: int, ref: str, *, written: bool) -> None:
        self._pk = pk
        self._ref = ref
        self.written = written  # what the record says now
        self._writing = False

    def sync(self, in_use: Callable[[], bool], start: Start) -> None:
        """Have the record say ``in_use()``, in the background, if it says otherwise and no write is under way."""
        if not self._writing and in_use() != self.written:
            self._writing = True
            start(self._write(in_use))

    async def _write(self, in_use: Callable[[], bool]) -> None:
        """Write the state until the record holds the latest one (it may change during a write)."""
        try:
            while (now := in_use()) != self.written:
                await database_sync_to_async(McpSession.objects.mark_in_use)(self._pk, now)
                self.written = now
        except Exception as exc:
            # The next sweep tries again; meanwhile the record errs on one side or the other for one interval.
            logger.error("Could not note whether MCP session %s is in use (%s)", self._ref, error_summary(exc))
        finally:
            self._writing = False
