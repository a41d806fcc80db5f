"""daphne with an access log that never prints secrets, and a clean shutdown.

daphne writes its access log straight to a stream, whole request lines and
query strings included, so session IDs and tickets would land in it. This is
daphne's own command line with two changes: access-log lines pass through
:func:`mcp_gateway.redaction.redact`, and on shutdown every session this
worker runs is closed (its record says ``server_shutdown``) before the
process exits, including Streamable HTTP sessions that hold no connection at
that moment. Use it exactly like ``daphne``::

    python -m mcp_gateway.daphne -b 127.0.0.1 -p 8000 mysite.asgi:application
"""

from __future__ import annotations

import asyncio
import datetime
import logging
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


class GatewayServer(Server):
    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        if type(action_logger) is AccessLogGenerator:
            action_logger = RedactingAccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)

    def kill_all_applications(self) -> defer.Deferred[Any]:
        from . import runtime  # needs the app registry, which the ASGI application loaded by now

        closing = defer.Deferred.fromFuture(asyncio.ensure_future(runtime.close_all()))
        closing.addErrback(lambda failure: logger.error("Closing sessions at shutdown failed: %s", failure))
        return defer.gatherResults([closing, super().kill_all_applications()])


class CommandLineInterface(DaphneCommandLineInterface):
    server_class = GatewayServer


def main() -> None:
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
