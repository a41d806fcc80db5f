"""A small loopback reverse proxy: round-robin over several backends, streaming, stdlib only.

It stands for the load balancer in front of several daphne workers, with no sticky sessions: every request
(not every connection) goes to the next backend in turn, over a new upstream connection. Responses are relayed
as they arrive (SSE streams are not buffered), and a client that goes away closes its upstream connection at
once, so the backend sees the disconnect. ``Host`` and ``Origin`` pass untouched; ``add_headers`` adds fixed
headers to every request (e.g. credentials for a client that cannot send any).

Bounded: at most ``max_connections`` client connections (more are answered 503 and closed), a time limit on
reading a request head and body, on connecting upstream and on waiting for the response head, and an idle
limit on kept-alive client connections. Loopback only.

Use it in a test as a context manager (it runs in a thread with its own event loop)::

    with LoopbackProxy([a.url, b.url]) as proxy:
        ... proxy.url ...

or as a separate process, so it does not share the caller's interpreter (``ProxyProcess``, or
``python -m tests.support.proxy --backend URL --backend URL [--port N]``, which prints ``listening on URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}


class BadRequest(Exception):
    pass


class ClientReader:
    """A StreamReader with a pushback buffer, so bytes read while watching for EOF are not lost."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = bytearray()

    async def read_some(self) -> bytes:
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        return await self.reader.read(65536)

    def unread(self, data: bytes) -> None:
        self.buffer[:0] = data

    async def read_until(self, marker: bytes, limit: int) -> bytes:
        while marker not in self.buffer:
            if len(self.buffer) > limit:
                raise BadRequest("head too large")
            chunk = await self.reader.read(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        end = self.buffer.index(marker) + len(marker)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = await self.reader.read(max(65536, n - len(self.buffer)))
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


def parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header")
        headers.append((name, value.strip()))
    return lines[0], headers


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def relay_body(
    source: ClientReader, write: asyncio.StreamWriter, headers: list[tuple[bytes, bytes]], *, until_eof: bool
) -> bool:
    """Copy one message body framed by ``headers``; returns False if it was delimited by connection close."""
    if (header(headers, b"transfer-encoding") or b"").lower().endswith(b"chunked"):
        while True:
            size_line = await source.read_until(b"\r\n", 4096)
            write.write(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = await source.read_until(b"\r\n", MAX_HEAD)
                    write.write(line)
                    if line == b"\r\n":
                        await write.drain()
                        return True
            write.write(await source.read_exactly(size + 2))
            await write.drain()
    length = header(headers, b"content-length")
    if length is not None:
        remaining = int(length)
        while remaining:
            chunk = await source.read_some()
            if not chunk:
                raise EOFError
            if len(chunk) > remaining:
                source.unread(chunk[remaining:])
                chunk = chunk[:remaining]
            write.write(chunk)
            remaining -= len(chunk)
            await write.drain()
        return True
    if not until_eof:
        return True  # a request without a body
    while chunk := await source.read_some():
        write.write(chunk)
        await write.drain()
    return False


class ProxyServer:
    """The proxy itself, on the running event loop."""

    def __init__(
        self,
        backends: Iterable[str],
        *,
        add_headers: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 4096,
        head_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        response_timeout: float = 30.0,
        idle_timeout: float = 75.0,
    ) -> None:
        self.backends = [urlsplit(url) for url in backends]
        loopback = ("127.0.0.1", "localhost")
        if not self.backends or any(b.scheme != "http" or b.hostname not in loopback for b in self.backends):
            raise ValueError("backends must be http://127.0.0.1:PORT URLs")
        self._next = itertools.cycle(range(len(self.backends)))
        self.add_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (add_headers or {}).items()]
        self._added = {k.lower() for k, _ in self.add_headers}
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.head_timeout, self.connect_timeout = head_timeout, connect_timeout
        self.response_timeout, self.idle_timeout = response_timeout, idle_timeout
        self.connections = 0
        self.stats = {"requests": 0, "refused": 0, "upstream_errors": 0, "client_disconnects": 0}
        self.per_backend = [0] * len(self.backends)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            if self.connections > self.max_connections:
                self.stats["refused"] += 1
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            await self._serve(ClientReader(reader), writer)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, BadRequest, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is closing; ending normally keeps asyncio from logging the cancelled handler
        finally:
            self.connections -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, client: ClientReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            try:
                async with asyncio.timeout(self.head_timeout if first else self.idle_timeout):
                    head = await client.read_until(b"\r\n\r\n", MAX_HEAD)
            except EOFError:
                return
            first = False
            request_line, headers = parse_head(head)
            method = request_line.split(b" ", 1)[0]
            if method not in (b"GET", b"POST", b"DELETE", b"HEAD", b"PUT", b"OPTIONS", b"PATCH"):
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            keep_alive = (header(headers, b"connection") or b"").lower() != b"close"
            if not await self._forward(method, request_line, headers, client, writer) or not keep_alive:
                return

    async def _forward(
        self,
        method: bytes,
        request_line: bytes,
        headers: list[tuple[bytes, bytes]],
        client: ClientReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Forward one request; returns whether the client connection may carry another."""
        index = next(self._next)
        backend = self.backends[index]
        self.stats["requests"] += 1
        self.per_backend[index] += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(backend.hostname, backend.port)
        except (OSError, TimeoutError):
            self.stats["upstream_errors"] += 1
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return False
        upstream = ClientReader(up_reader)
        try:
            out = [request_line]
            # An added header replaces the client's own of that name (e.g. a credential the client lacks or fakes).
            out += [k + b": " + v for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() not in self._added]
            out += [k + b": " + v for k, v in self.add_headers]
            out.append(b"Connection: close")
            up_writer.write(b"\r\n".join(out) + b"\r\n\r\n")
            async with asyncio.timeout(self.head_timeout):
                await relay_body(client, up_writer, headers, until_eof=False)
            async with asyncio.timeout(self.response_timeout):
                head = await upstream.read_until(b"\r\n\r\n", MAX_HEAD)
            status_line, response_headers = parse_head(head)
            status = int(status_line.split(b" ")[1])
            bodyless = method == b"HEAD" or status in (204, 304) or status < 200
            framed = bodyless or any(
                header(response_headers, name) is not None for name in (b"content-length", b"transfer-encoding")
            )
            out = [status_line] + [k + b": " + v for k, v in response_headers if k.lower() not in HOP_BY_HOP]
            out.append(b"Connection: keep-alive" if framed else b"Connection: close")
            writer.write(b"\r\n".join(out) + b"\r\n\r\n")
            await writer.drain()
            if bodyless:
                return True
            # Relay the body while watching the client: if it goes away, drop the upstream connection.
            relay = asyncio.ensure_future(relay_body(upstream, writer, response_headers, until_eof=True))
            watch = asyncio.ensure_future(client.read_some())
            try:
                done, _ = await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
                if relay in done:
                    if watch.done() and not watch.exception():
                        if not watch.result():
                            return False
                        client.unread(watch.result())
                    return relay.result()
                data = watch.result()
                if not data:
                    self.stats["client_disconnects"] += 1
                    return False
                client.unread(data)  # a pipelined request: served after this response
                return await relay
            finally:
                for task in (relay, watch):
                    task.cancel()
                await asyncio.gather(relay, watch, return_exceptions=True)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


class LoopbackProxy:
    """:class:`ProxyServer` in a background thread; a context manager."""

    def __init__(self, backends: Iterable[str], **options: object) -> None:
        self.backends = list(backends)
        self.options = options
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def stats(self) -> dict[str, int]:
        assert self.server is not None
        return {**self.server.stats, "connections": self.server.connections}

    def start(self) -> LoopbackProxy:
        self._thread = threading.Thread(target=self._run, name="loopback-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.server = ProxyServer(self.backends, **self.options)  # type: ignore[arg-type]
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.server.close())
            self.loop.close()

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self) -> LoopbackProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProxyProcess:
    """The proxy as a subprocess (``python -m tests.support.proxy``), so it has a core of its own; a context manager."""

    def __init__(self, backends: Iterable[str], add_headers: Mapping[str, str] | None = None) -> None:
        self.backends = list(backends)
        self.add_headers = dict(add_headers or {})
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> ProxyProcess:
        command = [sys.executable, "-m", "tests.support.proxy"]
        for backend in self.backends:
            command += ["--backend", backend]
        for name, value in self.add_headers.items():
            command += ["--header", f"{name}: {value}"]
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 15
        line = ""
        while time.monotonic() < deadline and not line:
            line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"proxy did not start: {line!r}")
        self.url = line.split()[-1]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", required=True, help="http://127.0.0.1:PORT (repeat)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--header", action="append", default=[], help="'Name: value' added to every request")
    parser.add_argument("--max-connections", type=int, default=4096)
    args = parser.parse_args()
    add_headers = dict(h.split(":", 1) for h in args.header)
    add_headers = {k.strip(): v.strip() for k, v in add_headers.items()}
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.max_connections * 2 + 256)), hard))
    except (ImportError, ValueError, OSError):
        pass

    async def serve() -> None:
        proxy = ProxyServer(args.backend, add_headers=add_headers, port=args.port, max_connections=args.max_connections)
        await proxy.start()
        print(f"listening on {proxy.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print(f"stats {proxy.stats} per_backend {proxy.per_backend}", file=sys.stderr, flush=True)
        await proxy.close()

    asyncio.run(serve())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
