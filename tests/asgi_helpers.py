"""Drive an ASGI app in-process: for unit tests of guards and routing."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def http_scope(
    method: str = "GET",
    path: str = "/mcp/sse",
    *,
    headers: Iterable[tuple[str, str]] = (),
    query: str = "",
    host: str = "127.0.0.1:8000",
) -> dict[str, Any]:
    raw = [(b"host", host.encode())] + [(k.lower().encode(), v.encode()) for k, v in headers]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class Recorder:
    """The far side of an ASGI call: feeds body chunks, records what the app sends."""

    def __init__(self, chunks: Iterable[bytes] = (b"",)) -> None:
        chunks = list(chunks)
        self.incoming = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
        ]
        self.received = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.received < len(self.incoming):
            self.received += 1
            return self.incoming[self.received - 1]
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def reason(self) -> str:
        return json.loads(self.body)["error"]["data"]["reason"]


class Downstream:
    """An app that reads the whole body and answers 200: stands in for a consumer."""

    def __init__(self) -> None:
        self.called = False
        self.body = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI application that is no Django site (no settings read): every HTTP request answered 200 ``ok``."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})
