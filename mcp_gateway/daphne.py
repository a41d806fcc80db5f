"""daphne with an access log that never prints secrets, a clean shutdown, and lighter connections.

This is daphne's own command line with four changes:

- daphne writes its access log straight to a stream, whole request lines and
  query strings included, so session IDs and tickets would land in it; here
  access-log lines pass through :func:`mcp_gateway.redaction.redact`;
- on shutdown every session this worker runs is closed (its record says
  ``server_shutdown``) before the process exits, including Streamable HTTP
  sessions that hold no connection at that moment;
- each connection's ``receive`` reads an :class:`ApplicationQueue` instead of
  an ``asyncio.Queue``, which preallocates three deques and an event, about
  3 KB held for as long as the connection lives: most of the memory an idle
  event stream costs daphne;
- once the application is loaded, what exists then (Django, the site's
  modules, the MCP server) is moved out of the garbage collector's reach
  (:func:`gc.freeze`): it lives as long as the process, and scanning it made
  every full collection a pause of tens of milliseconds, the slowest
  requests' latency. ``--no-gc-freeze`` turns this off.

Use it exactly like ``daphne``::

    python -m mcp_gateway.daphne -b 127.0.0.1 -p 8000 mysite.asgi:application
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
import sys
from functools import partial
from typing import Any

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface as DaphneCommandLineInterface
from daphne.server import Server
from twisted.internet import defer

from .redaction import redact

logger = logging.getLogger("mcp_gateway")


class RedactingAccessLog(AccessLogGenerator):
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


class ApplicationQueue:
    """An unbounded FIFO that daphne feeds an application's ``receive`` from.

    What daphne needs of ``asyncio.Queue`` (``put_nowait``, and ``get`` for
    any number of readers, a cancelled reader losing nothing), without
    its preallocated deques: a connection holds an empty list, and a list of
    waiting readers only while one waits.
    """

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_next()

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_next()  # woken, then cancelled: the item is for the next reader
                raise
            if not self._getters:
                self._getters = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class GatewayServer(Server):
    def __init__(self, *args: Any, action_logger: Any = None, freeze_gc: bool = True, **kwargs: Any) -> None:
        if type(action_logger) is AccessLogGenerator:
            action_logger = RedactingAccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)
        self.freeze_gc = freeze_gc

    def run(self) -> None:
        if self.freeze_gc:
            gc.collect()  # what is garbage already goes now, not frozen with the rest
            gc.freeze()
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
        runtime = sys.modules.get("mcp_gateway.worker")
        if runtime is None:  # not a gateway application (or it never loaded one): no sessions to close
            return super().kill_all_applications()
        closing = defer.Deferred.fromFuture(asyncio.ensure_future(runtime.close_all()))
        closing.addErrback(lambda failure: logger.error("Closing sessions at shutdown failed: %s", failure))
        return defer.gatherResults([closing, super().kill_all_applications()])


class CommandLineInterface(DaphneCommandLineInterface):
    server_class: Any = GatewayServer

    def __init__(self) -> None:
        super().__init__()
        self.parser.add_argument(
            "--no-gc-freeze",
            dest="gc_freeze",
            action="store_false",
            help="Leave the objects that exist once the application is loaded to the garbage collector",
        )

    def run(self, args: list[str]) -> None:
        options, _ = self.parser.parse_known_args(args)
        self.server_class = partial(GatewayServer, freeze_gc=options.gc_freeze)
        super().run(args)


def main() -> None:
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
