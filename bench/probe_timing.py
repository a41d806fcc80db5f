"""Can a probe tell another user's session from an unknown one by how fast the 404 comes back?

Both answer 404 with the same body; this measures whether they also take the
same time. One gateway worker (``python -m mcp_gateway.daphne``, logging as
the demo configures it, so the security log has a handler) on a throwaway
SQLite database; a second user holds an open HTTP+SSE session. The prober,
logged in, POSTs to ``messages/`` naming either that session (foreign) or a
fresh random ID (unknown), in pairs whose order is drawn at random, over one
keep-alive connection, and times each answer from the client. It prints the
median of each, their difference, and the p-value of a permutation test on
the difference of medians (two-sided: how often relabelling the pooled
samples at random gives a difference at least as large); and, since the two
requests of a pair go back to back, the median paired difference with a
sign-flip permutation test, which a shared machine's drifting load disturbs
less.

    .venv/bin/python -m bench.probe_timing [--requests 300] [--warmup 50] [--permutations 10000] [--seed 1]

It only talks to 127.0.0.1, and every loop is bounded in count. Not part of
the test suite: timings on a shared machine make poor assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

from bench.run import ROOT, Server
from mcp_sessions.ids import new_session_id

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def login_headers(env: dict[str, str], *usernames: str) -> list[dict[str, str]]:
    """Create the database and ``usernames``; the login headers of each."""
    run = {"cwd": ROOT, "env": env, "check": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], **run)  # type: ignore[call-overload]
    create = "from django.contrib.auth import get_user_model as m;" + ";".join(
        f"m().objects.create_user({name!r}, password='x')" for name in usernames
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", create], **run)  # type: ignore[call-overload]
    return [
        json.loads(
            subprocess.check_output([sys.executable, "manage.py", "demo_headers", name, "--json"], cwd=ROOT, env=env)
        )
        for name in usernames
    ]


async def probe(
    url: str, prober: dict[str, str], owner: dict[str, str], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Microseconds per answer, for each kind of ID, measured in randomly ordered pairs."""
    rng = random.Random(args.seed)
    samples: dict[str, list[float]] = {"unknown": [], "foreign": []}
    async with httpx2.AsyncClient(timeout=10) as http, http.stream("GET", f"{url}/mcp/sse", headers=owner) as stream:
        assert stream.status_code == 200, stream.status_code
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                foreign_id = line.removeprefix("data: ").split("session_id=", 1)[1]
                break
        body = None
        for n in range(args.warmup + args.requests):
            order = ["unknown", "foreign"]
            rng.shuffle(order)
            for kind in order:
                session_id = foreign_id if kind == "foreign" else new_session_id()
                start = time.perf_counter_ns()
                response = await http.post(f"{url}/mcp/messages/?session_id={session_id}", json=PING, headers=prober)
                elapsed = (time.perf_counter_ns() - start) / 1000
                assert response.status_code == 404, (kind, response.status_code, response.text)
                assert body is None or response.content == body, "the two answers differ"
                body = response.content
                if n >= args.warmup:
                    samples[kind].append(elapsed)
    return samples


def permutation_p(a: list[float], b: list[float], permutations: int, seed: int) -> float:
    """Two-sided p-value of the difference of medians under random relabelling of the pooled samples."""
    rng = random.Random(seed)
    observed = abs(statistics.median(a) - statistics.median(b))
    pooled = a + b
    extreme = 0
    for _ in range(permutations):
        rng.shuffle(pooled)
        if abs(statistics.median(pooled[: len(a)]) - statistics.median(pooled[len(a) :])) >= observed:
            extreme += 1
    return (extreme + 1) / (permutations + 1)


def paired_p(differences: list[float], permutations: int, seed: int) -> float:
    """Two-sided p-value of the median paired difference under random sign flips (each pair's order is random).

    The two requests of a pair are sent back to back, so a slow spell of a
    shared machine hits both: this test sees through load that drifts.
    """
    rng = random.Random(seed)
    observed = abs(statistics.median(differences))
    extreme = 0
    for _ in range(permutations):
        flipped = [d if rng.random() < 0.5 else -d for d in differences]
        if abs(statistics.median(flipped)) >= observed:
            extreme += 1
    return (extreme + 1) / (permutations + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests of each kind")
    parser.add_argument("--warmup", type=int, default=50, help="pairs sent first and not counted")
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.probe_settings",
            "BENCH_DB": str(Path(tmp) / "bench.sqlite3"),
        }
        prober, owner = login_headers(env, "prober", "owner")
        server = Server("gateway", "demo.asgi:application", env, "mcp_gateway.daphne")
        try:
            samples = asyncio.run(probe(server.url, prober, owner, args))
        finally:
            server.stop()
    unknown, foreign = statistics.median(samples["unknown"]), statistics.median(samples["foreign"])
    p = permutation_p(samples["unknown"], samples["foreign"], args.permutations, args.seed)
    print(f"requests: {args.requests} of each kind (after {args.warmup} pairs of warm-up), interleaved at random")
    print(f"median unknown: {unknown:.1f} us")
    print(f"median foreign: {foreign:.1f} us")
    print(f"difference (foreign - unknown): {foreign - unknown:+.1f} us")
    print(f"permutation test, difference of medians, two-sided: p = {p:.4f} ({args.permutations} permutations)")
    pairs = [f - u for f, u in zip(samples["foreign"], samples["unknown"], strict=True)]
    paired = paired_p(pairs, args.permutations, args.seed)
    print(f"median paired difference (foreign - unknown, same pair): {statistics.median(pairs):+.1f} us")
    print(f"sign-flip permutation test on the paired differences, two-sided: p = {paired:.4f}")


if __name__ == "__main__":
    main()
