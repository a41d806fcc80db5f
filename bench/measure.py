"""What bench/run.py measures of one server, with the raw client (bench/wire.py) or the SDK's ``Client``.

- :func:`calls`: ``sessions`` concurrent sessions calling ``echo`` for ``seconds``: calls/s, latency p50 and p99,
  the server's CPU time per call (user + system, /proc) and the client's own;
- :func:`sdk_calls`: the same through the SDK's ``Client`` over HTTP+SSE, the "realistic" profile (the client then
  costs more than the server, so the ratio is what real clients see, not what the server can do);
- :func:`held`: ``count`` HTTP+SSE sessions opened at an offered rate, each initialized (``initialize`` answered,
  ``notifications/initialized`` accepted) then left idle: opens/s, opens that timed out waiting for the stream's
  headers, server memory per held session, then a new client's initialize + call latency while they are held.

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


async def held(
    target: Target,
    count: int,
    rate: float,
    rss: Callable[[], int],
    *,
    probes: int = 50,
    header_timeout: float = 10.0,
    pool_size: int = 32,
) -> dict[str, float]:
    """Open ``count`` initialized HTTP+SSE sessions at ``rate`` per second offered, hold them idle, measure.

    Opens/s counts from the first open offered to the last one finished; an open whose stream headers take over
    ``header_timeout`` counts as timed out (and is dropped). Memory per session is the server's RSS growth over
    the sessions held (after a few opened and closed first, so what a process does once is not counted). Then
    ``probes`` new clients one after another: open, initialize, call ``echo``, close.
    """
    pool = Pool(target.port, pool_size)
    opened: list[SseSession] = []
    timeouts = failures = 0
    try:
        for n in range(5):  # warm: first requests, imports, the database connection
            warm = SseSession(target, f"warm{n}", pool)
            await warm.open()
            await warm.call()
            await warm.close()
        await asyncio.sleep(1)
        before = rss()

        async def open_one(n: int, at: float) -> None:
            nonlocal timeouts, failures
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            one = SseSession(target, f"idle{n}", pool, header_timeout=header_timeout)
            try:
                await one.open()
            except TimeoutError:
                timeouts += 1
                await one.close()
                return
            except (WireError, OSError, asyncio.IncompleteReadError):
                failures += 1
                await one.close()
                return
            one.stop_reading()
            opened.append(one)

        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(open_one(n, started + n / rate) for n in range(count))), count / rate + 300
        )
        open_seconds = time.perf_counter() - started
        await asyncio.sleep(2)
        kib = (rss() - before) / max(len(opened), 1) / 1024
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
        for one in opened:
            with contextlib.suppress(Exception):
                await one.close()
        await pool.close()
    return {
        "opens_per_s": len(opened) / open_seconds,
        "open_timeouts": float(timeouts),
        "open_failures": float(failures),
        "idle_kib": kib,
        "probe_p50_ms": statistics.median(samples),
        "probe_p99_ms": percentile(samples, 0.99),
        "probe_worst_ms": max(samples),
    }


def medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Each figure's median over the rounds."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
