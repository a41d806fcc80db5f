"""Serve an MCPServer over the SDK's own Streamable HTTP app under uvicorn (the reference to compare with).

    python -m tests.interop.reference_server --port 8123 [--server tests.conformance_server:conformance]
                                             [--path /mcp/] [--require-header "Authorization: Bearer x"]

Uvicorn runs the ASGI lifespan, which the SDK's app needs (daphne does not: NOTES pitfall 11).
An in-memory event store and a 100 ms retry interval make SSE polling and resumption
(the suite's ``server-sse-polling``) work, as in the SDK's own conformance server. Bound to
127.0.0.1, the SDK turns its Host/Origin (DNS rebinding) protection on by itself.
``--require-header`` answers 401 (with a ``WWW-Authenticate: Bearer`` challenge, as the gateway
does) to any request without that exact header: a stand-in to see how clients fail without credentials.
"""

from __future__ import annotations

import argparse
import importlib
import itertools

import uvicorn
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, kept for the life of the process (a test server's)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []
        self.ids = itertools.count(1)

    async def store_event(self, stream_id, message):  # type: ignore[override]
        event_id = str(next(self.ids))
        self.events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback: EventCallback):  # type: ignore[override]
        stream = next((s for s, e, _ in self.events if e == last_event_id), None)
        if stream is None:
            return None
        for stream_id, event_id, message in self.events:
            if stream_id == stream and int(event_id) > int(last_event_id) and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def require_header(app, name: str, value: str):
    """Wrap ``app``: 401 unless the request carries ``name: value``."""
    wanted = (name.strip().lower().encode(), value.strip().encode())

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and wanted not in scope["headers"]:
            body = b'{"error": "authentication required"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="mcp"'),
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return guarded


def load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr or "conformance")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", default="tests.conformance_server:conformance")
    parser.add_argument("--path", default="/mcp/")
    parser.add_argument("--require-header", metavar="'NAME: VALUE'")
    args = parser.parse_args(argv)
    app = load(args.server).streamable_http_app(
        streamable_http_path=args.path,
        event_store=MemoryEventStore(),
        retry_interval=100,
    )
    if args.require_header:
        app = require_header(app, *args.require_header.split(":", 1))
    # Open SSE streams would hold a graceful shutdown up; give them 2 s.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
