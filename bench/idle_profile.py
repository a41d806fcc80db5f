"""Where the memory of an idle initialized session goes: a tracemalloc diff between N and 2N held sessions.

    .venv/bin/python -m bench.idle_profile [--sessions 500] [--transport sse|streamable]

The server runs ``bench.idle_settings`` with tracemalloc on (:func:`install_probe`); N sessions are opened and
left to park, a snapshot taken, N more, another snapshot; the difference per session is printed grouped by
source line and by file, with the count of collector-tracked objects per session by type. Only 127.0.0.1 is
spoken to; every loop is bounded.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import resource
import signal
import socket
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any


def install_probe(prefix: str) -> None:
    """In the server: tracemalloc from now on, and a snapshot per SIGUSR1 (see bench/idle_settings.py)."""
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    taken = [0]

    def snapshot(signum: int, frame: Any) -> None:
        taken[0] += 1
        gc.collect()
        tracemalloc.take_snapshot().dump(f"{prefix}.{taken[0]}.snap")
        counts = collections.Counter(type(o).__qualname__ + " " + type(o).__module__ for o in gc.get_objects())
        Path(f"{prefix}.{taken[0]}.types").write_text(json.dumps(counts))

    signal.signal(signal.SIGUSR1, snapshot)


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)


def main() -> None:
    from bench.idle import Http, gateway, open_sse, open_streamable, probe

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--transport", choices=("sse", "streamable"), default="sse")
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.sessions * 4 + 256)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "probe")
        extra = {"BENCH_TRACEMALLOC": prefix, "BENCH_TRACEMALLOC_FRAMES": str(args.frames)}
        server, headers = gateway(tmp, "2", settings="bench.idle_settings", env=extra)
        held: list[socket.socket] = []
        poster = Http(server.port, headers)
        rss = []
        try:
            for _ in range(5):
                probe(server, "/mcp/", headers, args.transport)
            for round_ in (1, 2):
                for _ in range(args.sessions):
                    if args.transport == "sse":
                        held.append(open_sse(server.port, "/mcp/", headers, poster))
                    else:
                        open_streamable(server.port, "/mcp/", poster)
                time.sleep(args.settle)
                rss.append(server.rss_bytes())
                os.kill(server.proc.pid, signal.SIGUSR1)
                _wait_for(Path(f"{prefix}.{round_}.types"))
            first = tracemalloc.Snapshot.load(f"{prefix}.1.snap")
            second = tracemalloc.Snapshot.load(f"{prefix}.2.snap")
            n = args.sessions
            for key in ("filename", "lineno" if args.frames == 1 else "traceback"):
                stats = second.compare_to(first, key)
                total = sum(s.size_diff for s in stats)
                print(f"\n== by {key}: {total / n:.0f} B per session traced (RSS {(rss[1] - rss[0]) / n:.0f} B)")
                for stat in stats[: args.top]:
                    where = stat.traceback.format()[-1 if key != "traceback" else 0 :]
                    print(f"{stat.size_diff / n:8.0f} B {stat.count_diff / n:6.2f} blocks  {' | '.join(where)}")
            types_1 = json.loads(Path(f"{prefix}.1.types").read_text())
            types_2 = json.loads(Path(f"{prefix}.2.types").read_text())
            diff = {k: (types_2.get(k, 0) - types_1.get(k, 0)) / n for k in types_1.keys() | types_2.keys()}
            print(f"\n== tracked objects per session: {sum(diff.values()):.1f}")
            for name, count in sorted(diff.items(), key=lambda kv: -kv[1])[: args.top]:
                if abs(count) >= 0.05:
                    print(f"{count:7.2f}  {name}")
        finally:
            poster.close()
            for sock in held:
                sock.close()
            server.stop()


if __name__ == "__main__":
    main()
