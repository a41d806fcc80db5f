"""Each mount's server lifespan, entered once per worker for the requests it serves per request.

A handshake-era session runs its server with ``Server.run``, which enters the lifespan per session. A
2026-07-28 request has no session: as the SDK's ``StreamableHTTPSessionManager.run`` does, the lifespan is
entered once, by the first request that needs it, held by a task of its own in this worker, and exited when
the worker stops (:func:`close_all`, which the launcher's shutdown reaches through ``worker.close_all``).
A lifespan that fails to start fails the requests that waited for it (503); the next request tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from dataclasses import dataclass, field
from typing import Any

from mcp.server.lowlevel import Server

logger = logging.getLogger("mcp_gateway")


@dataclass
class _Held:
    """One server's entered lifespan: its state once entered, and what ends it."""

    loop: asyncio.AbstractEventLoop
    state: asyncio.Future[Any]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Lifespans:
    """The lifespans this worker holds, by server."""

    def __init__(self) -> None:
        self._held: dict[int, _Held] = {}

    async def state(self, server: Server[Any]) -> Any:
        """``server``'s lifespan state, entering the lifespan first if this worker has not yet."""
        loop = asyncio.get_running_loop()
        held = self._held.get(id(server))
        if held is None or held.loop is not loop or (held.task is not None and held.task.done()):
            held = _Held(loop=loop, state=loop.create_future())
            self._held[id(server)] = held
            # A fresh context: the lifespan outlives the request that happened to start it.
            held.task = loop.create_task(self._hold(server, held), context=contextvars.Context())
        return await asyncio.shield(held.state)

    async def _hold(self, server: Server[Any], held: _Held) -> None:
        try:
            async with server.lifespan(server) as state:
                held.state.set_result(state)
                await held.stop.wait()
        except BaseException as exc:
            if not held.state.done():
                logger.exception("The lifespan of MCP server %r failed to start", getattr(server, "name", server))
                held.state.set_exception(exc if isinstance(exc, Exception) else RuntimeError("lifespan cancelled"))
                held.state.exception()  # retrieved: a request that gave up waiting leaves no "never retrieved"
            if self._held.get(id(server)) is held:
                del self._held[id(server)]
            if not isinstance(exc, Exception):
                raise

    async def close_all(self) -> None:
        """Exit every lifespan this worker entered on the running loop (the worker is stopping)."""
        loop = asyncio.get_running_loop()
        mine = [held for held in self._held.values() if held.loop is loop]
        for held in mine:
            held.stop.set()
        tasks = [held.task for held in mine if held.task is not None]
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


lifespans = Lifespans()
