"""Backpressure for long-lived streams.

ASGI gives an application no way to know that a client stopped reading, and
daphne's ``send`` never waits: a stalled client makes daphne buffer without
bound. Under daphne we register a Twisted push producer on the request, so
Twisted tells us when its send buffer fills (``pauseProducing``) and drains
(``resumeProducing``). Servers whose ``send`` already waits for the socket
(uvicorn, hypercorn) need nothing: :class:`NoFlowControl` is used there.

Either way the caller bounds the wait with a stall timeout and closes the
stream when it expires, so a worker's memory per stream stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer  # Twisted depends on zope.interface


class FlowControl(Protocol):
    def ready(self) -> bool:
        """Whether a write now goes out without waiting, neither here nor inside ``send``."""
        ...

    async def writable(self) -> None:
        """Return when the transport can take more data."""
        ...

    def release(self) -> None:
        """Stop watching the transport (before the response ends)."""
        ...


class NoFlowControl:
    def ready(self) -> bool:
        return False  # the server's own send may wait for the socket

    async def writable(self) -> None:
        return None

    def release(self) -> None:
        return None


@implementer(IPushProducer)
class DaphneFlowControl:
    """A Twisted push producer whose pause state gates our writes."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self._paused = bool(getattr(request.channel, "_waitingForTransport", False))
        self._waiter: asyncio.Future[None] | None = None  # created only while a write waits
        request.registerProducer(self, True)

    def ready(self) -> bool:
        return not self._paused  # daphne's send never waits

    async def writable(self) -> None:
        while self._paused:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)

    def _resume(self) -> None:
        self._paused = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    def release(self) -> None:
        self._resume()
        if self._request.producer is self:
            # After connectionLost the request has no channel left to unregister from.
            with contextlib.suppress(AttributeError, RuntimeError):
                self._request.unregisterProducer()

    # IPushProducer, called by Twisted on the event loop thread.
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._resume()

    def stopProducing(self) -> None:
        # The connection is gone; ``http.disconnect`` follows and ends the stream.
        self._resume()


def flow_control_for(send: Any) -> FlowControl:
    """The right flow control for the ASGI server behind ``send``."""
    request = send.args[0] if isinstance(send, functools.partial) and send.args else None
    if (
        request is not None
        and hasattr(request, "registerProducer")
        and getattr(request, "channel", None) is not None
        and getattr(request, "producer", None) is None
    ):
        return DaphneFlowControl(request)
    return NoFlowControl()
