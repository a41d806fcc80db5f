"""One live MCP session, run in the worker that holds its stream.

The actor runs the SDK's server loop over two bounded in-memory streams.
Client messages arrive through :meth:`SessionActor.deliver` (its session
host feeds it from the channel layer); server messages leave through a
``sink``, the host's router to the streams of either transport.
The actor knows nothing of HTTP, and nothing here touches the database: it
only counts, and its worker's sweep (:class:`~mcp_gateway.sweep.Sweeper`)
persists the counts now and then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from django.utils import timezone
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import (
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)

from mcp_gateway.exceptions import TOO_MANY_REQUESTS
from mcp_sessions.choices import Transport
from mcp_sessions.models import McpSession
from mcp_sessions.text import clean_field

from ..caller import context_overrides
from ..context import GatewayRequestContext
from ..modern.sdk import awaits_answers, request_ids_used
from . import parking
from .inflight import InFlight, cancelled, settled

Sink = Callable[[SessionMessage], Awaitable[None]]


@dataclasses.dataclass(slots=True)
class Activity:
    """What the record should learn at the next flush."""

    messages_in: int = 0
    messages_out: int = 0
    client_name: str = ""
    client_version: str = ""
    protocol_version: str = ""


class SessionActor:
    # Slots, not a __dict__: every session keeps its actor, parked or not. A weak reference is what shows, in the
    # tests, that a closed session's actor is freed.
    __slots__ = (
        "__weakref__",
        "_client_known",
        "_dispatcher",
        "_flushed",
        "_in_flight",
        "_in_recv",
        "_in_send",
        "_inbound_size",
        "_initialize_id",
        "_out_recv",
        "_out_send",
        "_outbound_size",
        "_request_ids",
        "_started",
        "activity",
        "connection",
        "context",
        "era",
        "last_active",
        "last_seen",
        "max_in_flight",
        "parking",
        "server",
        "sink",
    )

    def __init__(
        self,
        server: Server[Any],
        *,
        context: GatewayRequestContext,
        sink: Sink,
        inbound_size: int,
        outbound_size: int,
        max_in_flight: int,
    ) -> None:
        self.server = server
        self.context = context
        self.sink = sink
        self._inbound_size, self._outbound_size = inbound_size, outbound_size
        self._open_queues()
        self.activity = Activity()
        self.last_seen = timezone.now()
        self._flushed = dataclasses.replace(self.activity)
        self.max_in_flight = max_in_flight
        self._in_flight = InFlight()
        self._initialize_id: Any = None
        self._client_known = False
        # Parking (see .parking): the SDK connection it keeps, the loop serving it now, and when it was last busy.
        self.era: str | None = None
        self.connection: Connection | None = None
        self._dispatcher: Any = None
        self._started = anyio.Event()
        self._request_ids = 0
        self.parking = False
        self.last_active = time.monotonic()

    def _open_queues(self) -> None:
        self._in_send, self._in_recv = anyio.create_memory_object_stream[SessionMessage | Exception](self._inbound_size)
        self._out_send, self._out_recv = anyio.create_memory_object_stream[SessionMessage](self._outbound_size)

    def prepare(self, first: JSONRPCMessage, *, parkable: bool) -> None:
        """Choose its loop for its ``first`` message: with ``parkable``, one that can park (see .parking)."""
        self.era = parking.era_opened_by(first) if parkable else None
        if self.era == parking.HANDSHAKE:
            self.connection = parking.new_connection()
            self._dispatcher = parking.dispatcher_for(
                self._in_recv.clone(), self._out_send, self.connection, request_ids_used=0
            )

    @property
    def parkable(self) -> bool:
        """Serving a parkable loop with nothing in progress: no request, no answer awaited, nothing queued."""
        return (
            self.era is not None
            and self._started.is_set()
            and not self._in_flight
            and (self._dispatcher is None or not awaits_answers(self._dispatcher))
            and self._in_send.statistics().current_buffer_used == 0
            and self._out_recv.statistics().current_buffer_used == 0
        )

    def park(self, resume: parking.Resume) -> None:
        """Stop its loop, which :meth:`run` then returns from; what the server sends meanwhile calls ``resume``.

        The loop ends as it would at the end of its input: nothing is in
        progress (:attr:`parkable`), and whatever it has sent still reaches the sink.
        """
        self.parking = True
        if self.connection is not None:
            self._request_ids = request_ids_used(self._dispatcher)
            self.connection.outbound = parking.ParkedOutbound(resume)
        self._in_send.close()

    def parked(self) -> None:
        """Its loop has stopped (:meth:`park`): let go of all but the connection."""
        self._dispatcher = None
        self._in_send, self._in_recv, self._out_send, self._out_recv = parking.CLOSED_QUEUES
        del self._started  # resume() makes a new one
        if self.connection is not None:
            parking.settle(self.connection)

    def resume(self) -> None:
        """Serve its parked connection again: :meth:`run` starts a new loop over new queues."""
        self.parking = False
        self._started = anyio.Event()
        self._open_queues()
        if self.connection is not None:
            self._dispatcher = parking.dispatcher_for(
                self._in_recv.clone(), self._out_send, self.connection, request_ids_used=self._request_ids
            )
        self.last_active = time.monotonic()

    async def serving(self) -> Any:
        """Its loop's outbound, once that loop serves."""
        await self._started.wait()
        return self._dispatcher

    async def end(self) -> None:
        """The session is over: end its connection (see :func:`.parking.end`), if it has one."""
        if self.connection is not None:
            await parking.end(self.connection)

    async def run(self) -> None:
        """Serve until the client side closes, the server ends, or the task is cancelled.

        The server loop runs in a child task and the pump in the caller's. A
        cancelled anyio child task leaves a reference cycle behind (its
        cancellation's traceback holds the frames it was cancelled in, and one
        of them holds that cancellation), freed only by a full collection. So
        nothing a child task runs refers to this actor (nor does the hook each
        request carries, see :meth:`deliver`), and a closed session's actor is
        freed at once by reference counting; the queues, which the SDK's
        frames in such a cycle still refer to, are emptied here, so the cycle
        keeps no message alive.
        """
        options = self.server.create_initialization_options()
        try:
            async with anyio.create_task_group() as tg:
                if self.connection is not None:
                    tg.start_soon(parking.serve, self.server, self._dispatcher, self.connection, self._started)
                elif self.era == parking.MODERN:
                    read = self._in_recv.clone()
                    tg.start_soon(parking.serve_modern, self.server, read, self._out_send, self._started)
                else:
                    # A clone: the SDK closes the stream it reads, and this end must still be drained.
                    tg.start_soon(self.server.run, self._in_recv.clone(), self._out_send, options)
                await self._pump()
        finally:
            # Wake a deliver() waiting on a full queue (nothing will read it now), and drop what nobody will read.
            for receiving in (self._in_recv, self._out_recv):
                _drain(receiving)
                receiving.close()
            self._in_send.close()
            self._out_send.close()

    async def deliver(
        self, message: JSONRPCMessage, headers: Mapping[str, str], caller: Mapping[str, Any] | None = None
    ) -> None:
        """Hand one client message to the server.

        Waits when the inbound queue is full, which in turn fills the session's
        inbox: further messages are then refused (503, or an ended request
        stream) rather than queued without bound.
        A request beyond ``max_in_flight`` unanswered ones is answered at once
        with a JSON-RPC error: every request in progress may hold a result in
        memory, so their number is what bounds a session's memory.
        """
        self._observe_inbound(message)
        self.last_active = time.monotonic()
        # The request's own credential (its scopes, what records name), which need not be the session opener's.
        context = dataclasses.replace(self.context, headers=dict(headers), **context_overrides(caller))
        metadata = ServerMessageMetadata(request_context=context)
        if isinstance(message, JSONRPCRequest):
            if self._in_flight.total() >= self.max_in_flight:
                self._refuse(message.id)
                return
            self._in_flight[message.id] += 1
            if self.context.transport == Transport.STREAMABLE_HTTP:
                metadata.on_request_unanswered = functools.partial(cancelled, self._out_send, message.id)
            else:
                metadata.on_request_unanswered = functools.partial(settled, self._in_flight, message.id)
        try:
            await self._in_send.send(SessionMessage(message, metadata=metadata))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the session is ending; its stream is closing too

    @property
    def in_flight(self) -> int:
        """How many client requests are in progress."""
        return self._in_flight.total()

    async def wait_settled(self) -> None:
        """Return once every client request in progress has been answered (or settled unanswered)."""
        await self._in_flight.wait_settled()

    def pending_activity(self) -> dict[str, Any] | None:
        """Fields changed since the record last saved them; None if nothing did.

        Nothing is marked saved here: the caller reports a successful write
        with :meth:`activity_saved`, so a failed or dropped write is retried.
        """
        changed = {
            f.name: getattr(self.activity, f.name)
            for f in dataclasses.fields(self.activity)
            if getattr(self.activity, f.name) != getattr(self._flushed, f.name)
        }
        if not changed:
            return None
        changed["last_seen_at"] = self.last_seen
        return changed

    def activity_saved(self, fields: dict[str, Any]) -> None:
        """The record now holds ``fields`` (as returned by :meth:`pending_activity`)."""
        for name, value in fields.items():
            if hasattr(self._flushed, name):
                setattr(self._flushed, name, value)

    def all_activity(self) -> dict[str, Any]:
        """Every activity field, for the final write when the session closes."""
        return {**dataclasses.asdict(self.activity), "last_seen_at": self.last_seen}

    def release(self) -> None:
        """The session is over: forget its host's router, which refers back to the host (and this actor)."""
        self.sink = _discard

    async def _pump(self) -> None:
        async for session_message in self._out_recv:
            message = session_message.message
            self.activity.messages_out += 1
            answered = message.id if isinstance(message, JSONRPCResponse | JSONRPCError) else None
            if answered is not None and self._initialize_id is not None:
                self._observe_initialize_result(message)
            await self.sink(session_message)
            if answered is not None:
                # Once handed to its stream: a request counts as in progress until its answer is on its way.
                self._in_flight.release(answered)
            self.last_active = time.monotonic()

    def _refuse(self, request_id: RequestId) -> None:
        error = ErrorData(code=TOO_MANY_REQUESTS, message="Too many requests in progress in this session")
        try:
            self._out_send.send_nowait(SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error)))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the client is not reading; the stall timeout will close the stream

    def _observe_inbound(self, message: JSONRPCMessage) -> None:
        self.activity.messages_in += 1
        self.last_seen = timezone.now()
        if self._client_known or not isinstance(message, JSONRPCRequest):
            return
        params = message.params or {}
        if message.method == "initialize":
            info = params.get("clientInfo") or {}
            self._initialize_id = message.id
            self._set_client(info, params.get("protocolVersion"))
        else:
            meta = params.get("_meta") or {}
            if isinstance(meta, dict) and CLIENT_INFO_META_KEY in meta:
                self._set_client(meta.get(CLIENT_INFO_META_KEY) or {}, meta.get(PROTOCOL_VERSION_META_KEY))

    def _observe_initialize_result(self, message: JSONRPCMessage) -> None:
        if isinstance(message, JSONRPCResponse) and message.id == self._initialize_id:
            version = (message.result or {}).get("protocolVersion")
            if isinstance(version, str):
                self.activity.protocol_version = clean_field(McpSession, "protocol_version", version)
            self._initialize_id = None

    def _set_client(self, info: Any, protocol_version: Any) -> None:
        if not isinstance(info, dict):
            return
        self._client_known = True
        # Cleaned as the record will store them, so that what this session keeps in memory is bounded too.
        self.activity.client_name = clean_field(McpSession, "client_name", info.get("name") or "")
        self.activity.client_version = clean_field(McpSession, "client_version", info.get("version") or "")
        if isinstance(protocol_version, str):
            self.activity.protocol_version = clean_field(McpSession, "protocol_version", protocol_version)


async def _discard(session_message: SessionMessage) -> None:
    """The sink of a session that is over."""


def _drain(stream: MemoryObjectReceiveStream[Any]) -> None:
    """Drop what ``stream`` still holds."""
    with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
        while True:
            stream.receive_nowait()
