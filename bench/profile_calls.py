"""Server CPU per ``tools/call`` on each transport, for profiling the hot path (not the benchmark: see bench/run.py).

One gateway worker (``python -m mcp_gateway.daphne -v 0 --access-log /dev/null``, ``demo.asgi`` with
bench/settings.py, a login cookie with its CSRF token) or, with ``--app``, any ASGI app; ``--callers`` raw
keep-alive HTTP/1.1 sessions call ``echo`` on one transport for ``--seconds`` (``sse``: HTTP+SSE, the stream on
one connection and the POSTs on another; ``streamable``: Streamable HTTP 2025-11-25 with a session; ``modern``:
2026-07-28 self-contained POSTs), every answer checked. Printed per round: calls/s and the worker's user + system
CPU time from /proc over the calls, divided by them; then the medians.

- ``--baseline DIR``: the same with a second worker run from another checkout (``git archive`` of a commit),
  in alternating rounds, both as ratios;
- ``--sdk``: the SDK's own apps (``bench.servers``: ``reference_app`` for HTTP+SSE, ``modern_reference_app``
  for the rest) in the same rounds;
- ``--spy DIR``: this worker's calls under ``py-spy record --nonblocking`` (the venv's; raw folded stacks in
  ``DIR/<transport>.txt``).

::

    PYTHONPATH=. .venv/bin/python -m bench.profile_calls [--paths sse,streamable,modern] [--rounds 5] [--sdk]

It only talks to 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import Server
from bench.sides import bearer_headers
from tests.support.launcher import Launcher

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "profile", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
INITIALIZE = {
    "protocolVersion": HANDSHAKE,
    "capabilities": {},
    "clientInfo": {"name": "profile", "version": "1"},
}


class Connection:
    """One keep-alive HTTP/1.1 connection: requests written raw, responses read just enough to check them."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.extra = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        self.writer.close()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        more = "".join(f"{key}: {value}\r\n" for key, value in (headers or {}).items())
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.extra}{more}"
        if method == "POST":
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(f"{head}\r\n".encode() + body)
        return await self.response()

    async def head(self) -> tuple[int, dict[str, str]]:
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        return int(lines[0].split(" ", 2)[1]), fields

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        status, fields = await self.head()
        if "content-length" in fields:
            return status, fields, await self.reader.readexactly(int(fields["content-length"]))
        chunks = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        await self.reader.readuntil(b"\r\n")
        return status, fields, b"".join(chunks)


def message(fields: dict[str, str], body: bytes) -> Any:
    if fields.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return json.loads(body)


def rpc(ident: int | None, method: str, params: dict[str, Any]) -> bytes:
    payload: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if ident is not None:
        payload["id"] = ident
    return json.dumps(payload).encode()


def check(answer: Any, ident: int, text: str) -> None:
    content = (answer.get("result") or {}).get("content") or [{}]
    if answer.get("id") != ident or content[0].get("text") != text:
        raise RuntimeError(f"wrong answer to {ident}: {answer}")


class SSECaller:
    """An HTTP+SSE session: the stream on one connection, POSTs to its messages endpoint on another."""

    def __init__(self, port: int, headers: dict[str, str], prefix: str, name: str) -> None:
        self.stream, self.post = Connection(port, headers), Connection(port, headers)
        self.prefix, self.name, self.sequence = prefix, name, 1

    async def open(self) -> None:
        await self.stream.open()
        await self.post.open()
        self.stream.writer.write(
            f"GET {self.prefix}sse HTTP/1.1\r\nHost: 127.0.0.1:{self.stream.port}\r\n{self.stream.extra}"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        status, _ = await self.stream.head()
        assert status == 200, status
        event = await self.event()
        self.endpoint = event["data"]
        await self.send(rpc(1, "initialize", INITIALIZE))
        await self.event()
        await self.send(rpc(None, "notifications/initialized", {}))

    async def event(self) -> dict[str, str]:
        """The next event of the chunked stream (one event per chunk, keepalive comments skipped)."""
        while True:
            size = int((await self.stream.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = (await self.stream.reader.readexactly(size + 2))[:-2].decode()
            fields = dict(line.partition(": ")[::2] for line in chunk.splitlines() if line and line[0] != ":")
            if "data" in fields:
                return fields

    async def send(self, body: bytes) -> None:
        status, _, answer = await self.post.request("POST", self.endpoint, body)
        if status != 202:
            raise RuntimeError(f"POST answered {status}: {answer[:200]!r}")

    async def call(self) -> None:
        self.sequence += 1
        text = f"{self.name}:{self.sequence}"
        await self.send(rpc(self.sequence, "tools/call", {"name": "echo", "arguments": {"text": text}}))
        check(json.loads((await self.event())["data"]), self.sequence, text)

    def close(self) -> None:
        self.stream.close()
        self.post.close()


class StreamableCaller:
    """A Streamable HTTP (2025-11-25) session: every message a POST on one connection, answered in its body."""

    accept = {"Accept": "application/json, text/event-stream"}

    def __init__(self, port: int, headers: dict[str, str], prefix: str, name: str) -> None:
        self.connection = Connection(port, headers)
        self.prefix, self.name, self.sequence = prefix, name, 1
        self.headers = dict(self.accept)

    async def open(self) -> None:
        await self.connection.open()
        status, fields, body = await self.connection.request(
            "POST", self.prefix, rpc(1, "initialize", INITIALIZE), self.headers
        )
        assert status == 200, (status, body)
        self.headers = {**self.accept, "Mcp-Session-Id": fields["mcp-session-id"], "MCP-Protocol-Version": HANDSHAKE}
        status, _, _ = await self.connection.request(
            "POST", self.prefix, rpc(None, "notifications/initialized", {}), self.headers
        )
        assert status == 202, status

    async def call(self) -> None:
        self.sequence += 1
        text = f"{self.name}:{self.sequence}"
        body = rpc(self.sequence, "tools/call", {"name": "echo", "arguments": {"text": text}})
        status, fields, answer = await self.connection.request("POST", self.prefix, body, self.headers)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
        check(message(fields, answer), self.sequence, text)

    def close(self) -> None:
        self.connection.close()


class ModernCaller(StreamableCaller):
    """2026-07-28: every call a self-contained POST, no session."""

    async def open(self) -> None:
        await self.connection.open()
        self.headers = {
            **self.accept,
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/call",
            "Mcp-Name": "echo",
        }

    async def call(self) -> None:
        self.sequence += 1
        text = f"{self.name}:{self.sequence}"
        body = rpc(self.sequence, "tools/call", {"name": "echo", "arguments": {"text": text}, "_meta": META})
        status, fields, answer = await self.connection.request("POST", self.prefix, body, self.headers)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
        check(message(fields, answer), self.sequence, text)


CALLERS: dict[str, Any] = {"sse": SSECaller, "streamable": StreamableCaller, "modern": ModernCaller}


def start_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` for ``seconds``, into ``out`` (raw folded stacks), sampling without pausing it."""
    spy = str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "--nonblocking", "-p", str(pid), "-r", "400", "-f", "raw", "-o", str(out)]
    return subprocess.Popen([*argv, "-d", str(int(seconds))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def drive(
    server: Server, kind: str, headers: dict[str, str], prefix: str, callers: int, seconds: float, spy: str = ""
) -> tuple[int, float]:
    """Calls made by ``callers`` sessions in ``seconds``, and the server's CPU seconds meanwhile."""
    sessions = [CALLERS[kind](server.port, headers, prefix, f"c{n}") for n in range(callers)]
    for session in sessions:
        await session.open()
        for _ in range(20):
            await session.call()
    done = 0
    profiler = None
    if spy:
        profiler = start_spy(server.proc.pid, Path(spy) / f"{kind}.txt", seconds)
        await asyncio.sleep(0.5)
    stop_at = time.perf_counter() + seconds

    async def loop(session: Any) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await session.call()
            done += 1

    before = server.cpu_seconds()
    await asyncio.wait_for(asyncio.gather(*(loop(s) for s in sessions)), seconds + 30)
    cpu = server.cpu_seconds() - before
    if profiler is not None:
        profiler.wait(timeout=60)
    for session in sessions:
        session.close()
    return done, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--paths", default="sse,streamable,modern")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--app", default="", help="another ASGI app (no authentication), e.g. bench.servers:...")
    parser.add_argument("--prefix", default="/mcp/")
    parser.add_argument("--spy", default="", help="a directory for py-spy profiles")
    parser.add_argument("--baseline", default="", help="a checkout to compare with, measured in alternating rounds")
    parser.add_argument("--sdk", action="store_true", help="compare with the SDK's own apps (bench/servers.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB": str(Path(tmp) / "bench.sqlite3")}
        headers = {} if args.app else bearer_headers(env)
        app = args.app or "demo.asgi:application"
        launch = ("-v", "0", "--access-log", "/dev/null")
        servers = {"this": Server("this", app, env, "mcp_gateway.daphne", launch)}
        if args.baseline:
            base = Path(args.baseline).resolve()
            servers["baseline"] = Launcher(
                app, env={**env, "PYTHONPATH": str(base)}, args=launch, log=False, name="baseline", cwd=base
            )  # type: ignore[assignment]
        references = {}
        if args.sdk:  # the SDK's apps, unauthenticated, under the same launcher: HTTP+SSE at /, the rest at /mcp/
            references["sse"] = Server("sdk-sse", "bench.servers:reference_app", env, "mcp_gateway.daphne", launch)
            modern = Server("sdk", "bench.servers:modern_reference_app", env, "mcp_gateway.daphne", launch)
            references["streamable"] = references["modern"] = modern
        figures: dict[tuple[str, str], list[float]] = {}
        rates: dict[tuple[str, str], list[float]] = {}
        try:
            for _ in range(args.rounds):
                for kind in args.paths.split(","):
                    runs = [(name, server, headers, args.prefix) for name, server in servers.items()]
                    if kind in references:
                        runs.append(("sdk", references[kind], {}, "/" if kind == "sse" else "/mcp/"))
                    for name, server, auth, prefix in runs:
                        spy = args.spy if name == "this" else ""
                        done, cpu = asyncio.run(drive(server, kind, auth, prefix, args.callers, args.seconds, spy))
                        us = cpu / max(done, 1) * 1e6
                        figures.setdefault((kind, name), []).append(us)
                        rates.setdefault((kind, name), []).append(done / args.seconds)
                        print(
                            f"{kind:<11} {name:<9} {done / args.seconds:7.0f} calls/s  {us:6.0f} CPU us/call",
                            flush=True,
                        )
        finally:
            for server in [*servers.values(), *references.values()]:
                server.stop()
        for kind in args.paths.split(","):
            this_us, this_rate = statistics.median(figures[(kind, "this")]), statistics.median(rates[(kind, "this")])
            line = f"{kind:<11} medians: this {this_us:.0f} CPU us/call, {this_rate:.0f} calls/s"
            for other in ("baseline", "sdk"):
                if (kind, other) in figures:
                    us, rate = statistics.median(figures[(kind, other)]), statistics.median(rates[(kind, other)])
                    line += f"; {other} {us:.0f} us ({this_us / us:.3f}x), {rate:.0f} calls/s ({this_rate / rate:.3f}x)"
            print(line, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", ".")
    main()
