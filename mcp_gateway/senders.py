"""Which sessions take messages from other workers: the rule that lets a message skip the channel layer in order.

A client that waited for its 202 before sending the next message must be
served in that order, whichever workers took the two POSTs. The channel layer
keeps the order of what travels through it; a message handed straight to a
host in this worker keeps it too, **as long as no message for that session can
be in the layer**. So:

- a worker sending a client message to a session that runs elsewhere first
  tells that session's worker, once per session (:meth:`Senders.announce`:
  an ``mcp.sender`` message, answered ``mcp.sender_known``), and only then
  sends the message, through the layer;
- the host's worker, hearing it, marks the session shared
  (:meth:`Senders.heard`) before it answers;
- a message taken by the host's own worker skips the layer only while the
  session is not shared (:meth:`Senders.direct`); once shared, its messages
  all travel through the layer, behind whatever another worker sent.

So a message from another worker was sent after the session was marked, and
any message accepted here after that one's 202 goes through the layer after
it. A session that only ever hears from its own worker (one worker, or a
proxy that keeps a client on one worker) pays no channel-layer round trip per
message; one that hears from another worker pays one announcement (a message
and its answer through the layer) per other worker, then the layer's round
trips for every message, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import anyio
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from .exceptions import ServiceUnavailable, SessionNotFound
from .wire import SenderMessage

# Seconds to wait for a session's worker to answer an announcement, unless the layer keeps messages longer (its
# ``expiry``): the announcement waits in that worker's inbox behind the messages before it, as the message would.
ANNOUNCE_TIMEOUT = 5.0

# Sessions elsewhere a worker remembers having announced itself to; one forgotten is announced again.
ANNOUNCED_SIZE = 10_000


class Senders:
    """One worker's side of the rule in the module docstring, both as a session's host and as a sender."""

    def __init__(self) -> None:
        self._shared: set[int] = set()  # pks of sessions here that another worker sends to
        self._announced: OrderedDict[tuple[str, int], None] = OrderedDict()  # (worker address, pk) told

    def direct(self, pk: int) -> bool:
        """Whether a message taken here for session ``pk``, which runs here, may skip the channel layer."""
        return pk not in self._shared

    def heard(self, pk: int) -> None:
        """Another worker will send session ``pk`` messages: from now on this worker's go through the layer too."""
        self._shared.add(pk)

    def forget(self, pk: int) -> None:
        """Session ``pk`` no longer runs here."""
        self._shared.discard(pk)

    async def announce(self, layer: BaseChannelLayer, channel: str, pk: int) -> None:
        """Make sure the worker at ``channel`` knows this one sends session ``pk`` messages, before sending one.

        :class:`ServiceUnavailable` if it does not answer in time (no message was sent: the client may retry),
        :class:`SessionNotFound` if the session is not there.
        """
        key = (channel, pk)
        if key in self._announced:
            self._announced.move_to_end(key)
            return
        reply_to = await layer.new_channel()
        request: SenderMessage = {"type": "mcp.sender", "session": pk, "reply_to": reply_to}
        try:
            await layer.send(channel, request)
            with anyio.fail_after(max(ANNOUNCE_TIMEOUT, float(getattr(layer, "expiry", 0)))):
                answer: dict[str, Any] = await layer.receive(reply_to)
        except (ChannelFull, TimeoutError):
            raise ServiceUnavailable("The session's worker did not answer, retry later") from None
        if answer.get("status") != "ok":
            raise SessionNotFound()
        self._announced[key] = None
        while len(self._announced) > ANNOUNCED_SIZE:
            self._announced.popitem(last=False)
