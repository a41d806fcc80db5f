"""A light raw-HTTP/1.1 MCP client for the benchmark: each transport's wire as a real client sends it.

Not the SDK's ``Client``: on 2 cores that uses about a core by itself and caps the servers it measures (NOTES,
"Measuring the server"). This one is asyncio streams on keep-alive connections, requests prebuilt but for their
body, responses parsed just enough to check them; every answer is validated (its id is the request's, its text
the one sent, no error), and a wrong one raises :class:`WireError`, failing the run.

- :class:`SseSession`: HTTP+SSE; a ``GET`` stream read in the background (replies matched to requests by id), and
  POSTs on a keep-alive connection of its own or one shared from a :class:`Pool`;
- :class:`StreamableSession`: Streamable HTTP 2025-11-25; ``initialize`` issues the ``Mcp-Session-Id`` every later
  POST carries; an answer is JSON, or an event stream holding it;
- :class:`ModernSession`: protocol 2026-07-28; every call a self-contained POST, no handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

MODERN = "2026-07-28"
CLASSIC = "2025-11-25"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
INITIALIZE_PARAMS = {"protocolVersion": CLASSIC, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
TRANSPORTS = ("sse", "streamable", "modern")


class WireError(RuntimeError):
    """A server answered wrong (status, id, text, an error) or broke the wire."""


@dataclass
class Target:
    """Where a server speaks each transport, and the headers (credentials) every request of it carries."""

    port: int
    sse_path: str = "/sse"
    mcp_path: str = "/mcp/"
    headers: dict[str, str] = field(default_factory=dict)

    def head(self, method: str, path: str, *extra: str) -> str:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", *extra]
        return "\r\n".join([*lines, *(f"{k}: {v}" for k, v in self.headers.items())]) + "\r\n"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def message(self) -> dict[str, Any]:
        """The JSON-RPC message: the body, or an event stream's last ``data``."""
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:].strip() for line in self.body.decode().splitlines() if line.startswith("data:")]
            return json.loads(data[-1]) if data else {}
        answer: dict[str, Any] = json.loads(self.body)
        return answer


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return int(lines[0].split(" ", 2)[1]), fields


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body (empty: the last)."""
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    if size == 0:
        await reader.readuntil(b"\r\n")  # the empty trailer
        return b""
    data = await reader.readexactly(size)
    await reader.readexactly(2)
    return data


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response, one at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(self, head: str, body: bytes = b"") -> Response:
        if self.writer is None or self.reader is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status, fields = await read_head(self.reader)
        if "content-length" in fields:
            return Response(status, fields, await self.reader.readexactly(int(fields["content-length"])))
        if fields.get("transfer-encoding", "").lower() != "chunked":
            raise WireError(f"neither a length nor chunks: {status} {fields}")
        chunks = []
        while chunk := await read_chunk(self.reader):
            chunks.append(chunk)
        return Response(status, fields, b"".join(chunks))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = self.reader = None


class Pool:
    """Keep-alive connections shared by many sessions' POSTs (one request at a time on each)."""

    def __init__(self, port: int, size: int) -> None:
        self.port, self.size = port, size
        self.idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(Connection(port))

    async def request(self, head: str, body: bytes = b"") -> Response:
        connection = await self.idle.get()
        try:
            return await connection.request(head, body)
        except BaseException:
            await connection.close()  # a fresh one next time
            raise
        finally:
            self.idle.put_nowait(connection)

    async def close(self) -> None:
        while not self.idle.empty():
            await self.idle.get_nowait().close()


def request_body(message_id: int | None, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if message_id is not None:
        message["id"] = message_id
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


def check(message: dict[str, Any], message_id: int, text: str | None, who: str) -> None:
    """Raise unless ``message`` answers ``message_id`` without error (and, for a call, with ``text``)."""
    if message.get("id") != message_id or "error" in message or "result" not in message:
        raise WireError(f"{who}: wrong answer to {message_id}: {str(message)[:300]}")
    if text is not None:
        content = message["result"].get("content") or [{}]
        if content[0].get("text") != text:
            raise WireError(f"{who}: answer to {message_id} says {content[0].get('text')!r}, not {text!r}")


class Session:
    """What the three transports share: numbered calls of ``echo``, each answer checked."""

    def __init__(self, target: Target, name: str) -> None:
        self.target, self.name, self.sequence = target, name, 0

    async def open(self) -> None:
        """Ready to call: the handshake where the transport has one."""

    async def call(self) -> None:
        self.sequence += 1
        text = f"{self.name}:{self.sequence}"
        check(await self.exchange(self.sequence, "tools/call", {"name": "echo", "arguments": {"text": text}}),
              self.sequence, text, self.name)  # fmt: skip

    async def exchange(self, message_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        """Let the connections go."""


class SseSession(Session):
    """HTTP+SSE: a stream read in the background; POSTs answered 202, replies on the stream."""

    def __init__(self, target: Target, name: str, pool: Pool | None = None, header_timeout: float = 30.0) -> None:
        super().__init__(target, name)
        self.pool = pool
        self.own = Connection(target.port) if pool is None else None
        self.header_timeout = header_timeout
        self.endpoint = ""
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.stream: Connection | None = None
        self.reading: asyncio.Task[None] | None = None
        self.message_head = ""

    async def open(self) -> None:
        """Open the stream (``TimeoutError`` if its headers take over ``header_timeout``), then initialize."""
        await self.open_stream()
        await self.initialize()

    async def open_stream(self) -> None:
        self.stream = await Connection(self.target.port).open()
        assert self.stream.writer is not None and self.stream.reader is not None
        head = self.target.head("GET", self.target.sse_path, "Accept: text/event-stream")
        self.stream.writer.write(head.encode() + b"\r\n")
        status, fields = await asyncio.wait_for(read_head(self.stream.reader), self.header_timeout)
        if status != 200:
            raise WireError(f"{self.name}: stream answered {status}")
        self.chunked = fields.get("transfer-encoding", "").lower() == "chunked"
        self.buffer = b""
        event, data = await self.next_event()
        if event != "endpoint":
            raise WireError(f"{self.name}: first event {event!r}")
        self.endpoint = data
        self.message_head = self.target.head("POST", data, "Content-Type: application/json")
        self.reading = asyncio.create_task(self.read())

    async def initialize(self) -> None:
        check(await self.exchange(0, "initialize", INITIALIZE_PARAMS), 0, None, self.name)
        await self.post(request_body(None, "notifications/initialized"))

    async def next_event(self) -> tuple[str, str]:
        assert self.stream is not None and self.stream.reader is not None
        while True:
            for separator in (b"\r\n\r\n", b"\n\n"):
                end = self.buffer.find(separator)
                if end >= 0:
                    raw, self.buffer = self.buffer[:end], self.buffer[end + len(separator) :]
                    event, data = "message", []
                    for line in raw.decode().splitlines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                    if data:
                        return event, "\n".join(data)
                    break  # a comment (ping): look again
            else:
                piece = await (read_chunk(self.stream.reader) if self.chunked else self.stream.reader.read(65536))
                if not piece:
                    raise WireError(f"{self.name}: the stream ended")
                self.buffer += piece

    async def read(self) -> None:
        try:
            while True:
                _, data = await self.next_event()
                message = json.loads(data)
                future = self.waiting.pop(message.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (WireError, OSError, asyncio.IncompleteReadError) as error:
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(WireError(f"{self.name}: stream lost: {error!r}"))

    async def post(self, body: bytes) -> None:
        sender = self.pool if self.pool is not None else self.own
        assert sender is not None
        response = await sender.request(self.message_head, body)
        if response.status != 202:
            raise WireError(f"{self.name}: POST answered {response.status}: {response.body[:200]!r}")

    async def exchange(self, message_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        future = self.waiting[message_id] = asyncio.get_running_loop().create_future()
        await self.post(request_body(message_id, method, params))
        return await asyncio.wait_for(future, 30)

    def stop_reading(self) -> None:
        """Stop reading the stream (the connection stays open): an idle session, costing the client nothing."""
        if self.reading is not None:
            self.reading.cancel()

    async def close(self) -> None:
        self.stop_reading()
        for connection in (self.stream, self.own):
            if connection is not None:
                await connection.close()


class StreamableSession(Session):
    """Streamable HTTP 2025-11-25 on one keep-alive connection: initialize, then POSTs with the session id."""

    accept = "Accept: application/json, text/event-stream"

    def __init__(self, target: Target, name: str) -> None:
        super().__init__(target, name)
        self.connection = Connection(target.port)
        self.message_head = ""

    async def open(self) -> None:
        head = self.target.head("POST", self.target.mcp_path, "Content-Type: application/json", self.accept)
        response = await self.connection.request(head, request_body(0, "initialize", INITIALIZE_PARAMS))
        session_id = response.headers.get("mcp-session-id")
        if response.status != 200 or not session_id:
            raise WireError(f"{self.name}: initialize answered {response.status}: {response.body[:200]!r}")
        check(response.message(), 0, None, self.name)
        self.message_head = self.target.head(
            "POST", self.target.mcp_path, "Content-Type: application/json", self.accept,
            f"Mcp-Session-Id: {session_id}", f"MCP-Protocol-Version: {CLASSIC}",
        )  # fmt: skip
        notified = await self.connection.request(self.message_head, request_body(None, "notifications/initialized"))
        if notified.status != 202:
            raise WireError(f"{self.name}: notifications/initialized answered {notified.status}")

    async def exchange(self, message_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        response = await self.connection.request(self.message_head, request_body(message_id, method, params))
        if response.status != 200:
            raise WireError(f"{self.name}: HTTP {response.status}: {response.body[:300]!r}")
        return response.message()

    async def close(self) -> None:
        await self.connection.close()


class ModernSession(StreamableSession):
    """Protocol 2026-07-28: no handshake; each call self-contained, its ``_meta`` and headers naming the version."""

    async def open(self) -> None:
        self.message_head = self.target.head(
            "POST", self.target.mcp_path, "Content-Type: application/json", self.accept,
            f"MCP-Protocol-Version: {MODERN}", "Mcp-Method: tools/call", "Mcp-Name: echo",
        )  # fmt: skip

    async def exchange(self, message_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await super().exchange(message_id, method, {**params, "_meta": META})


def session(transport: str, target: Target, name: str) -> Session:
    """A session of ``transport`` (one of :data:`TRANSPORTS`)."""
    kinds: dict[str, type[Session]] = {"sse": SseSession, "streamable": StreamableSession, "modern": ModernSession}
    return kinds[transport](target, name)
