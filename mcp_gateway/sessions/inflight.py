"""A session's client requests in progress (:class:`InFlight`), and the hooks that settle one left unanswered.

Split from :mod:`.actor`: the actor counts each request it delivers here and
releases it once its answer is on its way; the SDK calls :func:`settled` or
:func:`cancelled` for a request its server finished without answering. The
hooks refer to the count or the outbound queue, never to the actor (see
:meth:`.actor.SessionActor.run` for why).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import anyio
from mcp.server.streamable_http import REQUEST_CANCELLED
from mcp.shared.message import SessionMessage
from mcp_types import ErrorData, JSONRPCError, RequestId


class InFlight(Counter[RequestId]):
    """The client requests in progress, by ID; what waits for none to be left is woken when none is."""

    __slots__ = ("_settled",)  # every session keeps one, parked or not

    def __init__(self) -> None:
        super().__init__()
        self._settled: anyio.Event | None = None

    def release(self, request_id: RequestId) -> None:
        """One request ``request_id`` is no longer in progress."""
        if self[request_id] > 0:
            self[request_id] -= 1
            if not self[request_id]:
                del self[request_id]
        if not self and self._settled is not None:
            self._settled.set()
            self._settled = None

    async def wait_settled(self) -> None:
        """Return once no request is in progress."""
        if self:
            if self._settled is None:
                self._settled = anyio.Event()
            await self._settled.wait()


async def settled(in_flight: InFlight, request_id: RequestId) -> None:
    """The server finished a request without answering it (the SDK's hook; refers to the count, not the actor).

    HTTP+SSE: the reply would have gone to the session's one stream, so nothing waits for it.
    """
    in_flight.release(request_id)


async def cancelled(out_send: Any, request_id: RequestId) -> None:
    """A Streamable HTTP request settled unanswered (cancelled): end its stream with ``REQUEST_CANCELLED``.

    That era's wire ends a request's stream only with a response for its id,
    so the SDK's own transport answers here, where the dispatcher stays
    silent. The answer goes out through the ordered outbound queue, behind
    whatever the request already sent; the pump then frees the request's
    stream and its place among those in flight, as for any response.
    """
    error = ErrorData(code=REQUEST_CANCELLED, message="Request cancelled")
    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
        await out_send.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error)))
