"""daphne with an access log that never prints secrets, a clean shutdown, request limits and lighter connections.

This is daphne's own command line with six changes:

- daphne writes its access log straight to a stream, whole request lines and
  query strings included, so session IDs and tickets would land in it; here
  access-log lines pass through :func:`mcp_gateway.redaction.redact`;
- on shutdown every session this worker runs is closed (its record says
  ``server_shutdown``) before the process exits, including Streamable HTTP
  sessions that hold no connection at that moment;
- daphne (Twisted) receives a whole request, body included, before the
  application sees any of it, so the gateway's own body guard comes too late
  to protect the worker's memory; here requests for the gateway's paths are
  held to its limits as they arrive (:class:`~mcp_gateway.arrival.GatewayChannel`): a body over
  ``MAX_BODY_SIZE`` (any body, for GET and DELETE) is refused before it is
  read or as soon as it passes the limit, and a request that has not arrived
  whole within ``BODY_TIMEOUT`` gets 408;
- each connection's ``receive`` reads an :class:`ApplicationQueue` instead of
  an ``asyncio.Queue``, which preallocates three deques and an event, about
  3 KB held for as long as the connection lives: most of the memory an idle
  event stream costs daphne;
- each request's scope tells the application whether its client is gone
  (:data:`~mcp_gateway.http.CLIENT_GONE`), so that work queued for a client
  that gave up waiting (an open, under overload) is skipped;
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
import datetime
import gc
import logging
import os
import sys
from functools import partial
from typing import Any

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface as DaphneCommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from twisted.internet import defer

# The wrapper HTTPFactory puts each connection's HTTPChannel in (to switch to HTTP/2 after ALPN); Twisted has no
# public way to choose the channel class.
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.http_headers import Headers

from .arrival import GatewayChannel
from .collector import tune_collector
from .http import CLIENT_GONE
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


class GatewayWebRequest(WebRequest):  # type: ignore[misc]  # daphne publishes no type information
    """daphne's request, whose body its connection counts before it is kept (:class:`GatewayChannel`).

    Its body is never parsed as a form (:func:`~mcp_gateway.webrequest.skip_form_parsing`): daphne hands the
    application the raw body.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        skip_form_parsing(self)

    _headers_forgotten = False

    def client_gone(self) -> bool:
        """Whether the client closed the connection (the scope's :data:`~mcp_gateway.http.CLIENT_GONE`)."""
        return bool(self._disconnected)

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
        if isinstance(protocol, GatewayWebRequest):
            scope["extensions"] = {**scope.get("extensions", {}), CLIENT_GONE: protocol.client_gone}
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
