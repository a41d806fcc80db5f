"""Redis restarted under load: two workers recover without a restart, and nothing in flight goes astray.

The shared Redis on 6379 is never touched: this test runs a private ``redis-server`` (no persistence) on a
free loopback port, puts two workers on it behind the round-robin proxy, keeps calls in flight with colliding
JSON-RPC ids, SIGKILLs that Redis and starts it again on the same port. Every call must end with its own reply
or a clear error (a refused POST, a JSON-RPC error, or its stream ending), never a foreign reply and never
silence; afterwards both workers, still the same processes, serve new sessions and calls.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2
import pytest
from asgiref.sync import sync_to_async

from bench.load import Figures, Session, channel_layer_settings
from mcp_sessions.models import McpSession

from .conftest import IN_CI, login_headers
from .support.launcher import free_port
from .support.proxy import LoopbackProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivateRedis:
    """A throwaway redis-server on a loopback port of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def private_redis() -> Any:
    if not os.access(REDIS_SERVER, os.X_OK):
        if IN_CI:
            pytest.fail(f"CI needs {REDIS_SERVER}")
        pytest.skip(f"{REDIS_SERVER} is not installed")
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.kill()


def overrides_for(redis: PrivateRedis, layer: str = "core") -> dict[str, Any]:
    prefix = f"mcp-restart-{os.getpid()}"
    return {
        "CHANNEL_LAYERS": channel_layer_settings(layer, f"{redis.url}/0", prefix),
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"{redis.url}/1",
                "KEY_PREFIX": prefix,
            }
        },
        "MCP_GATEWAY_MAX_SESSIONS_PER_USER": 10_000,
        "MCP_GATEWAY_RATE_LIMIT": [1_000_000_000, 60],
        "MCP_GATEWAY_RESUME_TIMEOUT": 0,
    }


def worker_errors(log: str) -> str:
    """The distinct error lines of a worker's log, counted, for the failure report."""
    raw = log.splitlines()
    lines = Counter(
        line.strip() for line in raw if ("Error" in line or "session_closed" in line) and "File" not in line
    )
    lines.update(f"{line.strip()} | {raw[i + 1].strip()}" for i, line in enumerate(raw[:-1]) if "/mcp_gateway/" in line)
    return "\n".join(f"  {n:>4} x {line[:200]}" for line, n in lines.most_common(20))


class Outcomes(Counter[str]):
    pass


async def call_until(session: Session, lane: int, stop_at: float, outcomes: Outcomes) -> None:
    """Echo calls with id ``lane`` (the same ids in every session) until ``stop_at`` or the stream ends."""
    n = 0
    while time.monotonic() < stop_at and not session.ended.is_set():
        n += 1
        text = f"{session.nonce}:{lane}:{n}"
        try:
            reply = await session.request(lane, "tools/call", {"name": "echo", "arguments": {"text": text}}, within=10)
        except TimeoutError:
            outcomes["lost"] += 1  # accepted, stream still open, and never answered
            continue
        except EOFError:
            outcomes["stream_ended"] += 1
            return
        except RuntimeError as exc:  # POST refused
            outcomes[f"refused {str(exc).split()[-1]}"] += 1
            await asyncio.sleep(0.1)
            continue
        except httpx2.HTTPError as exc:
            outcomes[f"http error {type(exc).__name__}"] += 1
            await asyncio.sleep(0.1)
            continue
        if "error" in reply:
            outcomes["jsonrpc_error"] += 1
        elif (reply.get("result", {}).get("content") or [{}])[0].get("text") == text:
            outcomes["ok"] += 1
        else:
            outcomes["misrouted"] += 1


T = TypeVar("T")


async def retrying_503(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` as a client honouring 503 + Retry-After makes it: pooled connections that outlived the restart
    fail on first use (503, the message not accepted) before they reconnect."""
    for _ in range(10):
        try:
            return await call()
        except RuntimeError as refused:
            if "503" not in str(refused):
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("still 503 two seconds after the restart")


# Only the layer we ship: RedisPubSubChannelLayer (at-most-once) silently lost calls already answered 202 across a
# restart (24 of ~900, measured with this test's scenario; see the README), which is why it is not the default.
@pytest.mark.parametrize("layer", ["core"])
async def test_workers_recover_from_a_redis_restart_and_nothing_goes_astray(
    start_daphne: Any, private_redis: PrivateRedis, make_user: Any, layer: str
) -> None:
    overrides = overrides_for(private_redis, layer)
    workers = [start_daphne(overrides=overrides), start_daphne(overrides=overrides)]
    users = [await sync_to_async(make_user)(f"r{n}") for n in range(2)]
    headers = [await sync_to_async(login_headers)(user) for user in users]
    figures = Figures()
    outcomes = Outcomes()
    timeout = httpx2.Timeout(10.0, read=None)
    with LoopbackProxy([w.url for w in workers]) as proxy:
        async with httpx2.AsyncClient(timeout=timeout) as http:
            sessions = []
            for n in range(12):
                session = Session(http, proxy.url, headers[n % 2], figures)
                await session.open()
                await session.handshake()
                sessions.append(session)
            stop_at = time.monotonic() + 9
            calls = asyncio.gather(*(call_until(s, lane, stop_at, outcomes) for s in sessions for lane in (1, 2)))
            await asyncio.sleep(2)
            before = dict(outcomes)
            private_redis.kill()
            await asyncio.sleep(1.0)
            private_redis.start()
            await calls
            ended = sum(s.ended.is_set() for s in sessions)
            for s in sessions:
                await s.close()

            print(f"\nbefore the restart: {before}; in all: {dict(outcomes)}; streams ended: {ended}/12")
            print(f"POST statuses: {dict(figures.statuses)}; stray replies: {figures.misrouted}")
            for worker in workers:
                print(worker_errors(worker.log()))
            for worker in workers:
                assert worker.proc.poll() is None, "a worker died"
            assert outcomes["misrouted"] == 0 and figures.misrouted == 0, outcomes
            assert outcomes["lost"] == 0, f"calls accepted (202) but never answered nor failed: {dict(outcomes)}"
            assert figures.statuses[500] == 0, f"unclear 500s instead of 503: {dict(figures.statuses)}"

            # Recovered without a restart: new sessions on both workers, calls through either.
            for worker in workers:
                session = Session(http, worker.url, headers[0], Figures())
                await session.open()
                await retrying_503(session.handshake)
                session.front = proxy.url  # POSTs round-robin over both workers
                for n in range(4):
                    text = f"{session.nonce}:after:{n}"
                    params = {"name": "echo", "arguments": {"text": text}}
                    call = functools.partial(session.request, 7, "tools/call", params, within=10)
                    reply = await retrying_503(call)
                    assert reply["result"]["content"][0]["text"] == text
                await session.close()

    # Nothing left open once the clients are gone.
    deadline = time.monotonic() + 10
    while await McpSession.objects.filter(closed_at__isnull=True).acount():
        assert time.monotonic() < deadline, "sessions left open after the restart"
        await asyncio.sleep(0.1)
