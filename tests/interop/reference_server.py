"""Serve an MCPServer over the SDK's own Streamable HTTP app under uvicorn (the reference to compare with).

    python -m tests.interop.reference_server --port 8123 [--server tests.conformance_server:conformance]
                                             [--path /mcp/]

Uvicorn runs the ASGI lifespan, which the SDK's app needs (daphne does not: NOTES pitfall 11).
An in-memory event store and a 100 ms retry interval make SSE polling and resumption
(the suite's ``server-sse-polling``) work, as in the SDK's own conformance server. Bound to
127.0.0.1, the SDK turns its Host/Origin (DNS rebinding) protection on by itself.
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


def load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr or "conformance")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", default="tests.conformance_server:conformance")
    parser.add_argument("--path", default="/mcp/")
    args = parser.parse_args(argv)
    app = load(args.server).streamable_http_app(
        streamable_http_path=args.path,
        event_store=MemoryEventStore(),
        retry_interval=100,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
