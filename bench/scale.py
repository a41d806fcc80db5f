"""Benchmark at scale: opening many initialized sessions, then a new client's latency while they are all held.

One gateway worker (``python -m mcp_gateway.daphne``, the demo's application on ``bench.scale_settings``), on SQLite
or PostgreSQL. The load is raw HTTP on asyncio streams, as light as a client can be, so the server is what is
measured:

1. *Opening*: ``held`` HTTP+SSE sessions opened at ``rate`` per second offered (open loop: each starts on time
   whether or not the earlier ones finished), each the stream, ``initialize`` answered and ``initialized``; an open
   not done within ``timeout`` seconds counts as timed out. Reported: sessions/s achieved, timeouts, the server's
   CPU seconds per open (user + system from ``/proc``, which the machine's other load disturbs far less than the
   wall clock).
2. *Holding*: with all of them held and idle, a new client every ``interval`` seconds for ``seconds`` seconds opens
   its session, initializes and calls ``echo`` once, then leaves; its wall time from connecting to the answer.
   Reported: p50, p99, worst. ``seconds`` should cover a few keepalive passes (``PING_INTERVAL``, 15 s).

The server logs every garbage collection it runs (generation, pause, objects collected; ``gc.callbacks``) to a file
and, on ``SIGUSR1``, how many objects the collector tracks: the report gives the pauses during each phase and the
tracked objects per held session. Run it with

    .venv/bin/python -m bench.scale [--held 10000] [--rate 500] [--seconds 40] [--database sqlite|postgresql]

or call :func:`measure` (``bench/run.py`` may). Every loop is bounded in count and time; only 127.0.0.1 is spoken to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "scale", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}


# The server side: its garbage collections, logged (installed by bench.scale_settings).


def install_gc_probe(path: str) -> None:
    """Log each collection of this process to ``path`` (``gc <generation> <pause ms> <collected>``), and on
    ``SIGUSR1`` the objects the collector tracks (``objects <tracked> <frozen>``)."""
    log = open(path, "a", buffering=1)  # held for the life of the process
    started = [0.0, 0.0]  # wall clock, and this thread's CPU time: a shared machine preempts a pause

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = time.perf_counter(), time.thread_time()
        else:
            pause = (time.perf_counter() - started[0]) * 1000
            cpu = (time.thread_time() - started[1]) * 1000
            log.write(f"gc {info['generation']} {pause:.2f} {info['collected']} {time.time():.3f} {cpu:.2f}\n")

    statements: Counter[str] = Counter()  # SQL sent through Django, by its start (a health check is not)

    def counted(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements[sql[:70]] += 1
        return execute(sql, params, many, context)

    def instrument(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(counted)

    from django.db.backends.signals import connection_created

    connection_created.connect(instrument, weak=False)

    def census(signum: int, frame: Any) -> None:
        tracked = gc.get_objects()
        kinds = Counter(type(obj).__qualname__ for obj in tracked)
        log.write(f"statements {statements.total()} {time.time():.3f}\n")
        log.write(f"sql {json.dumps(dict(statements))}\n")
        log.write(f"objects {len(tracked)} {gc.get_freeze_count()} {time.time():.3f}\n")
        log.write(f"types {json.dumps(dict(kinds.most_common(300)))}\n")
        del tracked

    gc.callbacks.append(timed)
    signal.signal(signal.SIGUSR1, census)


@dataclass
class GcLog:
    """What the server's probe wrote, read back."""

    path: Path
    pauses: list[tuple[float, int, float, float]] = field(default_factory=list)  # (time, generation, ms, cpu ms)
    censuses: list[tuple[float, int, int]] = field(default_factory=list)  # (time, tracked, frozen)
    kinds: list[dict[str, int]] = field(default_factory=list)  # tracked objects by type, at each census
    statements: list[int] = field(default_factory=list)  # SQL statements sent so far, at each census
    sql: list[dict[str, int]] = field(default_factory=list)  # the same by statement, at each census

    def read(self) -> None:
        self.pauses, self.censuses, self.kinds, self.statements, self.sql = [], [], [], [], []
        for line in self.path.read_text().splitlines():
            parts = line.split(maxsplit=1 if line.startswith(("types", "sql")) else -1)
            if parts[0] == "gc":
                self.pauses.append((float(parts[4]), int(parts[1]), float(parts[2]), float(parts[5])))
            elif parts[0] == "types":
                self.kinds.append(json.loads(parts[1]))
            elif parts[0] == "sql":
                self.sql.append(json.loads(parts[1]))
            elif parts[0] == "statements":
                self.statements.append(int(parts[1]))
            elif parts[0] == "objects":
                self.censuses.append((float(parts[3]), int(parts[1]), int(parts[2])))

    def between(self, start: float, end: float) -> dict[str, float]:
        pauses = [(gen, ms, cpu) for at, gen, ms, cpu in self.pauses if start <= at <= end]
        full = [cpu for gen, _, cpu in pauses if gen == 2]
        return {
            "collections": len(pauses),
            "full_collections": len(full),
            "worst_pause_ms": round(max((ms for _, ms, _ in pauses), default=0.0), 1),
            "worst_pause_cpu_ms": round(max((cpu for _, _, cpu in pauses), default=0.0), 1),
            "worst_full_pause_cpu_ms": round(max(full, default=0.0), 1),
            "total_pause_cpu_ms": round(sum(cpu for _, _, cpu in pauses), 1),
        }

    def per_session(self, sessions: int, top: int = 15) -> dict[str, float]:
        """The types that grew most between the first and the last census, per session."""
        first, last = self.kinds[0], self.kinds[-1]
        grown = Counter({kind: last[kind] - first.get(kind, 0) for kind in last})
        return {kind: round(n / max(sessions, 1), 1) for kind, n in grown.most_common(top)}


# The client: raw HTTP/1.1 on asyncio streams.


class Connection:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer, f"127.0.0.1:{port}")

    def close(self) -> None:
        self.writer.close()

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", *(f"{k}: {v}" for k, v in headers.items())]
        if body or method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def head(self) -> tuple[int, dict[str, str]]:
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def body(self, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await self.reader.readexactly(int(headers["content-length"]))
        chunks = []
        while (chunk := await self.chunk()) != b"":
            chunks.append(chunk)
        return b"".join(chunks)

    async def chunk(self) -> bytes:
        """The next chunk of a chunked body (``b""`` at its end)."""
        size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def post(self, path: str, headers: dict[str, str], message: dict[str, Any]) -> int:
        self.send("POST", path, headers, json.dumps(message).encode())
        status, response_headers = await self.head()
        await self.body(response_headers)
        return status


class SseSession:
    """An HTTP+SSE session on two connections: its stream, and one for its POSTs."""

    def __init__(self, stream: Connection, posts: Connection, endpoint: str) -> None:
        self.stream, self.posts, self.endpoint = stream, posts, endpoint
        self._buffer = b""

    @classmethod
    async def open(cls, port: int, headers: dict[str, str]) -> SseSession:
        stream = await Connection.open(port)
        try:
            stream.send("GET", "/mcp/sse", {**headers, "Accept": "text/event-stream"})
            status, _ = await stream.head()
            if status != 200:
                raise RuntimeError(f"stream refused: {status}")
            session = cls(stream, await Connection.open(port), "")
            event, data = await session.event()
            if event != "endpoint":
                raise RuntimeError(f"first event {event!r}")
            session.endpoint = data
            return session
        except BaseException:
            stream.close()
            raise

    async def event(self) -> tuple[str, str]:
        """The next event of the stream (comments skipped)."""
        while True:
            while b"\n\n" not in self._buffer:
                self._buffer += await self.stream.chunk()
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            event, data = "message", []
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                if name == "event":
                    event = value.strip()
                elif name == "data":
                    data.append(value.removeprefix(" "))
            if data:
                return event, "\n".join(data)

    async def request(self, headers: dict[str, str], message: dict[str, Any]) -> dict[str, Any]:
        status = await self.posts.post(self.endpoint, headers, message)
        if status != 202:
            raise RuntimeError(f"POST answered {status}")
        while True:
            _, data = await self.event()
            answer: dict[str, Any] = json.loads(data)
            if answer.get("id") == message["id"]:
                if "result" not in answer:
                    raise RuntimeError(f"error answer: {answer}")
                return answer

    async def initialize(self, headers: dict[str, str]) -> None:
        await self.request(headers, INITIALIZE)
        status = await self.posts.post(self.endpoint, headers, INITIALIZED)
        if status != 202:
            raise RuntimeError(f"initialized answered {status}")

    def hold(self) -> None:
        """Keep the stream, free the POST connection: an idle client holds only its stream."""
        self.posts.close()

    def close(self) -> None:
        self.stream.close()
        self.posts.close()


# The measurement


@dataclass
class Opening:
    opened: int = 0
    timed_out: int = 0
    failed: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)


async def open_held(
    port: int, headers: dict[str, str], count: int, rate: float, within: float, held: list[SseSession]
) -> Opening:
    """Open ``count`` initialized sessions at ``rate`` per second offered, into ``held``; each within ``within`` s."""
    figures = Opening()

    async def one(n: int, start: float) -> None:
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        try:
            async with asyncio.timeout(within):
                session = await SseSession.open(port, headers)
                try:
                    await session.initialize(headers)
                except BaseException:
                    session.close()
                    raise
        except TimeoutError:
            figures.timed_out += 1
            return
        except Exception as exc:
            figures.failed += 1
            if len(figures.errors) < 5:
                figures.errors.append(repr(exc))
            return
        session.hold()
        held.append(session)
        figures.opened += 1

    start = time.monotonic()
    await asyncio.gather(*(one(n, start) for n in range(count)))
    figures.seconds = time.monotonic() - start
    return figures


async def new_clients(port: int, headers: dict[str, str], seconds: float, interval: float) -> list[float]:
    """A new client every ``interval`` s for ``seconds`` s: its initialize + call, in ms (sequential clients)."""
    samples: list[float] = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        began = time.perf_counter()
        with contextlib.suppress(TimeoutError):  # counted as what it took, the bound
            async with asyncio.timeout(30):
                session = await SseSession.open(port, headers)
                try:
                    await session.initialize(headers)
                    answer = await session.request(headers, CALL)
                    assert answer["result"]["structuredContent"] == {"result": "hi"}, answer
                finally:
                    session.close()
        samples.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - began)))
    return samples


async def settled(server: Any, within: float = 120.0) -> None:
    """Wait until ``server`` is quiet (under a tenth of a core over a second): what the opens left it is done."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        cpu = server.cpu_seconds()
        await asyncio.sleep(1)
        if server.cpu_seconds() - cpu < 0.1:
            return


def profiler(pid: int, path: str) -> subprocess.Popen[bytes]:
    """py-spy recording process ``pid``'s collapsed stacks into ``path`` until it is sent SIGINT."""
    argv = ["py-spy", "record", "-p", str(pid), "-f", "raw", "-o", path, "-r", "200"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def prepare(env: dict[str, str]) -> dict[str, str]:
    """Migrate the benchmark's database and make its user; the headers that authenticate as them."""
    run_env = {**os.environ, **env}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=run_env, check=True)
    script = "from django.contrib.auth import get_user_model;get_user_model().objects.create_user('bench')"
    subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=run_env, check=True)
    command = [sys.executable, "manage.py", "demo_headers", "bench", "--json"]
    out = subprocess.check_output(command, cwd=ROOT, env=run_env)
    headers: dict[str, str] = json.loads(out)
    return headers


@contextlib.contextmanager
def database(kind: str, tmp: str) -> Any:
    """The environment naming a fresh database of ``kind`` (dropped afterwards for PostgreSQL)."""
    if kind == "sqlite":
        yield {"BENCH_DB": str(Path(tmp) / "scale.sqlite3")}
        return
    name = f"mcp_bench_scale_{os.getpid()}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    try:
        yield {"DATABASE_ENGINE": "postgresql", "POSTGRES_DB": name, "BENCH_DB": name}
    finally:
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False, capture_output=True)


async def measure(
    *,
    held: int = 10_000,
    rate: float = 500.0,
    open_within: float = 60.0,
    seconds: float = 40.0,
    interval: float = 0.1,
    kind: str = "sqlite",
    server_args: tuple[str, ...] = (),
    profile: str | None = None,
    tune_gc: bool = False,
) -> dict[str, Any]:
    """Open ``held`` sessions at ``rate``/s offered, then time new clients for ``seconds``; the figures, as a dict."""
    from tests.support.launcher import Launcher

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, held * 3 + 256)), hard))
    with tempfile.TemporaryDirectory() as tmp, database(kind, tmp) as db_env:
        env = {"DJANGO_SETTINGS_MODULE": "bench.scale_settings", **db_env}
        headers = prepare(env)
        log = GcLog(Path(tmp) / "gc.log")
        log.path.touch()
        server = Launcher(
            "demo.asgi:application",
            env={**env, "BENCH_GC_LOG": str(log.path), **({"BENCH_GC_TUNE": "1"} if tune_gc else {})},
            args=("-v", "0", "--access-log", "/dev/null", *server_args),
            name="gateway",
        )
        print(f"server log: {server.log_file.name if server.log_file else ''}", file=sys.stderr)
        sessions: list[SseSession] = []
        try:
            for _ in range(3):  # warm: imports, the database connection, the first session's work
                warm = await SseSession.open(server.port, headers)
                await warm.initialize(headers)
                warm.close()
            os.kill(server.proc.pid, signal.SIGUSR1)
            await asyncio.sleep(0.5)
            spy = profiler(server.proc.pid, profile) if profile else None
            if spy is not None:
                await asyncio.sleep(1)
            cpu, began = server.cpu_seconds(), time.time()
            opening = await open_held(server.port, headers, held, rate, open_within, sessions)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            opening.server_cpu_s = server.cpu_seconds() - cpu
            opened_at = time.time()
            await settled(server)
            os.kill(server.proc.pid, signal.SIGUSR1)
            await asyncio.sleep(1)
            cpu = server.cpu_seconds()
            samples = await new_clients(server.port, headers, seconds, interval)
            probe_cpu = server.cpu_seconds() - cpu
            ended_at = time.time()
            log.read()
            rss = server.rss_bytes()
        finally:
            for session in sessions:
                session.close()
            server.stop()
    (_, before, _), (_, after, _) = log.censuses[0], log.censuses[-1]
    return {
        "database": kind,
        "gc_tuned": tune_gc,
        "held": len(sessions),
        "open": {
            "offered_per_s": rate,
            "opened": opening.opened,
            "timed_out": opening.timed_out,
            "failed": opening.failed,
            "errors": opening.errors,
            "seconds": round(opening.seconds, 1),
            "per_s": round(opening.opened / opening.seconds, 1),
            "server_cpu_ms_per_open": round(opening.server_cpu_s / max(opening.opened, 1) * 1000, 2),
            # Between the census before the opens and the one once the server settled: with the sweep's writes.
            "sql_statements_per_open": round((log.statements[1] - log.statements[0]) / max(opening.opened, 1), 1),
            "sql_per_open": {
                sql: round((n - log.sql[0].get(sql, 0)) / max(opening.opened, 1), 2)
                for sql, n in sorted(log.sql[1].items(), key=lambda item: -item[1])
                if n > log.sql[0].get(sql, 0)
            },
            "gc": log.between(began, opened_at),
        },
        "new_client": {
            "clients": len(samples),
            "p50_ms": round(statistics.median(samples), 1),
            "p99_ms": round(percentile(samples, 0.99), 1),
            "worst_ms": round(max(samples), 1),
            "server_cpu_ms_per_client": round(probe_cpu / max(len(samples), 1) * 1000, 2),
            "gc": log.between(opened_at, ended_at),
        },
        "gc_tracked": {"before": before, "after": after, "frozen": log.censuses[-1][2]},
        "gc_tracked_per_session": round((after - before) / max(len(sessions), 1), 1),
        "gc_tracked_per_session_by_type": log.per_session(len(sessions)),
        "rss_kib_per_session": round(rss / 1024 / max(len(sessions), 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--held", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0, help="opens per second offered")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds an open may take")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long new clients are timed")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between new clients")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--tune-gc", action="store_true", help="the collector thresholds of mcp_gateway.collector")
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the opening phase to this file")
    args = parser.parse_args()
    figures = asyncio.run(
        measure(
            held=args.held,
            rate=args.rate,
            open_within=args.timeout,
            seconds=args.seconds,
            interval=args.interval,
            kind=args.database,
            profile=args.profile,
            tune_gc=args.tune_gc,
        )
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
