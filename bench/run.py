"""Benchmark: the gateway (authentication and session binding on) against the MCP SDK's own SSE server.

Both serve the same MCPServer (bench/servers.py) under daphne (the gateway's ``python -m mcp_gateway.daphne``,
for both), on loopback ports, in one run; every figure is reported for both and as the ratio gateway / reference.
Run it with

    .venv/bin/python -m bench.run [--rounds 3] [--calls 2000] [--seconds 5] [--sessions 32] [--streams 1000]
                                  [--no-workers]

The two servers run side by side and are measured in alternating rounds (reference, gateway, reference, …);
each figure is the median over the rounds, so a slow spell of a shared machine hits both alike. Besides wall-clock
latency and calls/s it reports the server process's CPU time per call (user + system, from /proc), which the
client's own CPU use and the machine's other load disturb far less. Memory per idle stream is measured twice: in
the servers after the rounds (``idle_stream_kib``), and in fresh processes that served nothing before
(``idle_stream_fresh_kib``), where new streams cannot reuse memory freed by earlier work; each time after a few
streams opened and closed, so what a process does once (imports, its database connection) is not counted per
stream. It is also shown for the server's own floor: a bare ASGI app holding the same number of event streams
(``bench.servers:floor_app``), under the gateway's daphne command line and under daphne's own.

Then, unless ``--no-workers`` (or Redis is not reachable at ``--redis``), the gateway on Redis behind the
round-robin loopback proxy (tests/support/proxy.py, its own process): 1 worker vs 2 workers (calls/s, as ratios to each
other and to the reference), and the two channel layers of channels-redis compared across 2 workers (POST→reply
latency through the SDK client, calls/s): ``RedisChannelLayer`` ("core") vs ``RedisPubSubChannelLayer``.

It only talks to 127.0.0.1, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.sse import sse_client

from tests.support.launcher import Launcher

ROOT = Path(__file__).resolve().parent.parent


class Server(Launcher):
    """One server of the comparison, its output discarded; ``sse_path`` is where its HTTP+SSE stream opens."""

    sse_path = "mcp/sse"

    def __init__(
        self, name: str, app: str, env: dict[str, str], module: str = "daphne", args: tuple[str, ...] = ("-v", "0")
    ) -> None:
        super().__init__(app, module=module, env=env, args=args, log=False, name=name)

    def rss(self) -> int:
        return self.rss_bytes()


@asynccontextmanager
async def client(server: Server, headers: dict[str, str]) -> Any:
    async with Client(sse_client(f"{server.url}/{server.sse_path}", headers=headers)) as c:
        yield c


async def latency(server: Server, headers: dict[str, str], calls: int) -> dict[str, float]:
    async with client(server, headers) as c:
        for _ in range(20):
            await c.call_tool("echo", {"text": "warm"})
        samples = []
        for n in range(calls):
            start = time.perf_counter()
            await c.call_tool("echo", {"text": str(n)})
            samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p99_ms": samples[int(len(samples) * 0.99) - 1]}


async def throughput(server: Server, headers: dict[str, str], sessions: int, seconds: float) -> dict[str, float]:
    """Calls/s with ``sessions`` concurrent sessions, and the server's CPU microseconds per call."""
    done = 0
    stop_at = 0.0

    async def worker(n: int) -> None:
        nonlocal done
        async with client(server, headers) as c:
            await c.call_tool("echo", {"text": "warm"})
            await ready.wait()
            while time.perf_counter() < stop_at:
                result = await c.call_tool("echo", {"text": f"{n}"})
                assert result.structured_content == {"result": str(n)}, "misrouted reply"
                done += 1

    ready = asyncio.Event()
    tasks = [asyncio.create_task(worker(n)) for n in range(sessions)]
    await asyncio.sleep(2)  # sessions open
    cpu_before = server.cpu_seconds() if isinstance(server, Server) else 0.0
    stop_at = time.perf_counter() + seconds
    ready.set()
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 60)
    result = {"calls_per_s": done / seconds}
    if isinstance(server, Server):
        result["cpu_us_per_call"] = (server.cpu_seconds() - cpu_before) / max(done, 1) * 1e6
    return result


def open_streams(server: Server, headers: dict[str, str], count: int, socks: list[socket.socket]) -> None:
    """Open ``count`` SSE streams on raw sockets (into ``socks``), reading only their endpoint events."""
    lines = [f"GET /{server.sse_path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    request = ("\r\n".join(lines + [f"{k}: {v}" for k, v in headers.items()]) + "\r\n\r\n").encode()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        socks.append(sock)
        sock.sendall(request)
        received = b""
        while b"session_id=" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"{server.name} closed a stream: {received[:200]!r}")
            received += chunk


def idle_stream_bytes(server: Server, headers: dict[str, str], streams: int, warmup: int = 5) -> float:
    """Server memory per open, idle SSE stream: RSS growth while ``streams`` streams are opened.

    ``warmup`` streams are opened and closed first, so that what a process
    does once, on its first requests (imports, its database connection), is
    not counted as the cost of each stream.
    """
    socks: list[socket.socket] = []
    try:
        open_streams(server, headers, warmup, socks)
    finally:
        for sock in socks:
            sock.close()
    time.sleep(1)
    before = server.rss()
    socks = []
    try:
        open_streams(server, headers, streams, socks)
        time.sleep(2)
        return (server.rss() - before) / streams
    finally:
        for sock in socks:
            sock.close()


def gateway_headers(env: dict[str, str]) -> dict[str, str]:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env={**os.environ, **env}, check=True)
    script = (
        "from django.contrib.auth import get_user_model;get_user_model().objects.create_user('bench', password='x')"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env={**os.environ, **env}, check=True
    )
    out = subprocess.check_output(
        [sys.executable, "manage.py", "demo_headers", "bench", "--json"], cwd=ROOT, env={**os.environ, **env}
    )
    return json.loads(out)


async def measure_round(server: Server, headers: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    result = await latency(server, headers, args.calls)
    result.update(await throughput(server, headers, args.sessions, args.seconds))
    return result


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


class Front:
    """A cluster's proxy, shaped like a Server for client()."""

    sse_path = "mcp/sse"

    def __init__(self, url: str) -> None:
        self.url = url


def redis_up(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 6379), timeout=1).close()
        return True
    except OSError:
        return False


def multiworker(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Gateway on Redis behind the proxy: 1 vs 2 workers, and core vs pubsub channel layer on 2 workers."""
    from bench.cluster import Cluster
    from bench.load import channel_layer_settings, load_overrides

    results: dict[str, dict[str, float]] = {}
    for name, layer, workers in (("core-1w", "core", 1), ("core-2w", "core", 2), ("pubsub-2w", "pubsub", 2)):
        prefix = f"mcp-bench-{os.getpid()}-{name}"
        layers = channel_layer_settings(layer, f"{args.redis}/0", prefix)
        with Cluster(load_overrides(layers, f"{args.redis}/1", prefix), workers=workers) as cluster:
            headers = cluster.user_headers(1)[0]
            front = Front(cluster.front)
            result = asyncio.run(latency(front, headers, args.worker_calls))  # type: ignore[arg-type]
            result.update(asyncio.run(throughput(front, headers, args.sessions, args.seconds)))  # type: ignore[arg-type]
            results[name] = result
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; figures are their medians")
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls for latency (p99: 20th slowest)")
    parser.add_argument("--sessions", type=int, default=32, help="concurrent sessions for throughput")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput measuring time")
    parser.add_argument("--streams", type=int, default=1000, help="idle streams for memory")
    parser.add_argument("--no-workers", action="store_true", help="skip the multi-worker (Redis) comparison")
    parser.add_argument("--worker-calls", type=int, default=200, help="sequential calls for latency, multi-worker")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis for the multi-worker runs")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.streams * 2 + 256)), hard))

    with tempfile.TemporaryDirectory() as tmp:
        env = {"DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB": str(Path(tmp) / "bench.sqlite3")}
        headers = gateway_headers(env)
        results: dict[str, dict[str, float]] = {}
        servers: dict[str, tuple[Server, dict[str, str]]] = {}
        try:
            # All under the gateway's daphne command line (daphne with a lighter input queue per connection, see
            # mcp_gateway/daphne.py); the floor also under daphne's own, to show what that saves.
            for name, app, module, sse_path, auth in (
                ("reference", "bench.servers:reference_app", "mcp_gateway.daphne", "sse", {}),
                ("gateway", "demo.asgi:application", "mcp_gateway.daphne", "mcp/sse", headers),
                ("floor", "bench.servers:floor_app", "mcp_gateway.daphne", "sse", {}),
                ("floor-daphne", "bench.servers:floor_app", "daphne", "sse", {}),
            ):
                server = Server(name, app, env, module)
                server.sse_path = sse_path
                servers[name] = (server, auth)
            rounds: dict[str, list[dict[str, float]]] = {"reference": [], "gateway": []}
            for _ in range(args.rounds):
                for name in rounds:
                    server, auth = servers[name]
                    rounds[name].append(asyncio.run(measure_round(server, auth, args)))
            for name, server_rounds in rounds.items():
                results[name] = medians(server_rounds)
            for name, (server, auth) in servers.items():
                kib = idle_stream_bytes(server, auth, args.streams) / 1024
                results.setdefault(name, {})["idle_stream_kib"] = kib
            # The same in a fresh process: after the rounds, new streams partly reuse memory the rounds freed.
            for name in ("reference", "gateway"):
                server, auth = servers[name]
                fresh = Server(name, server.app, env, server.module)
                fresh.sse_path = server.sse_path
                try:
                    results[name]["idle_stream_fresh_kib"] = idle_stream_bytes(fresh, auth, args.streams) / 1024
                finally:
                    fresh.stop()
        finally:
            for server, _ in servers.values():
                server.stop()

    models = [line.split(":", 1)[1] for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    cpu = re.sub(r"\s+", " ", models[0] if models else "?").strip()
    python = platform.python_version()
    print(f"Machine: {os.cpu_count()} cores, {cpu}; Python {python}; both under python -m mcp_gateway.daphne")
    print(f"Medians of {args.rounds} alternating rounds; memory with {args.streams} idle streams")
    print(f"{'metric':<22}{'reference':>12}{'gateway':>12}{'ratio':>9}")
    for key, better in (
        ("p50_ms", "lower"),
        ("p99_ms", "lower"),
        ("calls_per_s", "higher"),
        ("cpu_us_per_call", "lower"),
        ("idle_stream_kib", "lower"),
        ("idle_stream_fresh_kib", "lower"),
    ):
        ref, ours = results["reference"][key], results["gateway"][key]
        print(f"{key:<22}{ref:>12.2f}{ours:>12.2f}{ours / ref:>8.2f}x  ({better} is better)")
    floor, plain = results["floor"]["idle_stream_kib"], results["floor-daphne"]["idle_stream_kib"]
    print(f"floor per idle stream (bare ASGI app): {floor:.2f} KiB; under daphne's own command line: {plain:.2f} KiB")

    workers: dict[str, dict[str, float]] = {}
    if args.no_workers:
        pass
    elif not redis_up(args.redis):
        print(f"Multi-worker comparison skipped: no Redis at {args.redis}")
    else:
        workers = multiworker(args)
        ref = results["reference"]
        print()
        print("Gateway on Redis behind the round-robin proxy (proxy in its own process; same machine, same cores)")
        print(f"{'run':<12}{'p50_ms':>9}{'p99_ms':>9}{'calls/s':>10}{'calls/s vs reference':>22}")
        for name, figures in workers.items():
            print(
                f"{name:<12}{figures['p50_ms']:>9.2f}{figures['p99_ms']:>9.2f}{figures['calls_per_s']:>10.1f}"
                f"{figures['calls_per_s'] / ref['calls_per_s']:>21.2f}x"
            )
        one, two, pubsub = workers["core-1w"], workers["core-2w"], workers["pubsub-2w"]
        print(f"2 workers / 1 worker, calls/s:           {two['calls_per_s'] / one['calls_per_s']:.2f}x")
        print(f"pubsub / core layer (2 workers), p50:    {pubsub['p50_ms'] / two['p50_ms']:.2f}x  (lower is better)")
        print(f"pubsub / core layer (2 workers), p99:    {pubsub['p99_ms'] / two['p99_ms']:.2f}x  (lower is better)")
        print(f"pubsub / core layer (2 workers), calls/s: {pubsub['calls_per_s'] / two['calls_per_s']:.2f}x")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    record = {"args": vars(args), "results": results, "workers": workers}
    (out / f"run-{int(time.time())}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
