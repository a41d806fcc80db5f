"""The per-user session cap stays exact when several launcher processes open one user's sessions at once.

On PostgreSQL, where the opens really run in parallel (SQLite takes one writer at a time). The workers share a
database of this module's own, created and migrated here, so the test runs whichever database the suite itself
is on; without PostgreSQL at 127.0.0.1:5432 it skips, and fails in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import psycopg
import pytest

from .clients import INITIALIZE
from .conftest import IN_CI, Daphne
from .support.launcher import ROOT

ACCEPT = {"Accept": "application/json, text/event-stream"}


@dataclass(frozen=True)
class Case:
    transport: str  # "streamable" (idle sessions: evictable) or "sse" (the stream is the session: never evicted)
    cap: int
    workers: int
    opens: int
    opened: int  # answered 200
    refused: int  # answered 429
    evicted: int


CASES = [
    pytest.param(Case("sse", cap=1, workers=4, opens=16, opened=1, refused=15, evicted=0), id="sse-1-of-16"),
    pytest.param(Case("sse", cap=3, workers=4, opens=24, opened=3, refused=21, evicted=0), id="sse-3-of-24"),
    pytest.param(
        Case("streamable", cap=1, workers=4, opens=24, opened=24, refused=0, evicted=23), id="streamable-evicts-23"
    ),
    pytest.param(
        Case("streamable", cap=3, workers=4, opens=32, opened=32, refused=0, evicted=29), id="streamable-evicts-29"
    ),
]


def _pg(dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=dbname, autocommit=True)


@pytest.fixture(scope="module")
def database() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database, migrated: the environment naming it, for the workers and ``manage.py``."""
    try:
        admin = _pg()
    except psycopg.OperationalError:
        if IN_CI:
            pytest.fail("CI needs PostgreSQL at 127.0.0.1:5432")
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"mcp_gateway_cap_{os.getpid()}"
    admin.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.execute(f"CREATE DATABASE {name}")
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_ENGINE": "postgresql", "MCP_TEST_DB_NAME": name}
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env={**os.environ, **env}, check=True
        )
        yield env
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def user_headers(env: dict[str, str], username: str) -> dict[str, str]:
    """A new user's login headers (cookie and CSRF token), from the workers' database."""
    run_env = {**os.environ, **env}
    script = f"from django.contrib.auth import get_user_model;get_user_model().objects.create_user({username!r})"
    subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=run_env, check=True)
    out = subprocess.check_output(
        [sys.executable, "manage.py", "demo_headers", username, "--json"], cwd=ROOT, env=run_env
    )
    headers: dict[str, str] = json.loads(out)
    return headers


def sessions_of(dbname: str, username: str) -> Counter[str]:
    """How many of ``username``'s records are open, and how many closed for each reason."""
    query = (
        "SELECT CASE WHEN s.closed_at IS NULL THEN 'open' ELSE s.close_reason END FROM mcp_sessions_mcpsession s"
        " JOIN auth_user u ON u.id = s.user_id WHERE u.username = %s"
    )
    with _pg(dbname) as conn:
        return Counter(row[0] for row in conn.execute(query, (username,)).fetchall())


@contextlib.asynccontextmanager
async def opening(case: Case, urls: list[str], headers: dict[str, str]) -> AsyncIterator[list[int]]:
    """Every open of ``case`` at once, round robin over the workers; their statuses, SSE streams held meanwhile."""
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None)) as http, contextlib.AsyncExitStack() as held:

        async def one(n: int) -> int:
            url = urls[n % len(urls)]
            if case.transport == "streamable":
                response = await http.post(f"{url}/mcp-test/", json=INITIALIZE, headers={**headers, **ACCEPT})
                return response.status_code
            stream = await held.enter_async_context(
                http.stream("GET", f"{url}/mcp-test/sse", headers={**headers, "Accept": "text/event-stream"})
            )
            return stream.status_code

        yield list(await asyncio.gather(*(one(n) for n in range(case.opens))))


@pytest.mark.parametrize("case", CASES)
async def test_the_cap_is_exact_under_concurrent_opens_on_several_workers(
    database: dict[str, str], case: Case, request: pytest.FixtureRequest
) -> None:
    username = f"cap-{request.node.callspec.id}"
    headers = user_headers(database, username)
    overrides = {"MCP_GATEWAY_MAX_SESSIONS_PER_USER": case.cap}
    extra = {key: value for key, value in database.items() if key != "DJANGO_SETTINGS_MODULE"}
    workers = [Daphne(overrides=overrides, extra_env=extra) for _ in range(case.workers)]
    try:
        # Each worker opens (and ends) one of another user's sessions first, so that its first open of this user's
        # does not wait for its imports and database connection: the opens below meet in the database at once.
        warm = user_headers(database, f"warm-{request.node.callspec.id}")
        async with httpx2.AsyncClient(timeout=30) as http:
            for worker in workers:
                response = await http.post(f"{worker.url}/mcp-test/", json=INITIALIZE, headers={**warm, **ACCEPT})
                assert response.status_code == 200, response.text
        async with opening(case, [worker.url for worker in workers], headers) as statuses:
            assert Counter(statuses) == Counter({200: case.opened, 429: case.refused}) - Counter(), statuses
            seen = await asyncio.to_thread(sessions_of, database["MCP_TEST_DB_NAME"], username)
            assert seen["open"] == case.cap, seen
            assert seen["evicted"] == case.evicted, seen
            assert sum(seen.values()) == case.opened, seen
    finally:
        for worker in workers:
            worker.stop()
