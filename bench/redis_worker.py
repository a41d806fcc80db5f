"""One gateway worker on ``RedisChannelLayer`` (with its rate limit counted in Redis) against the same on the
in-memory layer, measured with a light raw-HTTP client so that the server, not the client, is what is measured.

Both workers serve ``demo.asgi`` with ``bench.cluster_settings`` (the benchmark's async ``echo`` tool) on one
throwaway database; the Redis one puts its channel layer and its cache (``MCP_GATEWAY_CACHE``, so the rate
limit) on Redis under a prefix of its own. They are measured in alternating rounds (memory, redis, memory, …);
each figure is the median over the rounds, and the ratios are redis / memory. Per round: ``sessions`` HTTP+SSE
sessions each keep one ``tools/call echo`` in flight for ``seconds``; every reply is checked (its id and text).
Besides calls/s and latency, the worker's CPU time per call (``/proc``), and the Redis commands per call that
carry the worker's keys (``MONITOR`` over a few sequential calls, :func:`redis_commands`).

    PYTHONPATH=. python -m bench.redis_worker [--rounds 3] [--sessions 32] [--seconds 5]

:func:`measure` is what ``bench.run`` calls. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from bench.cluster import Worker, setup_django, user_headers
from bench.load import channel_layer_settings, load_overrides

SSE_PATH = "/mcp/sse"


class LightSession:
    """One HTTP+SSE session on two raw keep-alive connections: the stream, and one for its POSTs."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.endpoint = ""
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._post: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._stream = reader, writer
        writer.write(f"GET {SSE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.headers}\r\n".encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        opened = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(reader, opened))
        await asyncio.wait_for(opened, 30)
        self._post = await asyncio.open_connection("127.0.0.1", self.port)

    async def _read(self, reader: asyncio.StreamReader, opened: asyncio.Future[None]) -> None:
        buffer = b""
        try:
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)  # chunked transfer encoding
                if size == 0:
                    return
                buffer += await reader.readexactly(size + 2)
                buffer = buffer[:-2] if buffer.endswith(b"\r\n") else buffer
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    self._event(event.decode(), opened)
        finally:
            for future in [opened, *self.waiting.values()]:
                if not future.done():
                    future.set_exception(EOFError("stream ended"))

    def _event(self, event: str, opened: asyncio.Future[None]) -> None:
        name, data = "message", []
        for line in event.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if not data:
            return  # a ping
        if name == "endpoint":
            self.endpoint = data[0]
            if not opened.done():
                opened.set_result(None)
            return
        message = json.loads("\n".join(data))
        future = self.waiting.get(message.get("id"))
        if future is not None and not future.done():
            future.set_result(message)

    async def send(self, message: dict[str, Any]) -> None:
        assert self._post is not None
        reader, writer = self._post
        body = json.dumps(message).encode()
        writer.write(
            f"POST {self.endpoint} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await reader.readexactly(length)
        if b" 202 " not in status:
            raise RuntimeError(f"POST answered {status!r}")

    async def request(self, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        try:
            await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            return await asyncio.wait_for(future, 15)
        finally:
            del self.waiting[request_id]

    async def handshake(self) -> None:
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "light", "version": "1"}}
        reply = await self.request(0, "initialize", params)
        assert "result" in reply, reply
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, request_id: int, text: str) -> None:
        reply = await self.request(request_id, "tools/call", {"name": "echo", "arguments": {"text": text}})
        if reply["result"]["content"][0]["text"] != text:
            raise AssertionError(f"misrouted reply: {reply}")

    async def close(self) -> None:
        for pair in (self._post, self._stream):
            if pair is not None:
                pair[1].close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


async def open_sessions(port: int, headers: dict[str, str], count: int) -> list[LightSession]:
    sessions = [LightSession(port, headers) for _ in range(count)]
    await asyncio.gather(*(s.open() for s in sessions))
    await asyncio.gather(*(s.handshake() for s in sessions))
    return sessions


async def throughput(worker: Worker, headers: dict[str, str], sessions: int, seconds: float) -> dict[str, float]:
    """Calls/s, latency and the worker's CPU µs per call with ``sessions`` sessions, one call in flight each."""
    opened = await open_sessions(worker.port, headers, sessions)
    latencies: list[float] = []
    try:
        for s in opened:
            await s.call(1, "warm")
        stop_at = time.monotonic() + seconds

        async def lane(n: int, session: LightSession) -> None:
            sequence = 0
            while time.monotonic() < stop_at:
                sequence += 1
                start = time.perf_counter()
                await session.call(sequence, f"{n}:{sequence}")
                latencies.append((time.perf_counter() - start) * 1000)

        cpu_before, started = worker.cpu_seconds(), time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(lane(n, s) for n, s in enumerate(opened))), seconds + 60)
        elapsed, cpu = time.monotonic() - started, worker.cpu_seconds() - cpu_before
    finally:
        await asyncio.gather(*(s.close() for s in opened))
    latencies.sort()
    return {
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "cpu_us_per_call": cpu / len(latencies) * 1e6,
    }


async def redis_commands(
    worker: Worker, headers: dict[str, str], redis_url: str, prefix: str, calls: int = 20
) -> dict[str, Any]:
    """The Redis commands per call carrying ``prefix`` (the worker's layer and cache keys), by command name.

    ``MONITOR`` sees every client of the server; only lines naming the prefix count, so other users of the same
    Redis do not. A pipeline's or a Lua script's commands each count once: these are commands, not round trips.
    """
    from redis import asyncio as aioredis

    (session,) = await open_sessions(worker.port, headers, 1)
    counts: Counter[str] = Counter()
    client = aioredis.from_url(redis_url)
    try:
        await session.call(1, "warm")
        async with client.monitor() as monitor:
            stop = asyncio.Event()

            async def listen() -> None:
                async for command in monitor.listen():
                    text = command.get("command", "")
                    if prefix in text:
                        kind = "cache" if ":rate:" in text else "layer"
                        counts[f"{kind} {text.split(' ', 1)[0].upper()}"] += 1
                    if stop.is_set():
                        return

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0.2)
            for n in range(calls):
                await session.call(n + 2, str(n))
            await asyncio.sleep(0.5)
            stop.set()
            await client.ping()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(listener, 2)
    finally:
        await session.close()
        await client.aclose()
    return {"commands_per_call": sum(counts.values()) / calls, "by_command": {k: v / calls for k, v in counts.items()}}


def memory_overrides() -> dict[str, Any]:
    return {
        "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        "MCP_GATEWAY_MAX_SESSIONS_PER_USER": 100_000,
        "MCP_GATEWAY_RATE_LIMIT": [1_000_000_000, 60],
        "MCP_GATEWAY_RESUME_TIMEOUT": 0,
        "LOGGING": {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}},
    }


def redis_overrides(redis_url: str, prefix: str) -> dict[str, Any]:
    """The Redis layer and a Redis cache (the rate limit's, shared by every worker), as a deployment has them."""
    base = redis_url.rstrip("/")
    return load_overrides(channel_layer_settings("core", f"{base}/0", prefix), f"{base}/1", prefix)


def measure(
    *, rounds: int = 3, sessions: int = 32, seconds: float = 5.0, redis: str = "redis://127.0.0.1:6379"
) -> dict[str, Any]:
    """One worker on Redis vs one in-memory: medians over alternating rounds, and the ratios redis / memory."""
    setup_django()
    headers = user_headers(1)[0]
    prefix = f"mcp-rw-{os.getpid()}"
    workers = {"memory": Worker(memory_overrides()), "redis": Worker(redis_overrides(redis, prefix))}
    try:
        results: dict[str, list[dict[str, float]]] = {name: [] for name in workers}
        for _ in range(rounds):
            for name, worker in workers.items():
                results[name].append(asyncio.run(throughput(worker, headers, sessions, seconds)))
        commands = asyncio.run(redis_commands(workers["redis"], headers, redis, prefix))
    finally:
        for worker in workers.values():
            worker.stop()
    figures: dict[str, Any] = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for name, runs in results.items()
    }
    figures["ratio"] = {key: figures["redis"][key] / figures["memory"][key] for key in figures["memory"]}
    figures["redis_commands"] = commands
    figures["rounds"] = results
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()
    redis_url = args.redis
    if not urlsplit(redis_url).hostname:
        parser.error("--redis needs a host")
    figures = measure(rounds=args.rounds, sessions=args.sessions, seconds=args.seconds, redis=redis_url)
    figures.pop("rounds")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
