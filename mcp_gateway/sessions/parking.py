"""Parking: an idle handshake-era session keeps its state, not its MCP server loop.

The SDK keeps all it knows of a handshake-era session after ``initialize`` in one
:class:`~mcp.server.connection.Connection`: the negotiated protocol version, the
client's ``initialize`` parameters (its capabilities and info), whether it sent
``notifications/initialized``, the per-connection ``state`` a server's handlers
keep (a log level, subscriptions) and its ``exit_stack``. Everything else of its
loop (the JSON-RPC dispatcher, its task group, the handler kernel, the queues)
is rebuilt from nothing. A 2026-07-28 session on a stream (the SDK's own client
opens one over HTTP+SSE with ``server/discover``) keeps even less: each of its
requests carries its own envelope, and its era is all it keeps.

So a handshake-era session served here runs the SDK's handshake-era
loop (:func:`serve`, what ``Server.run`` runs for a client opening with
``initialize``) on a ``Connection`` it owns: once idle for
``MCP_GATEWAY_PARK_AFTER`` seconds its loop is stopped and that ``Connection``
is all it keeps (:class:`~mcp_gateway.sessions.actor.SessionActor` parks it);
the next message, from the client or from the server (:class:`ParkedOutbound`),
starts a new loop on the same ``Connection``, already initialized.

The mount's server lifespan of such a session is the one its worker holds
(:mod:`mcp_gateway.modern.lifespan`, as the SDK's own Streamable HTTP manager
does), not one per session as ``Server.run`` enters: a parked session holds no
task to keep a lifespan of its own entered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.runner import ServerRunner, aclose_shielded
from mcp.shared.dispatcher import CallOptions, DispatchContext, Outbound
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage
from mcp.shared.transport_context import TransportContext
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, JSONRPCMessage, JSONRPCRequest

from ..conf import gateway_settings
from ..modern.lifespan import lifespans
from ..modern.sdk import continue_request_ids, has_modern_envelope, serve_modern_stream

if TYPE_CHECKING:
    from .mailbox import Mailbox

logger = logging.getLogger("mcp_gateway")

# Where a resumed loop's outbound is found; None once the session is closing.
Resume = Callable[[], Awaitable[Outbound | None]]


HANDSHAKE, MODERN = "handshake", "2026-07-28"


class ParkableActor(Protocol):
    """What :class:`Parking` uses of a session's actor (:class:`~.actor.SessionActor`, which imports this module)."""

    @property
    def last_active(self) -> float: ...  # time.monotonic() when it was last busy
    @property
    def parkable(self) -> bool: ...
    @property
    def parking(self) -> bool: ...  # parked, or being parked, until resumed

    def park(self, resume: Resume) -> None: ...
    async def serving(self) -> Any: ...


def era_opened_by(message: JSONRPCMessage) -> str | None:
    """The era ``message``, a session's first, opens (as the SDK's dual-era loop decides it).

    Only a request decides; a session whose first message is anything else is
    served by ``Server.run`` as it is, and never parked (None).
    """
    if not isinstance(message, JSONRPCRequest):
        return None
    return MODERN if message.method != "initialize" and has_modern_envelope(message.params) else HANDSHAKE


def new_connection() -> Connection:
    """A handshake-era connection, not initialized yet; each loop that serves it sets its ``outbound``.

    Its ``exit_stack`` is made when a handler first uses it (:class:`_LazyExitStack`).
    """
    connection = Connection.for_loop(_CLOSED)
    connection.exit_stack = cast("AsyncExitStack", _LazyExitStack(connection))
    return connection


class _LazyExitStack:
    """A connection's ``exit_stack`` until it is used: then a real one takes its place on the connection.

    Most sessions never push anything on it, and an empty ``AsyncExitStack`` holds a deque (about 750 bytes).
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        stack = AsyncExitStack()
        self._connection.exit_stack = stack
        return getattr(stack, name)


def dispatcher_for(
    read_stream: Any, write_stream: Any, connection: Connection, *, request_ids_used: int
) -> JSONRPCDispatcher[TransportContext]:
    """The dispatcher of one loop over ``connection``, its outbound from now on.

    ``initialize`` runs inline, as in the SDK's own loop, so that a request the
    client pipelines behind it sees the session initialized; server-to-client
    request IDs carry on after those an earlier loop used.
    """
    dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
        read_stream, write_stream, inline_methods=frozenset({"initialize"})
    )
    continue_request_ids(dispatcher, request_ids_used)
    connection.outbound = dispatcher
    return dispatcher


async def serve(
    server: Server[Any], dispatcher: JSONRPCDispatcher[TransportContext], connection: Connection, started: anyio.Event
) -> None:
    """Run ``dispatcher`` over ``connection`` until its read stream ends (``started`` is set once it serves)."""
    runner = ServerRunner(server, connection, await lifespans.state(server))

    async def on_request(
        dctx: DispatchContext[TransportContext], method: str, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        if method != "initialize" and has_modern_envelope(params):
            # As the SDK's handshake-era loop refuses them.
            raise MCPError(
                code=INVALID_REQUEST,
                message="this connection serves the handshake protocol era; "
                "requests carrying the 2026-07-28 envelope are not accepted on it",
            )
        return await runner.on_request(dctx, method, params)

    await dispatcher.run(on_request, runner.on_notify, task_status=_Started(started))


async def serve_modern(server: Server[Any], read_stream: Any, write_stream: Any, started: anyio.Event) -> None:
    """The SDK's 2026-07-28 loop over a session's streams (``initialize`` refused, every request enveloped)."""
    lifespan_state = await lifespans.state(server)
    started.set()
    await serve_modern_stream(server, read_stream, write_stream, lifespan_state=lifespan_state, raise_exceptions=False)


_SET: list[anyio.Event] = []  # the one set event every parked, initialized connection shares


def settle(connection: Connection) -> None:
    """A parked ``connection``: once initialized, its own ``initialized`` event (set) gives way to a shared one.

    A set event never clears, and whoever waited on it woke when it was set; each one holds an asyncio event
    and its deque of waiters, about 760 bytes.
    """
    if connection.initialized.is_set():
        if not _SET:
            event = anyio.Event()
            event.set()
            _SET.append(event)
        connection.initialized = _SET[0]


async def end(connection: Connection) -> None:
    """The session is over: unwind its connection's ``exit_stack``, and send nothing more through it."""
    connection.outbound = _CLOSED
    await aclose_shielded(connection)


class ParkedOutbound:
    """A parked session's ``Connection.outbound``: what a server sends meanwhile resumes the session first.

    A server's handlers may keep a session (a background task notifying its
    client later, a subscription's ``resources/updated``): that message goes
    out through the new loop, ordered with everything else the session sends.
    """

    __slots__ = ("_resume",)

    def __init__(self, resume: Resume) -> None:
        self._resume = resume

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        outbound = await self._resume()
        if outbound is None:
            logger.debug("dropped %s: the session is closing", method)
            return
        await outbound.notify(method, params, opts)

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        outbound = await self._resume()
        if outbound is None:
            raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")
        return await outbound.send_raw_request(method, params, opts)


class _ClosedOutbound:
    """The outbound of a connection no loop serves: before its first, and once its session is over."""

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        logger.debug("dropped %s: the session is closed", method)

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")


_CLOSED = _ClosedOutbound()


class _Started:
    """The ``task_status`` of a loop: sets an event once it serves."""

    __slots__ = ("_event",)

    def __init__(self, event: anyio.Event) -> None:
        self._event = event

    def started(self, value: object = None) -> None:
        self._event.set()


def _closed_queues() -> tuple[Any, Any, Any, Any]:
    send, receive = anyio.create_memory_object_stream[SessionMessage](0)
    send.close()
    receive.close()
    return send, receive, send, receive


# What every parked session's queues are: closed, holding nothing, shared.
CLOSED_QUEUES = _closed_queues()


class Parking:
    """What a :class:`~.host.SessionHost` does to park its server loop, and to resume it for its server.

    The host's inbox task parks the loop (:meth:`_next_message`); a client
    message resumes it (the host's ``_actor``), and so does what the server
    sends a parked session (:meth:`_resume_for_server`).
    """

    __slots__ = ()
    # The host's, see SessionHost.
    actor: ParkableActor | None
    _actor_task: asyncio.Task[None] | None
    _loop: asyncio.AbstractEventLoop | None
    _mail: Mailbox
    _task: asyncio.Task[None] | None

    @property
    def accepting(self) -> bool:
        raise NotImplementedError

    def _actor(self, first: JSONRPCMessage | None) -> ParkableActor:
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError

    async def _next_message(self) -> Mapping[str, Any] | None:
        """The next message of the inbox; None once the server loop was parked and none came meanwhile.

        A loop is parked (see :mod:`.parking`) once it has been idle for
        ``PARK_AFTER`` seconds; it is waited for, and then its inbox, a
        timer's worth at a time, only while a loop runs.
        """
        park_after = gateway_settings.PARK_AFTER
        while True:
            actor = self.actor
            if park_after is None or actor is None or self._actor_task is None or self._mail:
                message: Mapping[str, Any] = await self._mail.get()
                return message
            left = actor.last_active + park_after - time.monotonic()
            if left <= 0:
                if actor.parkable:
                    await self._park(actor, self._actor_task)
                    if not self._mail:
                        return None
                    continue
                left = park_after
            with anyio.move_on_after(left):
                message = await self._mail.get()
                return message

    async def _park(self, actor: ParkableActor, task: asyncio.Task[None]) -> None:
        """Stop the idle server loop of ``actor`` (which ``task`` runs), keeping the session's state."""
        actor.park(self._resume_for_server)
        await asyncio.wait([task])

    async def _resume_for_server(self) -> Any:
        """A parked session's server sends something: serve it again; the outbound to send it by (None: closing)."""
        task = self._actor_task
        if task is not None and self.actor is not None and self.actor.parking:
            await asyncio.wait([task])  # being parked still: then resumed
        if not self.accepting or self._loop is None:
            return None
        actor = self._actor(None)
        if self._task is None:
            self._wake()  # its inbox is read again, and the loop parked again once idle
        return await actor.serving()
