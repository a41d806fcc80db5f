"""The benchmark's own parts agree: the raw client (bench/wire.py) with the floor (bench/floor.py) and the gateway.

Bounded (a few dozen calls per transport) so the bench cannot rot silently; it measures nothing.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from bench import measure
from bench.wire import TRANSPORTS, SseSession, Target, WireError, check, session
from mcp_sessions.models import AccessToken

from .support.launcher import Launcher


@pytest.fixture(scope="module")
def floor() -> Iterator[Launcher]:
    server = Launcher("bench.floor:application", env={"DJANGO_SETTINGS_MODULE": None}, name="floor")
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_raw_client_and_the_floor_agree(floor: Launcher, transport: str) -> None:
    target = Target(floor.port)
    sessions = [session(transport, target, f"{transport}{n}") for n in range(2)]
    try:
        for one in sessions:
            await one.open()
        for _ in range(25):
            await asyncio.gather(*(one.call() for one in sessions))
    finally:
        await asyncio.gather(*(one.close() for one in sessions))
    assert [one.sequence for one in sessions] == [25, 25]


async def test_held_sessions_are_initialized_and_counted(floor: Launcher) -> None:
    figures = await measure.held(Target(floor.port), 20, floor.rss_bytes, probes=3)
    assert figures["idle_kib"] >= 0
    assert figures["open_timeouts"] == figures["open_failures"] == 0
    assert figures["opens_per_s"] > 0 and figures["probe_worst_ms"] > 0


async def test_an_unknown_session_is_refused(floor: Launcher) -> None:
    one = SseSession(Target(floor.port), "lost")
    await one.open()
    one.message_head = one.message_head.replace("session_id=", "session_id=x")
    with pytest.raises(WireError, match="404"):
        await one.call()
    await one.close()


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "a:1"}]}},  # another id
        {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "a:2"}]}},  # another text
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}},
    ],
    ids=["id", "text", "error"],
)
def test_a_wrong_answer_fails_the_run(message: dict[str, object]) -> None:
    with pytest.raises(WireError):
        check(message, 1, "a:1", "a")
    check({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "a:1"}]}}, 1, "a:1", "a")


async def test_opens_at_an_offered_rate_are_counted(floor: Launcher) -> None:
    figures = await measure.open_rate(Target(floor.port), 20, 200.0)
    assert figures["open_timeouts"] == figures["open_failures"] == 0 and figures["opens_per_s"] > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_raw_client_and_the_gateway_agree(daphne: Any, alice: Any, transport: str) -> None:
    # What bench/run.py measures of the gateway is real MCP traffic it answers right, on every wire.
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "bench")
    target = Target(daphne.port, "/mcp/sse", "/mcp/", {"Authorization": f"Bearer {secret}"})
    one = session(transport, target, transport)
    try:
        await one.open()
        for _ in range(10):
            await one.call()
    finally:
        await one.close()
    assert one.sequence == 10


# Every bench script is importable with what the repository ships: a rewritten helper module does not leave another
# script pointing at a name that went away. Settings modules (``*settings``, and the app that loads its own) read
# their bench database from the environment when imported.
NEEDS_A_BENCH_DATABASE = {"__init__", "permissions_app"}
BENCH_MODULES = sorted(
    path.stem
    for path in (Path(__file__).resolve().parent.parent / "bench").glob("*.py")
    if not path.stem.endswith("settings") and path.stem not in NEEDS_A_BENCH_DATABASE
)


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_every_bench_script_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
