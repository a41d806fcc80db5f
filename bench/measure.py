"""What bench/run.py measures of one server, with the raw client (bench/wire.py) or the SDK's ``Client``.

- :func:`calls`: ``sessions`` concurrent sessions calling ``echo`` for ``seconds``: calls/s, latency p50 and p99,
  the server's CPU time per call (user + system, /proc) and the client's own;
- :func:`sdk_calls`: the same through the SDK's ``Client`` over HTTP+SSE, the "realistic" profile (the client then
  costs more than the server, so the ratio is what real clients see, not what the server can do);
- :func:`held`: ``count`` HTTP+SSE sessions, each initialized (``initialize`` answered, ``notifications/initialized``
  accepted) then left idle: server memory per held session, then a new client's initialize + call latency while
  they are held;
- :func:`open_rate`: ``count`` such sessions opened at an offered rate: opens/s, opens that timed out waiting for
  the stream's headers.

Every loop is bounded in count and time; only 127.0.0.1 is spoken to.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from .wire import Pool, Session, SseSession, Target, WireError, session


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(int(len(ordered) * fraction) - 1, 0))] if ordered else float("nan")


async def calls(
    target: Target, transport: str, sessions: int, seconds: float, cpu: Callable[[], float]
) -> dict[str, float]:
    """Calls/s, p50/p99 (ms) and CPU per call (µs, server and client) for ``sessions`` callers over ``seconds``."""
    callers: list[Session] = [session(transport, target, f"s{n}") for n in range(sessions)]
    latencies: list[float] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(c.open() for c in callers)), 60)
        await asyncio.wait_for(asyncio.gather(*(c.call() for c in callers)), 60)  # each warm
        stop_at = time.perf_counter() + seconds

        async def loop(caller: Session) -> None:
            while (start := time.perf_counter()) < stop_at:
                await caller.call()
                latencies.append((time.perf_counter() - start) * 1000)

        cpu_before, client_before, started = cpu(), time.process_time(), time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(loop(c) for c in callers)), seconds + 60)
        elapsed, server_cpu = time.perf_counter() - started, cpu() - cpu_before
        client_cpu = time.process_time() - client_before
    finally:
        await asyncio.gather(*(c.close() for c in callers), return_exceptions=True)
    done = max(len(latencies), 1)
    return {
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "cpu_us_per_call": server_cpu / done * 1e6,
        "client_cpu_us_per_call": client_cpu / done * 1e6,
    }


async def sdk_calls(url: str, headers: dict[str, str], sessions: int, seconds: float) -> dict[str, float]:
    """Calls/s and p50/p99 through the SDK's own ``Client`` over HTTP+SSE (``url``: the stream's)."""
    from mcp import Client
    from mcp.client.sse import sse_client

    latencies: list[float] = []
    stop_at = 0.0
    ready = asyncio.Event()

    async def worker(n: int) -> None:
        async with Client(sse_client(url, headers=headers)) as client:
            await client.call_tool("echo", {"text": "warm"})
            await ready.wait()
            while (start := time.perf_counter()) < stop_at:
                result = await client.call_tool("echo", {"text": f"{n}"})
                if result.structured_content != {"result": str(n)}:
                    raise WireError(f"misrouted reply: {result}")
                latencies.append((time.perf_counter() - start) * 1000)

    tasks = [asyncio.create_task(worker(n)) for n in range(sessions)]
    await asyncio.sleep(2)  # sessions open
    stop_at = time.perf_counter() + seconds
    ready.set()
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 60)
    return {
        "calls_per_s": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
    }


async def warm(target: Target, pool: Pool) -> None:
    """A few sessions opened, called and closed: first requests, imports, the database connection."""
    for n in range(5):
        one = SseSession(target, f"warm{n}", pool)
        await one.open()
        await one.call()
        await one.close()
    await asyncio.sleep(1)


async def open_held(
    target: Target, count: int, pool: Pool, *, rate: float | None, concurrency: int, header_timeout: float
) -> tuple[list[SseSession], dict[str, float]]:
    """``count`` initialized HTTP+SSE sessions, left idle: opened at ``rate`` per second offered (open loop), or,
    with ``rate`` None, by ``concurrency`` openers one after another (closed loop, what the server can take).

    Opens/s counts from the first open to the last one that succeeded; an open whose stream headers take over
    ``header_timeout`` counts as timed out (and is dropped), any other failure as failed.
    """
    opened: list[SseSession] = []
    counts = {"timeouts": 0, "failures": 0}
    started = last = time.perf_counter()

    async def open_one(n: int) -> None:
        nonlocal last
        one = SseSession(target, f"idle{n}", pool, header_timeout=header_timeout)
        try:
            await one.open()
        except TimeoutError:
            counts["timeouts"] += 1
            await one.close()
            return
        except (WireError, OSError, asyncio.IncompleteReadError):
            counts["failures"] += 1
            await one.close()
            return
        one.stop_reading()
        opened.append(one)
        last = time.perf_counter()

    async def scheduled(n: int) -> None:
        assert rate is not None
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        await open_one(n)

    async def opener(first: int) -> None:
        for n in range(first, count, concurrency):
            await open_one(n)

    if rate is not None:
        work = [scheduled(n) for n in range(count)]
    else:
        work = [opener(n) for n in range(min(concurrency, count))]
    await asyncio.wait_for(asyncio.gather(*work), (count / (rate or 20.0)) + 600)
    return opened, {
        "opens_per_s": len(opened) / max(last - started, 1e-9),
        "open_timeouts": float(counts["timeouts"]),
        "open_failures": float(counts["failures"]),
    }


async def held(
    target: Target,
    count: int,
    rss: Callable[[], int],
    *,
    probes: int = 50,
    header_timeout: float = 30.0,
    concurrency: int = 32,
    idle_for: float = 12.0,
) -> dict[str, float]:
    """Memory per idle initialized HTTP+SSE session with ``count`` held, and a new client's latency meanwhile.

    The sessions are opened closed-loop (``concurrency`` at a time), so every one is held; memory per session is
    the server's RSS growth over them (after a few opened and closed first, so what a process does once is not
    counted), ``idle_for`` seconds after the last opened: idle as the sessions real clients leave behind are,
    longer than the gateway's default ``MCP_GATEWAY_PARK_AFTER`` (10 s), so they are parked as they would be.
    Then ``probes`` new clients one after another: open, initialize, call ``echo``, close.
    """
    pool = Pool(target.port, concurrency)
    opened: list[SseSession] = []
    try:
        await warm(target, pool)
        before = rss()
        opened, figures = await open_held(
            target, count, pool, rate=None, concurrency=concurrency, header_timeout=header_timeout
        )
        await asyncio.sleep(idle_for)
        figures["idle_kib"] = (rss() - before) / max(len(opened), 1) / 1024
        samples = []
        for n in range(probes):
            start = time.perf_counter()
            probe = SseSession(target, f"probe{n}")
            try:
                await probe.open()
                await probe.call()
            finally:
                await probe.close()
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        await close_all(opened, pool)
    figures.update(
        probe_p50_ms=statistics.median(samples), probe_p99_ms=percentile(samples, 0.99), probe_worst_ms=max(samples)
    )
    return figures


async def open_rate(
    target: Target, count: int, rate: float, *, header_timeout: float = 10.0, pool_size: int = 32
) -> dict[str, float]:
    """``count`` initialized HTTP+SSE sessions opened at ``rate`` per second offered: opens/s, timeouts, failures."""
    pool = Pool(target.port, pool_size)
    opened: list[SseSession] = []
    try:
        await warm(target, pool)
        opened, figures = await open_held(
            target, count, pool, rate=rate, concurrency=pool_size, header_timeout=header_timeout
        )
    finally:
        await close_all(opened, pool)
    return figures


async def close_all(sessions: list[SseSession], pool: Pool) -> None:
    for one in sessions:
        with contextlib.suppress(Exception):
            await one.close()
    await pool.close()


def medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Each figure's median over the rounds."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
