"""daphne with an access log that never prints secrets, a clean shutdown, request limits and lighter connections.

This is daphne's own command line with five changes:

- daphne writes its access log straight to a stream, whole request lines and
  query strings included, so session IDs and tickets would land in it; here
  access-log lines pass through :func:`mcp_gateway.redaction.redact`;
- on shutdown every session this worker runs is closed (its record says
  ``server_shutdown``) before the process exits, including Streamable HTTP
  sessions that hold no connection at that moment;
- daphne (Twisted) receives a whole request, body included, before the
  application sees any of it, so the gateway's own body guard comes too late
  to protect the worker's memory; here requests for the gateway's paths are
  held to its limits as they arrive (:class:`GatewayChannel`): a body over
  ``MAX_BODY_SIZE`` (any body, for GET and DELETE) is refused before it is
  read or as soon as it passes the limit, and a request that has not arrived
  whole within ``BODY_TIMEOUT`` gets 408;
- each connection's ``receive`` reads an :class:`ApplicationQueue` instead of
  an ``asyncio.Queue``, which preallocates three deques and an event, about
  3 KB held for as long as the connection lives: most of the memory an idle
  event stream costs daphne;
- once the application is loaded, what exists then (Django, the site's
  modules, the MCP server) is moved out of the garbage collector's reach
  (:func:`gc.freeze`): it lives as long as the process, and scanning it made
  every full collection a pause of tens of milliseconds, the slowest
  requests' latency; and young collections are spaced out
  (:func:`mcp_gateway.collector.tune_collector`), so a short-lived client's
  objects die young instead of growing the generation full passes scan.
  ``--no-gc-freeze`` turns both off.

Use it exactly like ``daphne``::

    python -m mcp_gateway.daphne -b 127.0.0.1 -p 8000 mysite.asgi:application
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
import os
import sys
from functools import partial
from typing import Any, NamedTuple, Protocol, cast
from urllib.parse import unquote

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface as DaphneCommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from daphne.utils import parse_x_forwarded_for
from twisted.internet import defer
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http

# The wrapper HTTPFactory puts each connection's HTTPChannel in (to switch to HTTP/2 after ALPN); Twisted has no
# public way to choose the channel class.
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.http_headers import Headers

from .collector import tune_collector
from .conf import DEFAULTS, gateway_settings, settings_available
from .exceptions import GatewayError, RequestTimeout
from .http import body_limit, body_refusal, error_body, json_bytes, response_headers
from .redaction import redact
from .sessions.mailbox import Mailbox
from .webrequest import skip_form_parsing

logger = logging.getLogger("mcp_gateway")


class RedactingAccessLog(AccessLogGenerator):  # type: ignore[misc]  # daphne publishes no type information
    """daphne's access log, each request line redacted (:func:`~mcp_gateway.redaction.redact`).

    Works for any application: without Django settings the cookie names to blank are Django's defaults. Written to
    ``os.devnull`` (``--access-log /dev/null``, as benchmarks run), an entry is neither formatted nor redacted.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        name = getattr(stream, "name", None)
        self.discard = isinstance(name, str) and os.path.realpath(name) == os.devnull

    def __call__(self, protocol: Any, action: Any, details: Any) -> None:
        if not self.discard:
            super().__call__(protocol, action, details)

    def write_entry(
        self,
        host: Any,
        date: datetime.datetime,
        request: str,
        status: Any = None,
        length: Any = None,
        ident: Any = None,
        user: Any = None,
    ) -> None:
        super().write_entry(host, date, redact(request), status, length, ident, user)


class ApplicationQueue(Mailbox):
    """The FIFO daphne feeds an application's ``receive`` from: a :class:`~mcp_gateway.sessions.mailbox.Mailbox`.

    What daphne needs of ``asyncio.Queue`` (``put_nowait``, and ``get`` for
    any number of readers, a cancelled reader losing nothing), without its
    preallocated deques: a connection holds an empty list, and a list of
    waiting readers only while one waits.
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        return True  # daphne asks ``if application_queue:`` whether the application exists, empty or not


# Seconds a connection is still read after its refusal was sent, what arrives dropped: a client still sending its
# body then reads the answer instead of a reset. Then the connection is closed, whatever the client does.
LINGER = 5.0


def _setting(name: str) -> Any:
    """A gateway setting; its default where Django has no settings (a site serving the gateway has them)."""
    return getattr(gateway_settings, name) if settings_available() else DEFAULTS[name]


def refusal_response(refusal: GatewayError, server_name: str = "") -> bytes:
    """A whole HTTP/1.1 response to ``refusal``, as the gateway answers it (same body and headers), then a close."""
    body = json_bytes(error_body(refusal))
    headers = [
        *response_headers(body, headers=refusal.headers),
        (b"connection", b"close"),
        (b"date", http.datetimeToString()),  # type: ignore[no-untyped-call]  # Twisted leaves it unannotated
    ]
    if server_name:
        headers.append((b"server", server_name.encode()))
    status = b"HTTP/1.1 %d %s\r\n" % (refusal.status, http.RESPONSES.get(refusal.status, b"Refused"))
    return status + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body


class RefusedRequest(NamedTuple):
    """What the audit trail records of a request refused before it became one."""

    path: str
    client_ip: str | None


class _Transport(Protocol):
    """What :class:`GatewayChannel` uses of its transport's ``ITransport``.

    Twisted declares ``ITransport`` as a zope interface, whose methods (declared without ``self``) mypy cannot call;
    the transport itself is whichever class the reactor or TLS layer provides.
    """

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...

    def getPeer(self) -> IAddress: ...


class _TCPTransport(_Transport, Protocol):
    """What :class:`GatewayChannel` uses of a TCP transport's ``ITCPTransport``, to half-close it."""

    def loseWriteConnection(self) -> None: ...

    def abortConnection(self) -> None: ...


class GatewayChannel(http.HTTPChannel):
    """An HTTP/1.1 connection that holds requests for the gateway's paths to its limits while they arrive.

    For a request whose path is one of the loaded application's gateway
    mounts (:func:`mcp_gateway.routing.gateway_path`):

    - a declared ``Content-Length`` over the limit is refused before the body
      is read: 413, or 400 ``body_not_allowed`` for a method that takes no body
      (GET, DELETE: their limit is 0);
    - a body without a declared length (chunked) is counted as it arrives and
      refused when it passes the limit;
    - a request that has not arrived whole, headers and body, within
      ``BODY_TIMEOUT`` of its request line gets 408. A request without a body,
      such as a stream's GET, has arrived with its headers: streams are never
      cut by this.

    A refusal is the gateway's JSON-RPC error with its security headers; the
    connection then closes, and what the client still sends until then is
    read and dropped, never buffered. Other paths, and applications that
    serve no gateway, get daphne's behaviour unchanged.
    """

    _limit: int | None = None  # the body limit of the request arriving; None: not the gateway's, not counted
    _received = 0
    _refusal: GatewayError | None = None  # once set, the connection only drains until it closes
    _answered = False
    # What every reactor's callLater (and task.Clock's) returns; IDelayedCall's methods, declared the zope way
    # (without self), are not callable for mypy.
    _deadline: DelayedCall | None = None
    _linger: DelayedCall | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._refusal is None:
            super().dataReceived(data)  # type: ignore[no-untyped-call]  # Twisted leaves HTTPChannel unannotated

    def lineReceived(self, line: bytes) -> None:
        requests = len(self.requests)
        super().lineReceived(line)  # type: ignore[no-untyped-call]  # Twisted leaves HTTPChannel unannotated
        if len(self.requests) > requests and self._for_gateway(self.factory.server.root_path):
            self._start_deadline()  # a request line for the gateway: the request must arrive within the bound

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        if not self._for_gateway(self._root_path(request)):
            self._limit = None
            self._cancel_deadline()
            super().allHeadersReceived()  # type: ignore[no-untyped-call]  # Twisted leaves HTTPChannel unannotated
            return
        self._limit = body_limit(self._command.decode("latin-1"), _setting("MAX_BODY_SIZE"))
        self._received = 0
        if self.length is not None and self.length > self._limit:
            self.refuse(body_refusal(self._limit))  # before reading it, and before any "100 Continue"
            return
        self._start_deadline()
        super().allHeadersReceived()  # type: ignore[no-untyped-call]  # Twisted leaves HTTPChannel unannotated

    def count_content(self, size: int) -> bool:
        """Count ``size`` bytes of the arriving body; whether they may be kept (else the body is refused)."""
        if self._refusal is not None:
            return False
        if self._limit is None:
            return True
        self._received += size
        if self._received > self._limit:
            self._refusal = body_refusal(self._limit)  # answered once Twisted is done with the data at hand
            return False
        return True

    def rawDataReceived(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        super().rawDataReceived(data)
        if self._refused():  # count_content may have refused the body while Twisted handed it over
            self._answer()

    def allContentReceived(self) -> None:
        if self._refusal is not None:
            return  # refused with its last chunk: never handed to the application
        self._cancel_deadline()
        super().allContentReceived()  # type: ignore[no-untyped-call]  # Twisted leaves HTTPChannel unannotated

    def refuse(self, refusal: GatewayError) -> None:
        """Answer ``refusal`` and end the connection; what the client still sends is dropped."""
        if self._refusal is None:
            self._refusal = refusal
        self._answer()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]  # Twisted leaves HTTPChannel unannotated

    # Internals

    def _refused(self) -> bool:
        """Whether the connection refused its request (a call, so mypy does not keep an earlier narrowing)."""
        return self._refusal is not None

    def _transport(self) -> _Transport | None:
        """The connection's transport, as the :class:`_Transport` it provides."""
        return cast("_Transport | None", self.transport)

    def _answer(self) -> None:
        transport = self._transport()
        if self._answered or transport is None or getattr(transport, "disconnecting", False):
            return  # answered already, or Twisted refused the request itself (a malformed chunk) and is closing
        if self._handlingRequest:
            return  # the request is with the application, which answers it: never a second response
        self._answered = True
        self._cancel_deadline()
        assert self._refusal is not None
        server = self.factory.server
        response = refusal_response(self._refusal, server.server_name)
        transport.write(response)
        self._record(self._refusal, len(response))
        # The answer, then a half-close: the client reads it and closes, or is cut off after LINGER.
        if hasattr(transport, "loseWriteConnection"):
            tcp = cast("_TCPTransport", transport)  # a TCP transport (ITCPTransport): it half-closes, and aborts
            tcp.loseWriteConnection()
            self._linger = self.callLater(LINGER, tcp.abortConnection)  # type: ignore[no-untyped-call]  # Twisted leaves TimeoutMixin.callLater unannotated
        else:
            transport.loseConnection()

    def _record(self, refusal: GatewayError, size: int) -> None:
        """The refusal in the access log, and in the audit trail if it is worth a row there."""
        target = getattr(self, "_path", b"") or b""
        uri = target.decode("latin-1")
        client = self._client_address()
        server = self.factory.server
        server.log_action(
            "http",
            "complete",
            {
                "path": uri,
                "status": int(refusal.status),
                "method": getattr(self, "_command", b"-").decode("latin-1"),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "time_taken": 0,
                "size": size,
            },
        )
        audit = sys.modules.get("mcp_sessions.audit")
        if audit is not None:
            path = unquote(uri.split("?", 1)[0])
            audit.record_refusal(refusal, RefusedRequest(path, client[0] if client else None))

    def _client_address(self) -> list[Any] | None:
        """The client's address as daphne would give it to the application (``--proxy-headers`` included)."""
        transport = self._transport()
        peer = transport.getPeer() if transport is not None else None
        address: list[Any] | None = None
        if peer is not None and hasattr(peer, "host") and hasattr(peer, "port"):
            address = [str(peer.host), peer.port]
        server = self.factory.server
        if server.proxy_forwarded_address_header and self.requests:
            address, _ = parse_x_forwarded_for(
                self.requests[-1].requestHeaders,
                server.proxy_forwarded_address_header,
                server.proxy_forwarded_port_header,
                server.proxy_forwarded_proto_header,
                address,
                "http",
            )
        return address

    def _for_gateway(self, root_path: str) -> bool:
        """Whether the request arriving is for one of the gateway's paths."""
        routing = sys.modules.get("mcp_gateway.routing")
        target = getattr(self, "_path", None)
        if routing is None or target is None:
            return False  # no gateway loaded; or no request line yet (or a malformed one, answered 400 already)
        try:
            path = unquote(target.split(b"?", 1)[0].decode("ascii"))
        except UnicodeDecodeError:
            return False  # daphne answers 400 itself
        return bool(routing.gateway_path(path, root_path))

    def _root_path(self, request: http.Request) -> str:
        """The root path daphne will give the request: its ``Daphne-Root-Path`` header, else the server's."""
        header = request.requestHeaders.getRawHeaders(b"daphne-root-path")
        if header:
            with contextlib.suppress(UnicodeDecodeError):
                return unquote(header[0].decode("ascii"))
        root_path: str = self.factory.server.root_path
        return root_path

    def _start_deadline(self) -> None:
        timeout = _setting("BODY_TIMEOUT")
        if self._deadline is None and timeout is not None:
            self._deadline = self.callLater(timeout, lambda: self.refuse(RequestTimeout()))  # type: ignore[no-untyped-call]  # Twisted leaves TimeoutMixin.callLater unannotated

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None


class GatewayWebRequest(WebRequest):  # type: ignore[misc]  # daphne publishes no type information
    """daphne's request, whose body its connection counts before it is kept (:class:`GatewayChannel`).

    Its body is never parsed as a form (:func:`~mcp_gateway.webrequest.skip_form_parsing`): daphne hands the
    application the raw body.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        skip_form_parsing(self)

    _headers_forgotten = False

    def handle_reply(self, message: dict[str, Any]) -> None:
        super().handle_reply(message)
        if not self._headers_forgotten and self.startedWriting and self.method == b"GET":
            self.forget_headers()  # daphne writes the body with http.Request.write: here, after the first chunk

    def forget_headers(self) -> None:
        """The headers of a GET whose response has started, let go of: a held stream keeps none of them.

        Twisted reads the request's headers while the request arrives (its persistence, ``Expect``) and the
        response's when it writes them, with the first body chunk; daphne reads them only to build the scope,
        which the application keeps. About 2 KB per held event stream.
        """
        self._headers_forgotten = True
        self.requestHeaders = Headers()
        self.responseHeaders = Headers()
        self.received_cookies: dict[bytes, bytes] = {}

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if not isinstance(channel, GatewayChannel) or channel.count_content(len(data)):
            super().handleContentChunk(data)


class GatewayHTTPFactory(HTTPFactory):  # type: ignore[misc]  # daphne publishes no type information
    """daphne's HTTP factory, building :class:`GatewayChannel` connections of :class:`GatewayWebRequest` requests."""

    def protocol(self) -> _GenericHTTPChannelProtocol:  # what Factory.buildProtocol calls to make a connection
        return _GenericHTTPChannelProtocol(GatewayChannel())  # type: ignore[no-untyped-call]  # Twisted leaves HTTPChannel unannotated

    def buildProtocol(self, addr: Any) -> _GenericHTTPChannelProtocol | None:
        protocol: _GenericHTTPChannelProtocol | None = super().buildProtocol(addr)
        if protocol is not None:
            protocol.requestFactory = GatewayWebRequest
        return protocol


class GatewayServer(Server):  # type: ignore[misc]  # daphne publishes no type information
    def __init__(self, *args: Any, action_logger: Any = None, freeze_gc: bool = True, **kwargs: Any) -> None:
        if type(action_logger) is AccessLogGenerator:
            action_logger = RedactingAccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)
        self.freeze_gc = freeze_gc

    @property
    def http_factory(self) -> HTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        # daphne's run() makes its HTTPFactory and listens with it at once: here is where ours takes its place.
        self._http_factory = GatewayHTTPFactory(self) if type(factory) is HTTPFactory else factory

    def run(self) -> None:
        if self.freeze_gc:
            gc.collect()  # what is garbage already goes now, not frozen with the rest
            gc.freeze()
            tune_collector()
        super().run()

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> ApplicationQueue | None:
        """daphne's ``Server.create_application``, with an :class:`ApplicationQueue` as the input queue."""
        assert "application_instance" not in self.connections[protocol]
        queue = ApplicationQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        instance = self.application(scope=scope, receive=queue.get, send=partial(self.handle_reply, protocol))
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            instance, loop=asyncio.get_event_loop()
        )
        return queue

    def kill_all_applications(self) -> defer.Deferred[Any]:
        gateway_worker = sys.modules.get("mcp_gateway.worker")
        if gateway_worker is None:  # not a gateway application (or it never loaded one): no sessions to close
            return self.cancel_applications()
        closing = defer.Deferred.fromFuture(asyncio.ensure_future(gateway_worker.close_all()))
        closing.addErrback(lambda failure: logger.error("Closing sessions at shutdown failed: %s", failure))
        return defer.gatherResults([closing, self.cancel_applications()])

    def cancel_applications(self) -> defer.Deferred[Any]:
        """Cancel every connection's application and wait for them all to end (daphne's ``kill_all_applications``).

        daphne's own assumes each connection has an application, and raised ``KeyError`` at shutdown, closing
        nothing, while any request was still arriving (or had been refused while it did).
        """
        instances = [
            instance
            for details in self.connections.values()
            if (instance := details.get("application_instance")) is not None and not instance.done()
        ]
        for instance in instances:
            instance.cancel()
        logger.info("Killed %i pending application instances", len(instances))
        ended = defer.Deferred.fromFuture(asyncio.gather(*instances))
        ended.addErrback(lambda failure: None)
        return ended


class CommandLineInterface(DaphneCommandLineInterface):  # type: ignore[misc]  # daphne publishes no type information
    server_class: Any = GatewayServer

    def __init__(self) -> None:
        super().__init__()
        self.parser.add_argument(
            "--no-gc-freeze",
            dest="gc_freeze",
            action="store_false",
            help="Leave the garbage collector as Python sets it: nothing frozen, its default thresholds",
        )

    def run(self, args: list[str]) -> None:
        options, _ = self.parser.parse_known_args(args)
        self.server_class = partial(GatewayServer, freeze_gc=options.gc_freeze)
        super().run(args)


def main() -> None:
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
