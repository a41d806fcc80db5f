"""Clients the tests drive the gateway with: the official SDK client, and a raw SSE reader."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

TRANSPORTS = ["sse", "streamable_http"]


@contextlib.asynccontextmanager
async def transport_streams(
    base_url: str, headers: dict[str, str], prefix: str = "/mcp/", transport: str = "sse"
) -> AsyncIterator[Any]:
    """The official client's transport: HTTP+SSE at ``<prefix>sse``, or Streamable HTTP at ``<prefix>``."""
    if transport == "sse":
        async with sse_client(f"{base_url}{prefix}sse", headers=headers) as streams:
            yield streams
        return
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(f"{base_url}{prefix}", http_client=http) as streams,
    ):
        yield streams


@contextlib.asynccontextmanager
async def mcp_client(
    base_url: str, headers: dict[str, str], prefix: str = "/mcp/", transport: str = "sse"
) -> AsyncIterator[Client]:
    """The official mcp 2.x client, in its default (auto-negotiating) mode."""
    async with Client(transport_streams(base_url, headers, prefix, transport)) as client:
        yield client


class RawStream:
    """An SSE stream read event by event, for what the SDK client would hide."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.endpoint = ""
        self.last_id: str | None = None

    @property
    def session_id(self) -> str:
        return parse_qs(urlsplit(self.endpoint).query)["session_id"][0]

    async def next_event(self, timeout: float = 5.0) -> tuple[str, str]:
        """The next (event, data) pair; comments are skipped."""
        name, data = "message", []
        with anyio.fail_after(timeout):
            async for line in self._lines:
                if line == "":
                    if data:
                        return name, "\n".join(data)
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    self.last_id = value
        raise EOFError("stream ended")

    async def next_message(self, timeout: float = 5.0) -> dict[str, Any]:
        event, data = await self.next_event(timeout)
        assert event == "message", (event, data)
        return json.loads(data)


@contextlib.asynccontextmanager
async def raw_stream(
    http: httpx2.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[RawStream]:
    """Open ``GET url`` and read its endpoint event; fails unless the stream opened."""
    async with http.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        stream = RawStream(response)
        event, stream.endpoint = await stream.next_event()
        assert event == "endpoint"
        yield stream


@contextlib.asynccontextmanager
async def resumed_stream(
    http: httpx2.AsyncClient, url: str, last_event_id: str | None, headers: dict[str, str] | None = None
) -> AsyncIterator[RawStream]:
    """Reopen a dropped stream with ``Last-Event-ID`` (None: put it in ``url`` instead); fails unless it opened."""
    headers = dict(headers or {})
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        yield RawStream(response)


def jsonrpc(method: str, params: dict[str, Any] | None = None, id: int | str | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return message


INITIALIZE = jsonrpc(
    "initialize",
    {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1.0"}},
    id=0,
)
INITIALIZED = jsonrpc("notifications/initialized", id=None)


async def handshake(http: httpx2.AsyncClient, base_url: str, stream: RawStream, headers: dict[str, str]) -> None:
    """The classic initialize handshake over a raw stream."""
    response = await http.post(base_url + stream.endpoint, json=INITIALIZE, headers=headers)
    assert response.status_code == 202, response.text
    reply = await stream.next_message()
    assert reply["id"] == 0 and "result" in reply, reply
    response = await http.post(base_url + stream.endpoint, json=INITIALIZED, headers=headers)
    assert response.status_code == 202, response.text


# How long a test waits for something the server does in the background (a session closing, a sweep saving its
# counts, a stream ending): a generous bound for a loaded machine, never a claim about how fast it happens (bench/
# measures that). Reaching it fails the test.
BOUND = 10.0

T = TypeVar("T")


async def poll(probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], within: float = BOUND) -> T:
    """Call ``probe`` until ``until`` holds for what it returns, for at most ``within`` seconds; return the last value.

    The caller asserts on the value, so that a bound reached fails on that assertion, showing what was seen.
    """
    deadline = anyio.current_time() + within
    while not until(value := await probe()) and anyio.current_time() < deadline:
        await anyio.sleep(0.02)
    return value


async def until(condition: Callable[[], bool], what: str, within: float = BOUND) -> None:
    """Let the event loop run until ``condition()`` holds; fail, naming ``what`` was awaited, after ``within`` s."""
    deadline = anyio.current_time() + within
    while not condition():
        assert anyio.current_time() < deadline, f"not within {within}s: {what}"
        await anyio.sleep(0.01)


async def closed_session(**lookup: Any) -> Any:
    """The session record matching ``lookup`` once it is closed; fails if it is still open after ``BOUND`` seconds."""
    from mcp_sessions.models import McpSession

    async def record() -> Any:
        return await McpSession.objects.filter(**lookup).afirst()

    found = await poll(record, lambda r: r is not None and r.closed_at is not None)
    assert found is not None and found.closed_at is not None, f"session {lookup} not closed within {BOUND}s: {found}"
    return found
