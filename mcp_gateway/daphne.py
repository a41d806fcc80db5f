"""daphne with an access log that never prints secrets.

daphne writes its access log straight to a stream, whole request lines and
query strings included, so session IDs and tickets would land in it. This is
daphne's own command line with one change: access-log lines pass through
:func:`mcp_gateway.redaction.redact`. Use it exactly like ``daphne``::

    python -m mcp_gateway.daphne -b 127.0.0.1 -p 8000 mysite.asgi:application
"""

from __future__ import annotations

import datetime
from typing import Any

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface as DaphneCommandLineInterface
from daphne.server import Server

from .redaction import redact


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


class RedactingServer(Server):
    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        if type(action_logger) is AccessLogGenerator:
            action_logger = RedactingAccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)


class CommandLineInterface(DaphneCommandLineInterface):
    server_class = RedactingServer


def main() -> None:
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
