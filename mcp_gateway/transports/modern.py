"""Protocol 2026-07-28 at ``<prefix>``: self-contained POSTs, served per request in this worker.

A request whose ``MCP-Protocol-Version`` is not a handshake-era version is one of these (the SDK's own
routing, ``StreamableHTTPSessionManager.handle_request``); the handshake era and HTTP+SSE are untouched.
There is no ``initialize`` and no ``Mcp-Session-Id``: each POST carries one JSON-RPC request whose
``params._meta`` names the protocol version, the client and its capabilities.

Every POST takes the handshake era's path in front of the MCP server: the guards (Host, Origin, content type,
body size), the consumer's body limit, the full authentication (cookie with CSRF, or bearer token: there is no
session to pin), the caller's rate limit, refusals answered by :func:`~mcp_gateway.transports.base.refuse`
(audited, with the request's id once the body is whole). Then the SDK decides, as its own entry does
(``mcp.server._streamable_http_modern``): the inbound classification and its HTTP status table, the
``Mcp-Param-*`` check, and :func:`mcp.server.runner.serve_one` with a fresh born-ready ``Connection``. The
tool sees the caller through :func:`~mcp_gateway.context.get_user`.

The answer is ``application/json`` when the handler finishes without a notification before the first
keepalive tick; otherwise an event stream carrying the request's notifications and then its answer, pinged
while idle, with backpressure (a client that stops reading is dropped after ``STALL_TIMEOUT``). A
``subscriptions/listen`` request is such a stream for as long as the client keeps it (the server's
``ListenHandler`` and its ``SubscriptionBus`` feed it). A client that disconnects cancels its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from http import HTTPStatus
from typing import Any

import anyio
from channels.exceptions import StopConsumer
from mcp.server.connection import Connection
from mcp.server.runner import serve_one
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    unsupported_protocol_version_rejection,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import HEADER_MISMATCH, JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError

from mcp_sessions.models import CloseReason, Transport

from .. import sse, wire
from ..caller import credential_fields
from ..conf import gateway_settings
from ..context import GatewayRequestContext
from ..credcache import names
from ..exceptions import (
    BatchNotSupported,
    InvalidMessage,
    MethodNotAllowed,
    NotAcceptable,
    ParseError,
    ProtocolRejection,
    ServiceUnavailable,
)
from ..flow import FlowControl, flow_control_for
from ..gatekeeper import checking_headers
from ..http import SECURITY_HEADERS, Message, Scope, json_bytes, send_response
from ..listening import LISTEN, ListenStream, open_listen_stream
from ..modern import sdk
from ..modern.lifespan import lifespans
from ..scopes import step_up
from ..worker import worker
from .base import GatewayConsumer

logger = logging.getLogger("mcp_gateway")

_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.encode()
_STREAM_HEADERS = [*SECURITY_HEADERS, (b"content-type", sse.CONTENT_TYPE), (b"x-accel-buffering", b"no")]
_DONE = "modern.done"


def is_per_request(scope: Scope) -> bool:
    """Whether the request names a protocol version outside the handshake era (the SDK's header routing)."""
    version = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == _VERSION_HEADER), None)
    return version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS


def rejection(verdict: InboundLadderRejection) -> ProtocolRejection:
    """The refusal that answers an SDK classification rejection, with the status the SDK's table gives its code."""
    status = ERROR_CODE_HTTP_STATUS.get(verdict.code, HTTPStatus.BAD_REQUEST)
    return ProtocolRejection(verdict.code, verdict.message, verdict.data, status=status)


class PerRequestConsumer(GatewayConsumer):
    """``POST <prefix>`` at protocol 2026-07-28; see the module docstring."""

    internal_messages = True  # the exchange task posts its end here
    _task: asyncio.Task[None] | None = None
    _pinging: asyncio.Task[None] | None = None
    _flow: FlowControl | None = None
    _mode: str | None = None  # None: nothing sent; "sse": streaming; "done": answered
    _credential: Any = None
    _listen: ListenStream | None = None  # a subscriptions/listen request's stream, owned (mcp_gateway.listening)

    def __init__(self, mount: Any) -> None:
        super().__init__(mount)
        self._writing = asyncio.Lock()

    async def http_request(self, message: Message) -> None:
        if self.request.method != "POST":
            raise MethodNotAllowed(["POST"])
        body = self.take_body(message)
        if body is None or self._task is not None:
            return
        await self._accept(body)

    async def _accept(self, body: bytes) -> None:
        """Check and authenticate one POST, then start serving it (or answer it at once); refusals raise."""
        if not (self.request.accepts("application/json") and self.request.accepts("text/event-stream")):
            raise NotAcceptable()
        caller = await self.identify(transport=Transport.STREAMABLE_HTTP)
        self._credential = caller.credential
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            raise ParseError() from None
        if sdk.is_notification_shaped(decoded):
            await self._acknowledge(decoded)
            return
        if isinstance(decoded, list):
            raise BatchNotSupported()
        try:
            request = JSONRPCRequest.model_validate(decoded)
        except ValidationError:
            raise InvalidMessage() from None
        self.request.rpc_id = request.id
        step_up(caller.credential, request, self.mount)
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.scope.get("headers", ())]
        duplicated = find_duplicated_routing_header(raw_headers)
        if duplicated is not None:
            raise ProtocolRejection(HEADER_MISMATCH, f"{duplicated} header appears more than once")
        verdict = classify_inbound_request(decoded, headers=self.request.headers)
        if isinstance(verdict, InboundLadderRejection):
            raise rejection(verdict)
        context = GatewayRequestContext(
            session_ref="",
            transport=Transport.STREAMABLE_HTTP,
            server=self.mount.prefix,
            headers=self.request.forwardable_headers(),
            **credential_fields(caller.credential),
        )
        try:
            lifespan_state = await lifespans.state(self.mount.server)
        except Exception:
            raise ServiceUnavailable("The MCP server is not available, retry later") from None
        server = self.mount.per_request_server
        # The SDK reads the request's headers from what it is given, and hands it to a tools/list it may run:
        # the gateway's context, so that listing too knows its caller.
        with checking_headers(context):
            param_rejection = await sdk.mcp_param_rejection(server, context, request, verdict, lifespan_state)  # type: ignore[arg-type]
        # Who calls with which client, for the admin: this era leaves no session record to say it.
        worker.usage.count(
            caller.credential, verdict.client_info, verdict.protocol_version, refused=param_rejection is not None
        )
        if param_rejection is not None:
            raise rejection(param_rejection)
        connection = Connection.from_envelope(
            verdict.protocol_version, verdict.client_info, verdict.client_capabilities
        )
        sink = _Frames(self)
        dispatch = sdk.SingleExchangeDispatchContext(
            transport=TransportContext(kind="streamable-http", can_send_request=False, headers=context.headers),
            request_id=request.id,
            message_metadata=ServerMessageMetadata(request_context=context),
            progress_token=progress_token_from_params(request.params),
            sink=sink,  # type: ignore[arg-type]  # the SDK only awaits its send() (notify)
        )
        if request.method == LISTEN and server.get_request_handler(LISTEN) is not None:
            # Owned like a session: recorded and counted against the cap (TooManySessions: 429) before it streams.
            self._listen = await open_listen_stream(
                layer=self.channel_layer,
                mount=self.mount,
                request=self.request,
                credential=caller.credential,
                params=request.params,
                protocol_version=verdict.protocol_version,
                client_info=verdict.client_info,
            )
        self.request.release()
        self._task = asyncio.get_running_loop().create_task(
            self._exchange(server, dispatch, request, connection, lifespan_state, sink)
        )
        worker.keepalive.add(self)

    async def _acknowledge(self, decoded: dict[str, Any]) -> None:
        """A notification: accepted and dropped, as the SDK's entry does (202), if its version is served."""
        try:
            JSONRPCNotification.model_validate(decoded)
        except ValidationError:
            raise InvalidMessage() from None
        unsupported = unsupported_protocol_version_rejection(self.request.headers.get(MCP_PROTOCOL_VERSION_HEADER, ""))
        if unsupported is not None:
            raise rejection(unsupported)
        await send_response(self.send, HTTPStatus.ACCEPTED, b"", content_type=None)
        raise StopConsumer()

    async def _exchange(
        self,
        server: Any,
        dispatch: Any,
        request: JSONRPCRequest,
        connection: Connection,
        lifespan_state: Any,
        frames: _Frames,
    ) -> None:
        """Serve the request: its notifications as they come, then its answer; ends the consumer when done.

        The handler runs in this task and writes its notifications itself (:class:`_Frames`): no task, task group
        or memory stream of its own per request.
        """
        try:
            answer: JSONRPCResponse | JSONRPCError | None = None
            with anyio.CancelScope() as frames.serving:
                async with self._listen or contextlib.nullcontext():
                    try:
                        result = await serve_one(
                            server,
                            dispatch,
                            request.method,
                            request.params,
                            connection=connection,
                            lifespan_state=lifespan_state,
                        )
                    except Exception as exc:
                        answer = JSONRPCError(jsonrpc="2.0", id=request.id, error=sdk.modern_error_data(exc))
                    else:
                        answer = JSONRPCResponse(jsonrpc="2.0", id=request.id, result=result)
            frames.closed = True
            if frames.stalled:
                logger.info("Dropped a stalled 2026-07-28 response stream (request %r)", request.id)
            elif answer is not None:
                await self._answer(answer)
        except wire.OutletClosed:
            logger.info("Dropped a stalled 2026-07-28 response stream (request %r)", request.id)
        except Exception:
            logger.exception("Serving a 2026-07-28 request failed")
            if not self.response_started:
                await send_response(self.send, HTTPStatus.INTERNAL_SERVER_ERROR, _internal_error(request))
        finally:
            frames.closed = True
            self._internal.put_nowait({"type": _DONE})

    async def _emit(self, chunk: bytes) -> None:
        """Write one frame of the event stream, starting the stream first if it has not started."""
        async with self._writing:
            if self._mode == "done":
                raise wire.OutletClosed(CloseReason.COMPLETE)
            if self._mode is None:
                self._mode = "sse"
                self._flow = flow_control_for(self.base_send)
                await self.send(
                    {"type": "http.response.start", "status": int(HTTPStatus.OK), "headers": _STREAM_HEADERS}
                )
            await self._write(chunk, more=True)

    async def _answer(self, message: JSONRPCResponse | JSONRPCError) -> None:
        """The final answer: as JSON with the SDK's status when nothing was streamed, else the stream's last event."""
        body = message.model_dump(mode="json", by_alias=True, exclude_none=True)
        async with self._writing:
            if self._mode is None:
                self._mode = "done"
                status = (
                    ERROR_CODE_HTTP_STATUS.get(message.error.code, 200) if isinstance(message, JSONRPCError) else 200
                )
                await send_response(self.send, status, json_bytes(body))
                return
            self._mode = "done"
            await self._write(sse.event("message", json.dumps(body, separators=(",", ":"))), more=False)

    async def _write(self, chunk: bytes, *, more: bool) -> None:
        assert self._flow is not None
        message = {"type": "http.response.body", "body": chunk, "more_body": more}
        if self._flow.ready():
            await self.send(message)
            return
        try:
            with anyio.fail_after(gateway_settings.STALL_TIMEOUT):
                await self._flow.writable()
                await self.send(message)
        except TimeoutError:
            raise wire.OutletClosed(CloseReason.STALLED) from None

    # Keepalive (the worker's one timer): the first tick commits a silent request to an event stream.

    def ping_due(self) -> None:
        if self._pinging is None and self._mode != "done":
            self._pinging = asyncio.get_running_loop().create_task(self._ping())
            self._pinging.add_done_callback(self._pinged)

    def _pinged(self, task: asyncio.Task[None]) -> None:
        if self._pinging is task:
            self._pinging = None

    async def _ping(self) -> None:
        try:
            await self._emit(sse.comment("ping"))
        except wire.OutletClosed:
            if self._task is not None:
                self._task.cancel()

    def credentials_revoked(self, message: dict[str, Any]) -> None:
        """Its credential was revoked (logout, a revoked token or OAuth grant, …): end the request and its stream."""
        if self._credential is not None and names(message, self._credential):
            self._internal.put_nowait({"type": _DONE})

    # Message handlers

    async def modern_done(self, message: Message) -> None:
        raise StopConsumer()

    async def http_disconnect(self, message: Message) -> None:
        raise StopConsumer()  # stop() cancels the request: the client closing its stream is the cancellation

    async def stop(self) -> None:
        worker.keepalive.discard(self)
        if self._listen is not None:
            self._listen.close_soon(CloseReason.CLIENT_DISCONNECT)  # no-op once it ended; opened but never served
        for task in (self._pinging, self._task):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._flow is not None:
            self._flow.release()
        if self._mode == "sse":
            self._mode = "done"
            with contextlib.suppress(Exception):
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})


class _Frames:
    """The SDK's sink for one request's notifications (``send``, as its memory stream's): each is written out at once.

    Awaited by the handler that notifies, so a client reading slowly slows it (backpressure). A stalled client
    (:class:`~mcp_gateway.wire.OutletClosed`) cancels the handler, and ends a ``subscriptions/listen`` stream; a
    notification after the answer, or after a stall, is refused as the closed stream refuses it (the SDK drops it).
    """

    __slots__ = ("closed", "consumer", "serving", "stalled")

    def __init__(self, consumer: PerRequestConsumer) -> None:
        self.consumer = consumer
        self.serving: anyio.CancelScope | None = None
        self.closed = False
        self.stalled = False

    async def send(self, frame: bytes) -> None:
        if self.closed:
            raise anyio.ClosedResourceError()
        try:
            await self.consumer._emit(frame)
        except wire.OutletClosed:
            self.closed = self.stalled = True
            if self.consumer._listen is not None:
                self.consumer._listen.close_soon(CloseReason.STALLED)
            if self.serving is not None:
                self.serving.cancel()
            raise anyio.ClosedResourceError() from None


def _internal_error(request: JSONRPCRequest) -> bytes:
    error = {"jsonrpc": "2.0", "id": request.id, "error": {"code": -32603, "message": "Internal server error"}}
    return json_bytes(error)
