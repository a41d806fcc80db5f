"""Benchmark, protocol 2026-07-28: the gateway's per-request path against the MCP SDK's own Streamable HTTP app.

Both serve the same MCPServer and its async ``echo`` tool (bench/servers.py) under the same launcher,
``python -m mcp_gateway.daphne -v 0 --access-log /dev/null``, on loopback ports, in one run: the gateway
(``demo.asgi`` with bench/settings.py, every request authenticated by a bearer token, limits on but out of
reach) at ``/mcp/``, and the SDK's ``streamable_http_app()`` (``bench.servers:modern_reference_app``, no
authentication; its lifespan started on the first request, since daphne runs none) at ``/mcp/``. Run it with

    .venv/bin/python -m bench.modern [--rounds 3] [--calls 1000] [--callers 32] [--seconds 10]

Each call is one self-contained POST: a ``tools/call`` whose ``params._meta`` names protocol 2026-07-28, the
client and its capabilities, with the ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers; no
``initialize`` and no session. The load generator is a light raw-HTTP/1.1 client (keep-alive connections,
requests prebuilt but for the text, responses parsed just enough to check each answer's id and text) rather
than the SDK's ``Client``: on 2 cores that client uses about a core by itself and caps both servers (NOTES,
"Measuring the server"). Every answer is checked; a wrong one fails the run.

Per round and server: ``--calls`` sequential calls on one connection (latency p50 and p99), then ``--callers``
connections calling for ``--seconds`` (calls/s, latency under load, and the server process's CPU time per call,
user + system from /proc, which the client's own load disturbs less than wall-clock figures; the load
generator's own CPU per call is printed too, to show it is not what limits). Rounds alternate
(reference, gateway, reference, …) and each figure is the median over the rounds; the two servers run side by
side, so a slow spell of a shared machine hits both. Every figure is reported for both and as the ratio
gateway / reference. It only talks to 127.0.0.1, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import ROOT, Server, medians
from bench.sides import bearer_headers

VERSION = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
ARGS = ("-v", "0", "--access-log", "/dev/null")


class Caller:
    """One keep-alive HTTP/1.1 connection making 2026-07-28 ``tools/call echo`` requests, one at a time."""

    def __init__(self, port: int, path: str, headers: dict[str, str], name: str) -> None:
        self.port, self.name, self.sequence = port, name, 0
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"MCP-Protocol-Version: {VERSION}",
            "Mcp-Method: tools/call",
            "Mcp-Name: echo",
            *(f"{key}: {value}" for key, value in headers.items()),
        ]
        self.head = "\r\n".join(lines) + "\r\nContent-Length: "
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()

    async def call(self) -> None:
        """One call; raises unless the answer is a 200 carrying this request's id and text."""
        assert self.reader is not None and self.writer is not None
        self.sequence += 1
        text = f"{self.name}:{self.sequence}"
        params = {"name": "echo", "arguments": {"text": text}, "_meta": META}
        body = json.dumps({"jsonrpc": "2.0", "id": self.sequence, "method": "tools/call", "params": params}).encode()
        self.writer.write(f"{self.head}{len(body)}\r\n\r\n".encode() + body)
        status, content_type, answer = await self._response()
        if status != 200:
            raise RuntimeError(f"{self.name}: HTTP {status}: {answer[:300]!r}")
        message = _message(content_type, answer)
        content = message.get("result", {}).get("content") or [{}]
        if message.get("id") != self.sequence or content[0].get("text") != text:
            raise RuntimeError(f"{self.name}: wrong answer to {self.sequence}: {message}")

    async def _response(self) -> tuple[int, str, bytes]:
        assert self.reader is not None
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        if "content-length" in fields:
            return status, fields.get("content-type", ""), await self.reader.readexactly(int(fields["content-length"]))
        if fields.get("transfer-encoding", "").lower() != "chunked":
            raise RuntimeError(f"{self.name}: neither a length nor chunks: {head}")
        chunks = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        await self.reader.readuntil(b"\r\n")  # the last chunk's empty trailer
        return status, fields.get("content-type", ""), b"".join(chunks)


def _message(content_type: str, body: bytes) -> dict[str, Any]:
    """The JSON-RPC answer: the body, or an event stream's last ``data`` (a server may stream a slow answer)."""
    if content_type.startswith("text/event-stream"):
        data = [line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")]
        return json.loads(data[-1]) if data else {}
    answer: dict[str, Any] = json.loads(body)
    return answer


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": statistics.median(ordered), "p99": ordered[max(int(len(ordered) * 0.99) - 1, 0)]}


async def measure_round(
    server: Server, path: str, headers: dict[str, str], args: argparse.Namespace
) -> dict[str, float]:
    """Sequential latency, then ``callers`` connections for ``seconds``: calls/s, loaded latency, CPU per call."""
    result: dict[str, float] = {}
    caller = Caller(server.port, path, headers, "seq")
    await caller.open()
    try:
        for _ in range(50):
            await caller.call()
        samples = []
        for _ in range(args.calls):
            start = time.perf_counter()
            await caller.call()
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        await caller.close()
    latency = percentiles(samples)
    result.update(p50_ms=latency["p50"], p99_ms=latency["p99"])

    callers = [Caller(server.port, path, headers, f"c{n}") for n in range(args.callers)]
    loaded: list[float] = []
    await asyncio.gather(*(c.open() for c in callers))
    try:
        await asyncio.gather(*(c.call() for c in callers))  # each connection warm
        stop_at = time.perf_counter() + args.seconds

        async def loop(c: Caller) -> None:
            while (start := time.perf_counter()) < stop_at:
                await c.call()
                loaded.append((time.perf_counter() - start) * 1000)

        cpu_before, client_before, started = server.cpu_seconds(), time.process_time(), time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(loop(c) for c in callers)), args.seconds + 60)
        elapsed, cpu = time.perf_counter() - started, server.cpu_seconds() - cpu_before
        client_cpu = time.process_time() - client_before
    finally:
        await asyncio.gather(*(c.close() for c in callers))
    under_load = percentiles(loaded)
    result.update(
        calls_per_s=len(loaded) / elapsed,
        cpu_us_per_call=cpu / max(len(loaded), 1) * 1e6,
        client_cpu_us_per_call=client_cpu / max(len(loaded), 1) * 1e6,
        loaded_p50_ms=under_load["p50"],
        loaded_p99_ms=under_load["p99"],
    )
    return result


METRICS = (
    ("p50_ms", "lower"),
    ("p99_ms", "lower"),
    ("calls_per_s", "higher"),
    ("cpu_us_per_call", "lower"),
    ("loaded_p50_ms", "lower"),
    ("loaded_p99_ms", "lower"),
    ("client_cpu_us_per_call", "lower"),  # the load generator's own: it must stay well below the server's
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; figures are their medians")
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls for latency (p99: 10th slowest)")
    parser.add_argument("--callers", type=int, default=32, help="concurrent connections for throughput")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput measuring time per round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {"DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB": str(Path(tmp) / "bench.sqlite3")}
        sides = {
            "reference": ("bench.servers:modern_reference_app", "/mcp/", {}),
            "gateway": ("demo.asgi:application", "/mcp/", bearer_headers(env)),
        }
        servers: dict[str, Server] = {}
        try:
            for name, (app, _, _) in sides.items():
                servers[name] = Server(name, app, env, "mcp_gateway.daphne", ARGS)
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
            for _ in range(args.rounds):
                for name, (_, path, headers) in sides.items():
                    rounds[name].append(asyncio.run(measure_round(servers[name], path, headers, args)))
        finally:
            for server in servers.values():
                server.stop()
    results = {name: medians(server_rounds) for name, server_rounds in rounds.items()}

    models = [line.split(":", 1)[1] for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    cpu = re.sub(r"\s+", " ", models[0] if models else "?").strip()
    print(f"Machine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}")
    print(f"Protocol {VERSION}, both under python -m mcp_gateway.daphne {' '.join(ARGS)}")
    print(f"Medians of {args.rounds} alternating rounds: {args.calls} sequential calls, then {args.callers} callers")
    print(f"for {args.seconds:g} s (raw HTTP/1.1 keep-alive client)")
    print(f"{'metric':<24}{'reference':>12}{'gateway':>12}{'ratio':>9}")
    for key, better in METRICS:
        ref, ours = results["reference"][key], results["gateway"][key]
        print(f"{key:<24}{ref:>12.2f}{ours:>12.2f}{ours / ref:>8.2f}x  ({better} is better)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    record = {"args": vars(args), "results": results, "rounds": rounds}
    (out / f"modern-{int(time.time())}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
