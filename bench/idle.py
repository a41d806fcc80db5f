"""Benchmark: memory per idle *initialized* session, and a new client's initialize + call meanwhile.

An idle initialized session is what every real client leaves behind: it opened its session, sent ``initialize``
and ``notifications/initialized``, and waits. :func:`measure` opens ``sessions`` of them on raw sockets (HTTP+SSE:
one event stream each, held; Streamable HTTP: no stream held, only the session), waits ``settle`` seconds (long
enough for the gateway to park them, see ``MCP_GATEWAY_PARK_AFTER``), and reports the server's RSS growth per
session; then, with them all held, the wall time of a new client's ``initialize`` + ``notifications/initialized``
+ ``tools/call`` on raw HTTP, ``probes`` times (median and worst). Run it alone with

    .venv/bin/python -m bench.idle [--sessions 1000] [--transport sse|streamable] [--park-after 5]

It only talks to 127.0.0.1 and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.launcher import Launcher

ROOT = Path(__file__).resolve().parent.parent
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "idle", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}


class Http:
    """One keep-alive HTTP/1.1 connection to the server, for POSTs whose answers are read whole."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes = b"", extra: dict[str, str] | None = None) -> Any:
        """Send one request; returns (status, headers, body) once the whole answer is read."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        fields = {**self.headers, **(extra or {})}
        if body:
            fields |= {"Content-Type": "application/json", "Content-Length": str(len(body))}
        lines += [f"{k}: {v}" for k, v in fields.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        answer = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        if "content-length" in answer:
            size = int(answer["content-length"])
            while len(self.buffer) < size:
                self.buffer += self._recv()
            content, self.buffer = self.buffer[:size], self.buffer[size:]
        else:  # chunked (an event stream answering a Streamable HTTP request): read to its last chunk
            content = b""
            while True:
                while b"\r\n" not in self.buffer:
                    self.buffer += self._recv()
                size_line, self.buffer = self.buffer.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buffer) < size + 2:
                    self.buffer += self._recv()
                content += self.buffer[:size]
                self.buffer = self.buffer[size + 2 :]
                if size == 0:
                    break
        return int(status_line.split()[1]), answer, content

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"the server closed the connection: {self.buffer[:200]!r}")
        return chunk

    def close(self) -> None:
        self.sock.close()


def read_until(sock: socket.socket, marker: bytes, received: bytes = b"") -> bytes:
    """Read ``sock`` until ``marker`` has arrived; everything read."""
    while marker not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"a stream closed: {received[:200]!r}")
        received += chunk
    return received


def open_sse(port: int, prefix: str, headers: dict[str, str], poster: Http, call: bool = False) -> socket.socket:
    """An initialized HTTP+SSE session on a raw socket held open (the socket); with ``call``, one tool call too."""
    lines = [f"GET {prefix}sse HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    received = read_until(sock, b"session_id=")
    received = read_until(sock, b"\n", received[received.index(b"data: ") :])
    endpoint = received[len(b"data: ") : received.index(b"\n")].strip().decode()
    for message, answer_id in ((INITIALIZE, b'"id":1'), (INITIALIZED, None), *(((CALL, b'"id":2'),) if call else ())):
        status, _, _ = poster.request("POST", endpoint, json.dumps(message).encode())
        assert status == 202, status
        if answer_id is not None:
            read_until(sock, answer_id)
    return sock


def open_streamable(port: int, prefix: str, poster: Http, call: bool = False) -> str:
    """An initialized Streamable HTTP session, no stream held; its ID. With ``call``, one tool call too."""
    accept = {"Accept": "application/json, text/event-stream"}
    status, answer, body = poster.request("POST", prefix, json.dumps(INITIALIZE).encode(), accept)
    assert status == 200 and b'"id":1' in body, (status, body[:200])
    session = answer["mcp-session-id"]
    more = {**accept, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    status, _, _ = poster.request("POST", prefix, json.dumps(INITIALIZED).encode(), more)
    assert status == 202, status
    if call:
        status, _, body = poster.request("POST", prefix, json.dumps(CALL).encode(), more)
        assert status == 200 and b'"id":2' in body, (status, body[:200])
    return session


def probe(server: Launcher, prefix: str, headers: dict[str, str], transport: str) -> float:
    """Milliseconds for a new client's initialize, initialized and one tool call."""
    poster = Http(server.port, headers)
    start = time.perf_counter()
    try:
        if transport == "sse":
            open_sse(server.port, prefix, headers, poster, call=True).close()
        else:
            open_streamable(server.port, prefix, poster, call=True)
        return (time.perf_counter() - start) * 1000
    finally:
        poster.close()


def measure(
    server: Launcher,
    headers: dict[str, str],
    *,
    sessions: int = 1000,
    transport: str = "sse",
    prefix: str = "/mcp/",
    settle: float = 8.0,
    probes: int = 20,
    warmup: int = 5,
) -> dict[str, float]:
    """Memory per idle initialized session (KiB) and a new client's initialize + call (ms), on ``server``.

    ``warmup`` sessions are opened (and a few calls made) first, so that what the process does once is not
    counted per session.
    """
    held: list[socket.socket] = []
    poster = Http(server.port, headers)
    try:
        for _ in range(warmup):
            probe(server, prefix, headers, transport)
        time.sleep(1)
        before = server.rss_bytes()
        for _ in range(sessions):
            if transport == "sse":
                held.append(open_sse(server.port, prefix, headers, poster))
            else:
                open_streamable(server.port, prefix, poster)
        time.sleep(settle)
        kib = (server.rss_bytes() - before) / sessions / 1024
        samples = sorted(probe(server, prefix, headers, transport) for _ in range(probes))
        return {
            "idle_initialized_kib": kib,
            "new_client_p50_ms": statistics.median(samples),
            "new_client_max_ms": samples[-1],
        }
    finally:
        poster.close()
        for sock in held:
            sock.close()


def gateway(
    tmp: str, park_after: str | None, *, settings: str = "bench.settings", env: dict[str, str] | None = None
) -> tuple[Launcher, dict[str, str]]:
    """The demo gateway serving bench/servers.py on a throwaway SQLite database, and a bench user's headers."""
    env = {"DJANGO_SETTINGS_MODULE": settings, "BENCH_DB": str(Path(tmp) / "b.db"), **(env or {})}
    if park_after is not None:
        env["MCP_BENCH_PARK_AFTER"] = park_after
    run_env = {**os.environ, **env}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=run_env, check=True)
    script = "from django.contrib.auth import get_user_model;get_user_model().objects.create_user('bench')"
    subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=run_env, check=True)
    out = subprocess.check_output(
        [sys.executable, "manage.py", "demo_headers", "bench", "--json"], cwd=ROOT, env=run_env
    )
    server = Launcher("demo.asgi:application", env=env, args=("--access-log", "/dev/null"), log=False, name="gateway")
    return server, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--transport", choices=("sse", "streamable"), default="sse")
    parser.add_argument("--park-after", default=None, help="MCP_GATEWAY_PARK_AFTER for the server (seconds, 'off')")
    parser.add_argument("--settle", type=float, default=8.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.sessions * 2 + 256)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        server, headers = gateway(tmp, args.park_after)
        try:
            result = measure(server, headers, sessions=args.sessions, transport=args.transport, settle=args.settle)
        finally:
            server.stop()
    print(json.dumps({"transport": args.transport, "sessions": args.sessions, **result}, indent=2))


if __name__ == "__main__":
    main()
