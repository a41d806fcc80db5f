"""Requests for the gateway's paths held to its limits while they arrive, before daphne hands them on.

daphne (Twisted) receives a whole request, body included, before the
application sees any of it, so the gateway's own body guard would come too
late to protect the worker's memory. :class:`GatewayChannel`, the
connection the launcher (:mod:`mcp_gateway.daphne`) builds, refuses a body
over ``MAX_BODY_SIZE`` before it is read or as soon as it passes the limit,
and answers 408 to a request that has not arrived whole within
``BODY_TIMEOUT``. The refusal is the gateway's own answer
(:func:`refusal_response`), recorded in the audit trail after it is sent.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, NamedTuple, Protocol, cast
from urllib.parse import unquote

from daphne.utils import parse_x_forwarded_for
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http

from .conf import DEFAULTS, gateway_settings, settings_available
from .exceptions import GatewayError, RequestTimeout
from .http import body_limit, body_refusal, error_body, json_bytes, response_headers

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
