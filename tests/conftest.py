"""Fixtures: real daphne processes on loopback ports, users and their login headers, a real browser."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client, TransactionTestCase
from django.utils.crypto import get_random_string

from .support.launcher import Launcher

IN_CI = os.environ.get("CI") == "true"
ROOT = Path(__file__).resolve().parent.parent

# Headless Chromium from Debian, driven by Playwright with no browser download (the ``chromium`` fixture).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Daphne(Launcher):
    """The gateway's launcher serving ``tests.asgi`` with the test settings, on a free loopback port."""

    def __init__(
        self,
        overrides: dict[str, Any] | None = None,
        extra_env: dict[str, str] | None = None,
        module: str = "mcp_gateway.daphne",
    ) -> None:
        super().__init__(
            "tests.asgi:application",
            module=module,
            settings="tests.settings",
            overrides=overrides,
            env=extra_env,
            name="daphne",
        )


def _is_deadlock(exc: BaseException | None) -> bool:
    while exc is not None:
        if "deadlock detected" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@pytest.fixture(scope="session", autouse=True)
def _flush_retries_a_deadlock() -> Iterator[None]:
    """Retry the test database's flush when PostgreSQL aborts it in a deadlock.

    The flush after a transactional test (TRUNCATE of every table) can race the
    live test servers, which are still writing as that test's sessions close
    (records, audit rows, heartbeats). PostgreSQL then aborts one side; when it
    picks the flush, which runs in one transaction and was rolled back, doing it
    again is safe. No test's own work is retried.
    """
    original = TransactionTestCase._fixture_teardown

    def fixture_teardown(self: TransactionTestCase) -> None:
        for attempt in range(3):
            try:
                original(self)
                return
            except Exception as exc:
                if attempt == 2 or not _is_deadlock(exc):
                    raise
                time.sleep(0.2)

    TransactionTestCase._fixture_teardown = fixture_teardown  # type: ignore[method-assign]
    yield
    TransactionTestCase._fixture_teardown = original  # type: ignore[method-assign]


@pytest.fixture(scope="session", autouse=True)
def _close_async_orm_connections(django_db_setup: None) -> Iterator[None]:
    """Close what async tests opened in asgiref's sync thread, so the test database can be dropped."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once a session without network (``--no-isolation``) from the files git tracks.

    A copy of the tracked files, so that nothing lying in the checkout (a build directory, a stray module) can
    reach the wheel: what the packaging and integration tests see is what a release would hold.
    """
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("*.whl")
    return built


@pytest.fixture(scope="session")
def daphne(django_db_setup: None, django_db_blocker: Any) -> Iterator[Daphne]:
    """One shared server for tests that need no special settings."""
    server = Daphne()
    yield server
    server.stop()


@pytest.fixture
def start_daphne(django_db_setup: None) -> Iterator[Callable[..., Daphne]]:
    """Start a server of this test's own (other settings, or one it may kill)."""
    servers: list[Daphne] = []

    def start(**kwargs: Any) -> Daphne:
        server = Daphne(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    """A plain HTTP client for requests the MCP client would never make."""
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


def login_headers(user: Any, *, csrf: bool = True) -> dict[str, str]:
    """The headers a non-browser client sends for ``user``'s login cookie (and CSRF token)."""
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    if not csrf:
        return {"Cookie": cookie}
    token = get_random_string(32)
    return {"Cookie": f"{cookie}; {settings.CSRF_COOKIE_NAME}={token}", "X-CSRFToken": token}


@pytest.fixture
def make_user(transactional_db: None) -> Callable[..., Any]:
    def make(username: str, **fields: Any) -> Any:
        fields.setdefault("email", f"{username}@example.com")
        return get_user_model().objects.create_user(username=username, password="x", **fields)

    return make


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., Any]) -> Any:
    return make_user("bob")


@pytest.fixture
def alice_headers(alice: Any) -> dict[str, str]:
    return login_headers(alice)


@pytest.fixture
def bob_headers(bob: Any) -> dict[str, str]:
    return login_headers(bob)


def redis_settings_for(pid: int) -> dict[str, Any]:
    """Channel layer and cache on the real Redis, namespaced to this test run."""
    return {
        "CHANNEL_LAYERS": {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    # As demo/settings.py and the README recommend (see bench/load.py for why).
                    "hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": 15, "max_connections": 1000}],
                    "prefix": f"mcp-test-{pid}",
                    "capacity": 1000,
                    "expiry": 30,
                },
            }
        },
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379/1",
                "KEY_PREFIX": f"mcp-test-{pid}",
            }
        },
    }


def require_redis() -> None:
    """Skip the test without Redis at 127.0.0.1:6379 (fail it in CI)."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if IN_CI:
            pytest.fail("CI needs Redis at 127.0.0.1:6379")
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")


@pytest.fixture
def redis_settings(settings: Any) -> dict[str, Any]:
    """Put this process on Redis (channel layer and cache); pass the result to servers that must share it."""
    require_redis()
    shared = redis_settings_for(os.getpid())
    for name, value in shared.items():
        setattr(settings, name, value)
    from django.core.cache import caches

    caches["default"].clear()
    return shared


def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ORM code outside the thread where Playwright's event loop runs (Django refuses it there).

    The thread's database connection is closed before the thread ends (PostgreSQL's driver warns of one that is
    left to the garbage collector).
    """

    def run() -> Any:
        try:
            return fn(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"CI needs Chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()
