"""Benchmark: the gateway against the MCP SDK's own apps and against the floor, every figure a ratio, in one run.

Every server runs under the gateway's launcher (``python -m mcp_gateway.daphne -v 0 --access-log /dev/null``) on
a loopback port, serving the same async ``echo`` tool (bench/sides.py names them): the gateway (authentication,
binding, guards and limits on, a bearer token per request), the SDK's ``sse_app()`` and ``streamable_http_app()``
(no authentication), and the floor (bench/floor.py, a bare ASGI app speaking just enough MCP). The load generator
is a light raw-HTTP client (bench/wire.py) that validates every answer, so the server is what is measured; the
SDK's own ``Client`` is kept as a second, "realistic" profile. Sections (``--sections``, all by default):

- ``calls``: per transport (HTTP+SSE, Streamable HTTP 2025-11-25, 2026-07-28 per request), ``--sessions``
  sessions calling for ``--seconds``: calls/s, p50, p99, server CPU per call; gateway vs SDK, gateway vs floor;
- ``sdk-client``: the same through the SDK's ``Client`` over HTTP+SSE, gateway vs ``sse_app()``;
- ``redis``: the gateway on ``RedisChannelLayer`` (its cache too) vs on the in-memory layer, one worker each
  (skipped, saying so, when Redis is not reachable at ``--redis``);
- ``scale``, in a fresh process of each server, gateway vs SDK vs floor: for each count of ``--held`` (1,000;
  10,000 in the full run), that many HTTP+SSE sessions opened 32 at a time, each initialized then idle: memory per
  idle initialized session, and a new client's initialize + call latency (median, p99, worst) while they are
  held; then for each count of ``--opens``, that many opened at ``--open-rate`` per second offered: opens/s, and
  opens that timed out waiting for headers.

Rounds alternate between the servers (their order reversed every other round) and each figure is the median of
the rounds, so a slow spell of a shared machine hits all alike. Quick run (2 rounds of 2 s, Redis on HTTP+SSE
only, 1,000 sessions held: 3 minutes on 2 quiet cores, 8 on busy ones)::

    .venv/bin/python -m bench.run

Full run (about 20 minutes; 10,000 sessions need ``ulimit -n`` of at least 20,512, raised here up to the hard
limit)::

    .venv/bin/python -m bench.run --rounds 3 --seconds 10 --redis-transports sse,streamable,modern \\
        --held 1000,10000 --opens 10000

It prints a Markdown table (figure, gateway, reference, ratio, target, met?) under a description of the machine,
and writes the same as JSON (``--json``, else ``bench/results/run-<time>.json``). Loopback only; every loop is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import measure
from .measure import medians
from .report import Row, machine, machine_text, table
from .sides import ROOT, SDK_FOR, Server, Side, redis_up, sides
from .wire import Target

__all__ = ["ROOT", "Server", "main", "medians"]

SECTIONS = ("calls", "sdk-client", "redis", "scale")
TRANSPORT_NAMES = {"sse": "HTTP+SSE", "streamable": "Streamable HTTP", "modern": "2026-07-28 per request"}
Figures = dict[str, float]


@contextmanager
def running(chosen: list[Side]) -> Iterator[dict[str, Server]]:
    """The chosen sides' servers, started side by side and stopped at the end."""
    servers: dict[str, Server] = {}
    try:
        for side in chosen:
            servers[side.name] = side.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def alternating(rounds: int, names: list[str], measure_one: Callable[[str], Figures]) -> dict[str, list[Figures]]:
    """``measure_one`` for each name, ``rounds`` times, the order reversed every other round."""
    results: dict[str, list[Figures]] = {name: [] for name in names}
    for n in range(rounds):
        for name in names if n % 2 == 0 else reversed(names):
            results[name].append(measure_one(name))
    return results


def call_rows(
    label: str, ours: Figures, ref: Figures, ref_name: str, *, floor: bool = False, judged: bool = True
) -> list[Row]:
    """calls/s, p50, p99 and CPU per call as rows; against the floor only calls/s is held to a target (0.7x).

    Not ``judged``: shown without targets (the SDK Client profile, where the client's own cost is in the figures).
    """
    if floor:
        return [
            Row(f"{label}: calls/s vs floor", ours["calls_per_s"], ref["calls_per_s"], ref_name, ("ratio>=", 0.7)),
            Row(f"{label}: server CPU µs/call vs floor", ours["cpu_us_per_call"], ref["cpu_us_per_call"], ref_name),
        ]
    at_least, at_most = (("ratio>=", 1.0), ("ratio<=", 1.0)) if judged else (None, None)
    return [
        Row(f"{label}: calls/s", ours["calls_per_s"], ref["calls_per_s"], ref_name, at_least),
        Row(f"{label}: p50 ms", ours["p50_ms"], ref["p50_ms"], ref_name, at_most),
        Row(f"{label}: p99 ms", ours["p99_ms"], ref["p99_ms"], ref_name, at_most),
        *(
            [Row(f"{label}: server CPU µs/call", ours["cpu_us_per_call"], ref["cpu_us_per_call"], ref_name)]
            if "cpu_us_per_call" in ours
            else []
        ),
    ]


def calls_section(all_sides: dict[str, Side], args: argparse.Namespace, record: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    names = ["gateway", "sdk-sse", "sdk-http", "floor"]
    with running([all_sides[n] for n in names]) as servers:
        for transport in args.transports:
            compared = ["gateway", SDK_FOR[transport], "floor"]

            def one(name: str, transport: str = transport) -> Figures:
                server = servers[name]
                target = all_sides[name].target(server)
                return asyncio.run(measure.calls(target, transport, args.sessions, args.seconds, server.cpu_seconds))

            rounds = alternating(args.rounds, compared, one)
            record.setdefault("calls", {})[transport] = rounds
            figures = {name: medians(r) for name, r in rounds.items()}
            label = TRANSPORT_NAMES[transport]
            sdk = SDK_FOR[transport]
            rows += call_rows(label, figures["gateway"], figures[sdk], sdk)
            rows += call_rows(label, figures["gateway"], figures["floor"], "floor", floor=True)
    return rows


def sdk_client_section(all_sides: dict[str, Side], args: argparse.Namespace, record: dict[str, Any]) -> list[Row]:
    with running([all_sides["gateway"], all_sides["sdk-sse"]]) as servers:

        def one(name: str) -> Figures:
            side, server = all_sides[name], servers[name]
            url = f"{server.url}{side.sse_path}"
            return asyncio.run(measure.sdk_calls(url, side.headers or {}, args.sdk_sessions, args.seconds))

        rounds = alternating(args.rounds, ["gateway", "sdk-sse"], one)
    record["sdk_client"] = rounds
    ours, ref = medians(rounds["gateway"]), medians(rounds["sdk-sse"])
    return call_rows("SDK Client, HTTP+SSE", ours, ref, "sdk-sse", judged=False)


def redis_section(all_sides: dict[str, Side], args: argparse.Namespace, record: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    with running([all_sides["gateway-redis"], all_sides["gateway"]]) as servers:
        for transport in args.redis_transports:

            def one(name: str, transport: str = transport) -> Figures:
                server = servers[name]
                target = all_sides[name].target(server)
                return asyncio.run(measure.calls(target, transport, args.sessions, args.seconds, server.cpu_seconds))

            rounds = alternating(args.rounds, ["gateway-redis", "gateway"], one)
            record.setdefault("redis", {})[transport] = rounds
            ours, ref = medians(rounds["gateway-redis"]), medians(rounds["gateway"])
            label = f"Redis 1 worker vs in-memory, {TRANSPORT_NAMES[transport]}"
            rows += [
                Row(f"{label}: calls/s", ours["calls_per_s"], ref["calls_per_s"], "in-memory", ("ratio>=", 0.8)),
                Row(f"{label}: p50 ms", ours["p50_ms"], ref["p50_ms"], "in-memory", ("ratio<=", 1.3)),
                Row(f"{label}: server CPU µs/call", ours["cpu_us_per_call"], ref["cpu_us_per_call"], "in-memory"),
            ]
    return rows


def fresh(side: Side, work: Callable[[Server, Target], Coroutine[Any, Any, Figures]]) -> Figures:
    """``work(server, target)`` run to its end in a fresh process of ``side``: nothing measured before reused."""
    with running([side]) as servers:
        server = servers[side.name]
        return asyncio.run(work(server, side.target(server)))


def scale_section(all_sides: dict[str, Side], args: argparse.Namespace, record: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    names = ("gateway", "sdk-sse", "floor")
    for count in args.held:

        async def hold(server: Server, target: Target, count: int = count) -> Figures:
            return await measure.held(target, count, server.rss, probes=args.probes)

        figures = {name: fresh(all_sides[name], hold) for name in names}
        record.setdefault("held", {})[str(count)] = figures
        ours, sdk, floor = figures["gateway"], figures["sdk-sse"], figures["floor"]
        held = f"{count:,} initialized sessions held"
        rows += [
            Row(f"KiB per idle initialized session, {held}", ours["idle_kib"], sdk["idle_kib"], "sdk-sse",
                ("value<=", 16)),
            Row(f"KiB per idle initialized session, {held}", ours["idle_kib"], floor["idle_kib"], "floor"),
            Row(f"new client initialize + call, median ms, {held}", ours["probe_p50_ms"], floor["probe_p50_ms"],
                "floor"),
            Row(f"new client initialize + call, p99 ms, {held}", ours["probe_p99_ms"], floor["probe_p99_ms"],
                "floor", ("value<", 50)),
            Row(f"new client initialize + call, worst ms, {held}", ours["probe_worst_ms"], floor["probe_worst_ms"],
                "floor"),
        ]  # fmt: skip
    for count in args.opens:

        async def open_all(server: Server, target: Target, count: int = count) -> Figures:
            return await measure.open_rate(target, count, args.open_rate, header_timeout=args.header_timeout)

        figures = {name: fresh(all_sides[name], open_all) for name in names}
        record.setdefault("opens", {})[str(count)] = figures
        ours, sdk, floor = figures["gateway"], figures["sdk-sse"], figures["floor"]
        offered = f"{count:,} opened at {args.open_rate:g}/s offered"
        rows += [
            Row(f"opens/s, {offered}", ours["opens_per_s"], sdk["opens_per_s"], "sdk-sse", ("ratio>=", 1.0)),
            Row(f"opens/s, {offered}", ours["opens_per_s"], floor["opens_per_s"], "floor"),
            Row(f"opens timed out waiting for headers, {offered}", ours["open_timeouts"], sdk["open_timeouts"],
                "sdk-sse", ("value<=", 0)),
        ]  # fmt: skip
    return rows


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])

    def names(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    parser.add_argument("--sections", type=names, default=list(SECTIONS), help=f"some of {','.join(SECTIONS)}")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; figures are their medians")
    parser.add_argument("--seconds", type=float, default=2.0, help="calling time per server per round")
    parser.add_argument("--sessions", type=int, default=32, help="concurrent sessions calling (raw client)")
    parser.add_argument("--sdk-sessions", type=int, default=8, help="concurrent sessions through the SDK Client")
    parser.add_argument("--transports", type=names, default=["sse", "streamable", "modern"], help="for calls")
    parser.add_argument("--redis-transports", type=names, default=["sse"], help="for the redis section")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis for the redis section")
    parser.add_argument(
        "--held", type=lambda t: [int(n) for n in names(t)], default=[1000], help="idle sessions, e.g. 1000,10000"
    )
    parser.add_argument(
        "--opens", type=lambda t: [int(n) for n in names(t)], default=[1000], help="sessions opened at --open-rate"
    )
    parser.add_argument("--open-rate", type=float, default=500.0, help="opens per second offered")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="an open waiting longer timed out")
    parser.add_argument("--probes", type=int, default=50, help="new clients measured while sessions are held")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON record")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    return args


def main() -> None:
    args = arguments()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, max([*args.held, *args.opens]) * 2 + 512)), hard))
    description = machine()
    record: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": description}
    notes: list[str] = []
    rows: list[Row] = []
    redis = args.redis if "redis" in args.sections and redis_up(args.redis) else None
    if "redis" in args.sections and redis is None:
        notes.append(f"Redis section skipped: no Redis at {args.redis}")
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        all_sides = sides(str(Path(tmp) / "bench.sqlite3"), redis)
        for section, run in (
            ("calls", calls_section),
            ("sdk-client", sdk_client_section),
            ("redis", redis_section),
            ("scale", scale_section),
        ):
            if section in args.sections and (section != "redis" or redis is not None):
                rows += run(all_sides, args, record)
    record["rows"] = [row.as_dict() for row in rows]
    record["notes"] = notes
    record["seconds"] = time.time() - started
    print(f"Machine: {machine_text(description)}")
    print(
        f"Medians of {args.rounds} alternating rounds, {args.sessions} sessions (raw client) calling for "
        f"{args.seconds:g} s; every server under python -m mcp_gateway.daphne -v 0 --access-log /dev/null; "
        f"{record['seconds']:.0f} s in all"
    )
    for note in notes:
        print(note)
    print()
    print(table(rows))
    out = args.json or ROOT / "bench" / "results" / f"run-{int(started)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
