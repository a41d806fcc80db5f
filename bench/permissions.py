"""Benchmark: what the permission check and the call record cost, in server CPU per call.

Two gateway processes serve the same ``MCPServer`` (bench/permissions_app.py: one async tool needing
``demo.view_note``, which the benchmark user has through a group): one with the gateway's gatekeeper (the
permission check on a fresh user and a call record per call, records stored), one without. Both are driven alike,
in alternating rounds, over two paths:

- ``modern``: 2026-07-28 requests, one POST each (raw HTTP, a bearer token);
- ``sse``: one handshake-era HTTP+SSE session through the official client, calls in sequence.

Each figure is the server process's CPU time (user + system, /proc) per call, the median over the rounds, and
the ratio with / without (on a shared machine these move by ±10 % from run to run). A third process makes the
records but does not store them (``CALL_RECORDS`` off), to tell the check's cost from the database's.
``gatekeeper_in_process`` times the gatekeeper alone (bench/permissions_cost.py, far less disturbed by other
load) and gives its share of a call served without it. Run it with

    .venv/bin/python -m bench.permissions [--rounds 5] [--calls 500]

Loopback only; every loop is bounded.
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
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp_types.version import LATEST_MODERN_VERSION

from tests.support.launcher import Launcher

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("modern", "sse")
SETUP = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from mcp_sessions.models import AccessToken
user = get_user_model().objects.create_user("bench", password="x")
group = Group.objects.create(name="readers")
group.permissions.add(Permission.objects.get(codename="view_note"))
user.groups.add(group)
print(AccessToken.objects.issue(user, "bench")[1])
"""


def prepare(env: dict[str, str]) -> str:
    """Migrate the throwaway database, make the user, its group and a token; the token's secret."""
    run_env = {**os.environ, **env}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=run_env, check=True)
    out = subprocess.check_output([sys.executable, "manage.py", "shell", "-c", SETUP], cwd=ROOT, env=run_env)
    return out.decode().strip().splitlines()[-1]


def body(n: int) -> bytes:
    meta = {
        "io.modelcontextprotocol/protocolVersion": LATEST_MODERN_VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    params = {"name": "echo", "arguments": {"text": "hello"}, "_meta": meta}
    return json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}).encode()


async def modern_calls(server: Launcher, token: str, calls: int) -> float:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": LATEST_MODERN_VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        before = server.cpu_seconds()
        for n in range(calls):
            response = await http.post(f"{server.url}/mcp/", content=body(n), headers=headers)
            assert response.status_code == 200 and b"hello" in response.content, response.text
        return (server.cpu_seconds() - before) / calls


async def sse_calls(server: Launcher, token: str, calls: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    async with Client(sse_client(f"{server.url}/mcp/sse", headers=headers), mode="legacy") as client:
        await client.call_tool("echo", {"text": "warm"})
        before = server.cpu_seconds()
        for _ in range(calls):
            result = await client.call_tool("echo", {"text": "hello"})
            assert not result.is_error
        return (server.cpu_seconds() - before) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB": str(Path(tmp) / "bench.sqlite3")}
        token = prepare(env)
        app = "bench.permissions_app:application"
        servers = {
            "with": Launcher(app, env=env, name="with", log=False),
            "unstored": Launcher(app, env={**env, "BENCH_NO_STORE": "1"}, name="unstored", log=False),
            "without": Launcher(app, env={**env, "BENCH_BARE": "1"}, name="without", log=False),
        }
        figures: dict[str, dict[str, list[float]]] = {
            path: {name: [] for name in servers} for path in ("modern", "sse")
        }
        try:
            for server in servers.values():  # warm up: imports, connections, caches
                asyncio.run(modern_calls(server, token, 50))
            for _ in range(args.rounds):
                for name, server in servers.items():
                    figures["modern"][name].append(asyncio.run(modern_calls(server, token, args.calls)))
                    figures["sse"][name].append(asyncio.run(sse_calls(server, token, args.calls)))
        finally:
            for server in servers.values():
                server.stop()
        in_process = json.loads(
            subprocess.check_output(
                [sys.executable, "-m", "bench.permissions_cost", str(args.calls * 4)],
                cwd=ROOT,
                env={**os.environ, **env},
            )
        )
    report: dict[str, Any] = {}
    for path, sides in figures.items():
        medians = {side: statistics.median(values) for side, values in sides.items()}
        report[path] = {
            "cpu_ms_per_call_with": round(medians["with"] * 1000, 3),
            "cpu_ms_per_call_records_not_stored": round(medians["unstored"] * 1000, 3),
            "cpu_ms_per_call_without": round(medians["without"] * 1000, 3),
            "ratio": round(medians["with"] / medians["without"], 3),
            "ratio_records_not_stored": round(medians["unstored"] / medians["without"], 3),
        }
    without = statistics.median([report[path]["cpu_ms_per_call_without"] for path in report])
    report["gatekeeper_in_process"] = {
        **{key: round(value, 4) for key, value in in_process.items()},
        "share_of_a_call": round(in_process["with_records_ms"] / without, 4),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
