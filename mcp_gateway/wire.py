"""What travels on the channel layer between workers and connections, and nothing that needs to know who runs what.

Every channel-layer message the gateway sends is one of the TypedDicts
below; their ``type`` names the Channels handler that receives them
(``mcp.end`` → ``mcp_end``). Two kinds of address receive them:

- a worker's one inbox (:class:`~mcp_gateway.inbox.WorkerInbox`), shared by
  every session it runs: :data:`InboxMessage`, tagged with the session's
  record pk (``session``, or ``sessions`` for a revocation of several); as a
  member of :data:`LISTEN_EVENTS_GROUP`, it also receives every
  :class:`ListenEventMessage`, which no pk tags;
- a connection's own channel, while it carries a stream of a session that
  another worker runs: :data:`ConnectionMessage`.

Every worker's inbox is also in one group, :data:`CREDENTIALS_GROUP`, which
hears of every revoked credential (:class:`ForgetCredentialsMessage`), whether
or not a session of it is open anywhere.

This module is the bottom of the session runtime: it imports no session and
no worker, so both can use it. Which host is in this process (and so whether
a message can skip the layer) is the :class:`~mcp_gateway.worker.Worker`'s
knowledge; see :meth:`~mcp_gateway.worker.Worker.send_to_session`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from mcp_sessions.models import CloseReason

logger = logging.getLogger("mcp_gateway")

# How a stream ends when its request was refused because the session's inbox was full (the client gets 503).
BUSY = CloseReason.BUSY


class Attach(enum.StrEnum):
    """How a request to carry a stream was answered (the ``status`` of ``mcp.attached``)."""

    OK = "ok"
    CONFLICT = "conflict"  # the stream already has a connection
    LOST = "lost"  # events the client missed are gone; the session closes
    UNKNOWN = "unknown"  # the client named an event this session never sent
    GONE = "gone"  # the session closed meanwhile


class OutletClosed(Exception):
    """The connection carrying a stream can take no more events."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# To a worker's inbox


class CallerFields(TypedDict):
    """The credential a client message came with, as its context names it (:func:`mcp_gateway.caller.caller_fields`).

    A session may be reached with another credential of its user than the one that opened it (a scoped token,
    a login): each message is decided by its own (the scopes it allows) and recorded under it.
    """

    credential_kind: str
    credential_ref: str
    token_id: int | None
    client_id: str
    scopes: list[str] | None


class InboundBody(TypedDict):
    """A client message for its session: what the host reads of an ``mcp.inbound`` message.

    ``body`` is the JSON-RPC message as the client sent it; ``parsed`` is
    that message validated already, set only when the sender is in the
    session's own process (never serialised). With ``reply_to``, a request
    whose own stream goes to the connection at that channel. ``credential``:
    what the request presented (:class:`CallerFields`).
    """

    body: NotRequired[bytes | str]
    parsed: NotRequired[Any]  # a JSONRPCMessage; Any: it never crosses the layer, and the host validates bodies
    headers: NotRequired[dict[str, str]]
    reply_to: NotRequired[str]
    credential: NotRequired[CallerFields]


class InboundMessage(InboundBody):
    type: Literal["mcp.inbound"]
    session: NotRequired[int]


class AttachMessage(TypedDict):
    """Carry ``stream`` of ``session`` at ``reply_to``, replaying what followed event ``after``."""

    type: Literal["mcp.attach"]
    session: NotRequired[int]
    reply_to: str
    stream: int
    after: str | None
    replace: NotRequired[bool]


class DetachMessage(TypedDict):
    """The connection at ``reply_to`` no longer carries any stream of ``session``."""

    type: Literal["mcp.detach"]
    session: NotRequired[int]
    reply_to: str
    reason: str


class CloseMessage(TypedDict):
    """Close these sessions (revocation, ``DELETE`` from another worker): one message per worker."""

    type: Literal["mcp.close"]
    session: NotRequired[int]
    sessions: NotRequired[list[int]]
    reason: str


# The channel-layer group of every worker that caches verified credentials (mcp_gateway.credcache).
CREDENTIALS_GROUP = "mcp_gateway.credentials"


class ForgetCredentialsMessage(TypedDict):
    """Credentials just revoked: every worker drops them from its cache of verified credentials (a group message).

    ``fingerprints`` name credentials (:func:`~mcp_gateway.auth.token_fingerprint`,
    :func:`~mcp_gateway.auth.login_fingerprint`); ``user`` (its pk, as a string)
    names all of a user's, except those of a token with ``keep_tokens`` (a
    password change ends logins, not tokens).
    """

    type: Literal["mcp.forget_credentials"]
    fingerprints: list[str]
    user: NotRequired[str]
    keep_tokens: NotRequired[bool]


class ForgetPermissionsMessage(TypedDict):
    """A user's permissions changed (or, without ``user``, anyone's): every worker drops them from its
    :mod:`~mcp_gateway.permcache` (a group message to :data:`CREDENTIALS_GROUP`). ``user``: the pk, as a string."""

    type: Literal["mcp.forget_permissions"]
    user: NotRequired[str]


class LayerLostMessage(TypedDict):
    """The channel layer failed under a receiver: what it was waiting for may be gone."""

    type: Literal["mcp.layer_lost"]


# The channel-layer group every worker's inbox joins: events for listen streams, sent once, reach them all.
LISTEN_EVENTS_GROUP = "mcp_gateway.listen_events"

# A listen event's kind: a list that changed, or one resource (then ``uri`` names it).
ListenEventKind = Literal["tools_list_changed", "prompts_list_changed", "resources_list_changed", "resource_updated"]


class ListenEventMessage(TypedDict):
    """A server event for ``subscriptions/listen`` streams, sent to :data:`LISTEN_EVENTS_GROUP`.

    ``user`` is the pk (as text) of the only user whose streams may receive it; ``None``: every user's.
    """

    type: Literal["mcp.listen_event"]
    kind: ListenEventKind
    uri: NotRequired[str]
    user: str | None


class SenderMessage(TypedDict):
    """To a session's worker: the sender's worker is about to send ``session`` messages; answer on ``reply_to``.

    See :mod:`~mcp_gateway.senders` for why a worker says so before its first message to a session elsewhere.
    """

    type: Literal["mcp.sender"]
    session: int
    reply_to: str


InboxMessage = (
    InboundMessage
    | AttachMessage
    | DetachMessage
    | CloseMessage
    | ForgetCredentialsMessage
    | LayerLostMessage
    | ListenEventMessage
    | SenderMessage
)


# To a connection's channel


class AttachedMessage(TypedDict):
    """The answer to ``mcp.attach``: the first message on the connection's channel, ahead of any event."""

    type: Literal["mcp.attached"]
    status: str  # an Attach value


class EventMessage(TypedDict):
    """One event (see ``Event.as_message``) for a stream that a connection in another worker carries."""

    type: Literal["mcp.event"]
    id: str
    stream: int
    seq: int
    name: str
    data: str
    final: bool


class EndMessage(TypedDict):
    """The stream is over: its session closed, another connection took it over, or its request was refused."""

    type: Literal["mcp.end"]
    reason: str


class SenderKnownMessage(TypedDict):
    """The answer to ``mcp.sender``: ``ok`` once the session is marked as heard from elsewhere; ``gone``: not here."""

    type: Literal["mcp.sender_known"]
    status: Literal["ok", "gone"]


ConnectionMessage = AttachedMessage | EventMessage | EndMessage | LayerLostMessage | SenderKnownMessage


class SupportsMessage(Protocol):
    """An event that can travel: :class:`~mcp_gateway.sessions.events.Event`."""

    def as_message(self) -> EventMessage: ...


class RemoteOutlet:
    """A connection held by another worker, reached through its channel: a session's ``Outlet`` for it."""

    def __init__(self, layer: BaseChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel

    async def deliver(self, event: SupportsMessage) -> None:
        try:
            await self.layer.send(self.channel, event.as_message())
        except ChannelFull:
            raise OutletClosed(CloseReason.STALLED) from None

    async def end(self, reason: str) -> None:
        message: EndMessage = {"type": "mcp.end", "reason": reason}
        try:
            await self.layer.send(self.channel, message)
        except Exception:
            logger.warning("Could not tell a remote stream to end", exc_info=True)


async def send_quietly(layer: BaseChannelLayer, channel: str, message: Mapping[str, Any]) -> None:
    """Send ``message`` to ``channel``, if the layer can: an answer nobody may wait for any more (a background task)."""
    with contextlib.suppress(Exception):
        await layer.send(channel, message)


def receiver(layer: BaseChannelLayer, channel: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``layer.receive(channel)`` that turns a lost channel layer into a message instead of a crash.

    A socket timeout is retried (it races channels-redis's own blocking pop
    when redis-py's timeout is not above 5 s). Any other failure (Redis went
    away) yields ``{"type": "mcp.layer_lost"}``: messages queued there may be
    gone, so the receiver ends what depends on them, as a clear error.
    """

    async def receive() -> dict[str, Any]:
        while True:
            try:
                message: dict[str, Any] = await layer.receive(channel)
                return message
            except TimeoutError:
                continue
            except Exception:
                logger.warning("Channel layer receive failed", exc_info=True)
                return {"type": "mcp.layer_lost"}

    return receive


# Why a session cannot take a message: it is gone, or its inbox is full.
Refusal = Literal["gone", "full"]


def refusal(message: Mapping[str, Any], why: Refusal) -> AttachedMessage | EndMessage | None:
    """The answer to a message its session cannot take, for the connection at its ``reply_to``.

    A connection waiting on it (a stream attaching, a Streamable HTTP request)
    is told at once instead of timing out; a message nobody waits on (a
    client notification, a revocation, a detach) needs no answer: ``None``.
    """
    if not isinstance(message.get("reply_to"), str):
        return None
    if message.get("type") == "mcp.attach":
        return {"type": "mcp.attached", "status": Attach.GONE.value}
    if message.get("type") == "mcp.inbound":
        return {"type": "mcp.end", "reason": CloseReason.REVOKED if why == "gone" else BUSY}
    return None
