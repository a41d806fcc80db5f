"""Load and fault suite: many SSE sessions across several daphne workers on Redis, behind a round-robin proxy.

What it does, against a front URL (the proxy) whose backends share one database and one Redis:

1. opens ``sessions`` SSE streams (raw HTTP, no SDK), ``callers`` of which make ``tools/call echo`` requests
   for ``seconds``, every caller using the same JSON-RPC ids 1..k (``--in-flight``) at once, each request
   carrying a per-session nonce: a reply with another session's nonce, or an id this caller did not send, is
   *misrouted*; a request still unanswered after a grace period is *lost*; a POST answered 5xx is counted;
2. closes everything, then a *disconnect storm*: opens ``storm`` more streams and drops all their connections
   at once;
3. checks nothing leaked: no open session records, each worker's asyncio task count back to its baseline
   (the test-only ``/_test/tasks`` view), no channel-layer keys left in Redis under the layer's prefix.

It prints its figures. The pytest form is ``tests/test_load.py`` (short, bounded); the long form by hand::

    PYTHONPATH=. python -m bench.load --sessions 1000 --callers 200 --seconds 60

which starts two workers (``tests.asgi`` with ``tests.settings`` on a throwaway SQLite database, the channel
layer and cache on Redis at ``--redis``, namespaced by pid), the proxy in a process of its own, runs the suite
and stops everything. Loopback only; every phase has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

SSE_PATH = "/mcp/sse"


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def channel_layer_settings(
    backend: str, redis_url: str, prefix: str, *, capacity: int = 1000, expiry: int = 30, max_connections: int = 1000
) -> dict[str, Any]:
    """CHANNEL_LAYERS for ``backend`` ("core" or "pubsub") on ``redis_url``, keys under ``prefix``.

    The host is a dict, so redis-py's pool gets two settings its defaults (redis 8) get wrong here:
    ``socket_timeout`` above channels-redis's 5 s BZPOPMIN (with redis-py's default of 5 s the blocking pop
    races the socket timeout, and the ``TimeoutError`` ends whichever stream was receiving), and
    ``max_connections`` above the POSTs a worker forwards at once (the default pool of 100 raises
    ``MaxConnectionsError``, a 503, under a few hundred concurrent POSTs).
    """
    host = {"address": redis_url, "socket_timeout": 15, "max_connections": max_connections}
    if backend == "pubsub":
        return {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [host], "prefix": prefix},
            }
        }
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # With process-specific channels, every session of a worker shares one Redis list: capacity
            # bounds the worker's whole inbox, not one session's, so it must exceed the messages a worker
            # can have queued at once. Expiry: a message older than this is not worth delivering.
            "CONFIG": {"hosts": [host], "prefix": prefix, "capacity": capacity, "expiry": expiry},
        }
    }


def load_overrides(channel_layers: dict[str, Any], cache_url: str, prefix: str) -> dict[str, Any]:
    """Worker settings for the load run: Redis layer and cache, limits on but out of reach."""
    return {
        "CHANNEL_LAYERS": channel_layers,
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": cache_url,
                "KEY_PREFIX": prefix,
            }
        },
        "MCP_GATEWAY_MAX_SESSIONS_PER_USER": 100_000,
        "MCP_GATEWAY_RATE_LIMIT": [1_000_000_000, 60],
        "MCP_GATEWAY_RESUME_TIMEOUT": 0,
        "LOGGING": {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}},
    }


# A raw SSE session


class Session:
    """One SSE stream read in the background; replies are matched to requests by id."""

    def __init__(self, http: httpx2.AsyncClient, front: str, headers: dict[str, str], figures: Figures) -> None:
        self.http, self.front, self.headers, self.figures = http, front, headers, figures
        self.nonce = secrets.token_hex(8)
        self.endpoint = ""
        self.waiting: dict[int | str, tuple[asyncio.Future[dict[str, Any]], str]] = {}
        self.ended = asyncio.Event()
        self._opened = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def open(self, within: float = 30.0) -> None:
        self._task = asyncio.create_task(self._read())
        async with asyncio.timeout(within):
            await asyncio.shield(self._opened)

    async def _read(self) -> None:
        try:
            async with self.http.stream("GET", self.front + SSE_PATH, headers=self.headers) as response:
                if response.status_code != 200:
                    self.figures.status(response.status_code)
                    raise RuntimeError(f"stream refused: {response.status_code} {(await response.aread())[:200]!r}")
                event, data = "message", []
                async for line in response.aiter_lines():
                    if line == "":
                        if data:
                            self._event(event, "\n".join(data))
                        event, data = "message", []
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "event":
                            event = value
                        elif name == "data":
                            data.append(value)
        except Exception as exc:
            if not self._opened.done():
                self._opened.set_exception(exc)
        finally:
            if not self._opened.done():
                self._opened.set_exception(EOFError("stream ended before its endpoint event"))
            self.ended.set()
            for future, _ in self.waiting.values():
                if not future.done():
                    future.set_exception(EOFError("stream ended"))

    def _event(self, event: str, data: str) -> None:
        if event == "endpoint":
            self.endpoint = data
            if not self._opened.done():
                self._opened.set_result(None)
            return
        message = json.loads(data)
        entry = self.waiting.get(message.get("id"))
        if entry is None:
            self.figures.misrouted += 1  # an id this session is not waiting for
            return
        future, _ = entry
        if not future.done():
            future.set_result(message)

    async def post(self, message: dict[str, Any]) -> int:
        response = await self.http.post(self.front + self.endpoint, json=message, headers=self.headers)
        self.figures.status(response.status_code)
        return response.status_code

    async def request(self, request_id: int, method: str, params: dict[str, Any], within: float) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = (future, method)
        try:
            status = await self.post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            if status != 202:
                raise RuntimeError(f"POST answered {status}")
            async with asyncio.timeout(within):
                return await future
        finally:
            self.waiting.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: the stream may have ended while the POST was refused

    async def handshake(self) -> None:
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "load", "version": "1"}}
        reply = await self.request(0, "initialize", params, within=30)
        assert "result" in reply, reply
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Figures:
    sessions_opened: int = 0
    open_failures: int = 0
    calls_ok: int = 0
    misrouted: int = 0
    lost: int = 0
    call_errors: int = 0  # a clear error: a non-202 POST that is not 5xx, or a JSON-RPC error reply
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    open_seconds: float = 0.0
    storm_sessions: int = 0
    storm_close_seconds: float | None = None
    leaked_sessions: int | None = None
    leaked_tasks: dict[str, int] = field(default_factory=dict)
    leaked_keys: list[str] = field(default_factory=list)

    def status(self, code: int) -> None:
        self.statuses[code] += 1

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "sessions_opened": self.sessions_opened,
            "open_failures": self.open_failures,
            "open_seconds": round(self.open_seconds, 2),
            "calls_ok": self.calls_ok,
            "calls_per_s": round(self.calls_ok / self.seconds, 1) if self.seconds else 0.0,
            "latency_p50_ms": round(statistics.median(lat), 2) if lat else None,
            "latency_p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 2) if lat else None,
            "misrouted": self.misrouted,
            "lost": self.lost,
            "call_errors": self.call_errors,
            "http_5xx": self.server_errors,
            "statuses": dict(sorted(self.statuses.items())),
            "storm_sessions": self.storm_sessions,
            "storm_close_seconds": None if self.storm_close_seconds is None else round(self.storm_close_seconds, 2),
            "leaked_sessions": self.leaked_sessions,
            "leaked_tasks": self.leaked_tasks,
            "leaked_channel_keys": len(self.leaked_keys),
        }


# Checks from outside: database, workers' task counts, Redis keys


async def open_session_count() -> int:
    from asgiref.sync import sync_to_async

    from mcp_sessions.models import McpSession

    return await sync_to_async(McpSession.objects.filter(closed_at__isnull=True).count)()


async def open_session_details() -> list[dict[str, Any]]:
    from asgiref.sync import sync_to_async

    from mcp_sessions.models import McpSession

    fields = ("id_hash", "messages_in", "messages_out", "created_at", "last_seen_at", "worker_id")
    rows = await sync_to_async(list)(McpSession.objects.filter(closed_at__isnull=True).values(*fields))
    return [{**row, "id_hash": row["id_hash"][:12]} for row in rows]


async def task_counts(http: httpx2.AsyncClient, workers: list[str]) -> dict[str, int]:
    counts = {}
    for url in workers:
        counts[url] = (await http.get(url + "/_test/tasks")).json()["tasks"]
    return counts


async def redis_keys(redis_url: str, prefix: str) -> list[str]:
    """The channel-layer keys under ``prefix``, less the worker-wide groups every live worker belongs to."""
    from redis import asyncio as aioredis

    from mcp_gateway.wire import CREDENTIALS_GROUP, LISTEN_EVENTS_GROUP

    worker_wide = {f"{prefix}:group:{group}" for group in (CREDENTIALS_GROUP, LISTEN_EVENTS_GROUP)}
    client = aioredis.from_url(redis_url)
    try:
        keys = [key.decode() async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    finally:
        await client.aclose()
    return [key for key in keys if key not in worker_wide]


async def settle(check: Callable[[], Awaitable[bool]], within: float) -> float | None:
    """Seconds until ``check()`` holds, polling; None if it did not within ``within``."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            return None
        await asyncio.sleep(0.2)


# The suite


async def open_many(
    http: httpx2.AsyncClient,
    front: str,
    headers: list[dict[str, str]],
    count: int,
    figures: Figures,
    parallel: int = 32,
) -> list[Session]:
    gate = asyncio.Semaphore(parallel)
    sessions: list[Session] = []

    async def one(n: int) -> None:
        session = Session(http, front, headers[n % len(headers)], figures)
        async with gate:
            try:
                await session.open()
            except Exception:
                figures.open_failures += 1
                await session.close()
                return
        sessions.append(session)

    await asyncio.gather(*(one(n) for n in range(count)))
    return sessions


async def caller(
    session: Session, ids: int, stop_at: float, figures: Figures, grace: float, pause: float = 0.0
) -> None:
    """Keep ``ids`` echo calls in flight, ids 1..ids (the same in every caller), until ``stop_at``."""
    sequence = 0

    async def lane(request_id: int) -> None:
        nonlocal sequence
        while time.monotonic() < stop_at and not session.ended.is_set():
            sequence += 1
            text = f"{session.nonce}:{request_id}:{sequence}"
            start = time.perf_counter()
            try:
                reply = await session.request(
                    request_id, "tools/call", {"name": "echo", "arguments": {"text": text}}, within=grace
                )
            except TimeoutError:
                figures.lost += 1
                continue
            except (EOFError, RuntimeError, httpx2.HTTPError):
                figures.call_errors += 1
                if session.ended.is_set():
                    return
                await asyncio.sleep(0.05)
                continue
            if "error" in reply:
                figures.call_errors += 1
                continue
            content = reply.get("result", {}).get("content") or [{}]
            if content[0].get("text") != text:
                figures.misrouted += 1
                continue
            figures.calls_ok += 1
            figures.latencies_ms.append((time.perf_counter() - start) * 1000)
            if pause:
                await asyncio.sleep(pause)

    await asyncio.gather(*(lane(n) for n in range(1, ids + 1)))


async def run_suite(
    front: str,
    workers: list[str],
    headers: list[dict[str, str]],
    *,
    sessions: int,
    callers: int,
    seconds: float,
    in_flight: int = 2,
    storm: int = 100,
    redis_url: str,
    prefix: str,
    settle_within: float = 20.0,
    log: Callable[[str], None] = print,
) -> Figures:
    """The whole suite against ``front``; ``workers`` are the backends' own URLs (for task counts)."""
    raise_fd_limit(4 * (sessions + storm) + 1024)
    figures = Figures()
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=max(64, callers * in_flight))
    timeout = httpx2.Timeout(30.0, read=None)
    async with httpx2.AsyncClient(limits=limits, timeout=timeout) as probe:
        # Warm up every worker (lease heartbeat, connections), then take its task baseline.
        warm = Figures()
        async with httpx2.AsyncClient(timeout=timeout) as http:
            for url in workers:
                session = Session(http, url, headers[0], warm)
                await session.open()
                await session.handshake()
                await session.request(1, "tools/call", {"name": "echo", "arguments": {"text": "warm"}}, within=30)
                await session.close()
        await settle(lambda: _zero(open_session_count), 10)
        await asyncio.sleep(0.5)
        baseline = await task_counts(probe, workers)
        log(f"baseline tasks per worker: {baseline}")

        async with httpx2.AsyncClient(limits=limits, timeout=timeout) as http:
            start = time.monotonic()
            opened = await open_many(http, front, headers, sessions, figures)
            figures.open_seconds = time.monotonic() - start
            figures.sessions_opened = len(opened)
            log(f"opened {len(opened)}/{sessions} sessions in {figures.open_seconds:.1f}s")
            active = opened[:callers]
            await asyncio.gather(*(s.handshake() for s in active))
            log(f"{len(active)} callers initialized; calling for {seconds}s with ids 1..{in_flight} each")
            loaded = await task_counts(probe, workers)
            log(f"tasks per worker under load: {loaded}")
            stop_at = time.monotonic() + seconds
            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(*(caller(s, in_flight, stop_at, figures, grace=15.0) for s in active)),
                seconds + 60,
            )
            figures.seconds = time.monotonic() - started
            ended = sum(s.ended.is_set() for s in opened)
            log(f"calls done: {figures.calls_ok} ok; streams ended under load: {ended}")
            await asyncio.gather(*(s.close() for s in opened))

        # Disconnect storm: many streams, all connections dropped at once.
        storm_http = httpx2.AsyncClient(limits=limits, timeout=timeout)
        try:
            stormers = await open_many(storm_http, front, headers, storm, figures)
            figures.storm_sessions = len(stormers)
            await asyncio.sleep(0.5)
        finally:
            await storm_http.aclose()  # drops every connection at once
        for s in stormers:
            await s.close()
        log(f"storm: opened {len(stormers)} streams and dropped them")

        figures.storm_close_seconds = await settle(lambda: _zero(open_session_count), settle_within)
        figures.leaked_sessions = await open_session_count()
        if figures.leaked_sessions:
            log(f"sessions still open: {await open_session_details()}")

        async def tasks_back() -> bool:
            now = await task_counts(probe, workers)
            figures.leaked_tasks = {url: max(0, now[url] - baseline[url]) for url in workers}
            return not any(figures.leaked_tasks.values())

        await settle(tasks_back, settle_within)
        if any(figures.leaked_tasks.values()):
            for url in workers:
                with contextlib.suppress(Exception):
                    stacks = (await probe.get(url + "/_test/tasks?stacks=1")).json().get("stacks", [])
                    log(f"tasks of {url} (leaked {figures.leaked_tasks[url]}):")
                    for stack in stacks:
                        log("  " + " <- ".join(reversed(stack[-3:])))

        async def keys_gone() -> bool:
            figures.leaked_keys = await redis_keys(redis_url, prefix)
            return not figures.leaked_keys

        await settle(keys_gone, settle_within)
    return figures


async def _zero(count: Callable[[], Awaitable[int]]) -> bool:
    return await count() == 0


def print_figures(figures: Figures, title: str = "load suite") -> None:
    print(f"== {title} ==")
    for key, value in figures.summary().items():
        print(f"  {key:<22} {value}")
    if figures.leaked_keys:
        print(f"  leftover keys: {figures.leaked_keys[:10]}")


# By hand: the long form, with its own workers, database and proxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--in-flight", type=int, default=2, help="ids 1..N in flight per caller")
    parser.add_argument("--storm", type=int, default=500, help="streams in the disconnect storm")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--layer", choices=["core", "pubsub"], default="core")
    parser.add_argument("--capacity", type=int, default=1000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()
    raise_fd_limit(4 * (args.sessions + args.storm) + 1024)

    from bench.cluster import Cluster

    prefix = f"mcp-load-{os.getpid()}"
    layers = channel_layer_settings(args.layer, f"{args.redis}/0", prefix, capacity=args.capacity)
    with Cluster(load_overrides(layers, f"{args.redis}/1", prefix), workers=args.workers) as cluster:
        headers = cluster.user_headers(args.users)
        figures = asyncio.run(
            run_suite(
                cluster.front,
                cluster.urls,
                headers,
                sessions=args.sessions,
                callers=args.callers,
                seconds=args.seconds,
                in_flight=args.in_flight,
                storm=args.storm,
                redis_url=f"{args.redis}/0",
                prefix=prefix,
            )
        )
        print(f"Machine: {os.cpu_count()} cores; {args.workers} workers ({args.layer} layer), proxy in its own process")
        print_figures(figures, f"{args.sessions} sessions, {args.callers} callers, {args.seconds:.0f}s")
        print(f"  proxy                  {cluster.proxy_stats()}")


if __name__ == "__main__":
    main()
