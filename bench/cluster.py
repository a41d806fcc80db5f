"""Several daphne workers on one database and one Redis, behind the round-robin loopback proxy.

Used by ``bench.load`` (by hand) and ``bench.run`` (2-worker vs 1-worker, channel-layer comparison). The
workers serve ``demo.asgi`` with ``bench.cluster_settings`` (the benchmark's async ``echo`` tool); this process
uses the same database, so it can create users, log them in and count open sessions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from tests.support.launcher import Launcher
from tests.support.proxy import ProxyProcess

ROOT = Path(__file__).resolve().parent.parent
_tmp: tempfile.TemporaryDirectory[str] | None = None


def setup_django() -> None:
    """Point this process at a throwaway database (once) and migrate it."""
    global _tmp
    if _tmp is not None:
        return
    _tmp = tempfile.TemporaryDirectory(prefix="mcp-bench-")
    os.environ["BENCH_DB"] = str(Path(_tmp.name) / "bench.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.cluster_settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def user_headers(count: int) -> list[dict[str, str]]:
    """Login-cookie headers (with CSRF) for ``count`` users, created if needed."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils.crypto import get_random_string

    headers = []
    for n in range(count):
        user, _ = get_user_model().objects.get_or_create(username=f"load{n}")
        client = Client()
        client.force_login(user)
        token = get_random_string(32)
        cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        headers.append({"Cookie": f"{cookie}; {settings.CSRF_COOKIE_NAME}={token}", "X-CSRFToken": token})
    return headers


class Worker(Launcher):
    """The gateway's launcher serving ``app`` with the cluster's settings and ``overrides``."""

    def __init__(self, overrides: dict[str, Any], app: str = "demo.asgi:application") -> None:
        super().__init__(
            app, settings="bench.cluster_settings", overrides=overrides, args=("-v", "0"), name="bench-daphne"
        )


class Cluster:
    """``workers`` daphne processes with ``overrides``, and the proxy in front (its own process)."""

    def __init__(self, overrides: dict[str, Any], workers: int = 2) -> None:
        self.overrides = overrides
        self.count = workers
        self.workers: list[Worker] = []
        self.proxy: ProxyProcess | None = None

    def __enter__(self) -> Cluster:
        setup_django()
        try:
            self.workers = [Worker(self.overrides) for _ in range(self.count)]
            self.proxy = ProxyProcess(self.urls).start()
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def urls(self) -> list[str]:
        return [w.url for w in self.workers]

    @property
    def front(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def user_headers(self, count: int) -> list[dict[str, str]]:
        return user_headers(count)

    def proxy_stats(self) -> str:
        return "see stderr" if self.proxy is None else f"{self.proxy.url}"

    def __exit__(self, *exc: object) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for worker in self.workers:
            worker.stop()
