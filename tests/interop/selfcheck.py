"""Prove the harness: every client against the gateway's SSE transport, and the suite against the reference.

    cd <repo> && PYTHONPATH=. python tests/interop/selfcheck.py [--only gateway|reference] [--clients a,b]

(a) The gateway, HTTP+SSE, in a real daphne (``tests.conftest.Daphne`` on a freshly migrated
    SQLite database): each client connects to ``/mcp-test/sse`` with the login cookie + CSRF
    headers, then with ``Authorization: Bearer``, and calls ``whoami`` (expects ``alice``);
    then without credentials (expects a failure with status 401).
(b) The SDK's reference Streamable HTTP server under uvicorn serving ``tests/conformance_server.py``:
    the conformance suite (``--suite all``), through the header proxy, and each client in
    ``http`` mode; then the same server behind a required header, to see the suite pass only
    with the proxy adding it and each client fail with 401 without it.

Not a pytest module (no ``test_`` prefix): it starts servers and Node processes, ~1-2 minutes.
Exits 1 if anything did not go as expected.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.interop import harness  # noqa: E402
from tests.support.proxy import LoopbackProxy  # noqa: E402

results: list[tuple[str, bool, str]] = []


def record(label: str, ok: bool, detail: str) -> None:
    results.append((label, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {label}: {detail}", flush=True)


def expect_call(label: str, run: Callable[[], harness.ClientRun], want: str) -> None:
    started = time.monotonic()
    try:
        result = run()
    except harness.ClientFailed as error:
        record(label, False, f"{error.message[:300]} (status {error.status}) {error.stderr[-600:]!r}")
        return
    took = time.monotonic() - started
    record(label, result.text == want, f"text={result.text!r}, {len(result.tools)} tools, {took:.1f}s")


def expect_401(label: str, run: Callable[[], harness.ClientRun]) -> None:
    started = time.monotonic()
    try:
        result = run()
    except harness.ClientFailed as error:
        took = time.monotonic() - started
        record(label, error.unauthorized, f"status={error.status} in {took:.1f}s: {error.message[:160]!r}")
        return
    record(label, False, f"connected without credentials: {result.tools}")


# (a) The gateway's SSE transport


@contextlib.contextmanager
def gateway() -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """A migrated database, a user with a login session and a token, and daphne serving tests.asgi."""
    db = Path(tempfile.mkdtemp(prefix="mcp-interop-db-")) / "db.sqlite3"
    os.environ["MCP_TEST_DB_NAME"] = str(db)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from mcp_sessions.models import AccessToken
    from tests.conftest import Daphne, login_headers

    call_command("migrate", verbosity=0, interactive=False)
    alice = get_user_model().objects.create_user("alice", "alice@example.com", "x")
    _, secret = AccessToken.objects.issue(alice, "interop")
    cookie = login_headers(alice)
    bearer = {"Authorization": f"Bearer {secret}"}
    server = Daphne()
    try:
        yield server.url, cookie, bearer
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            db.unlink()


@contextlib.contextmanager
def front(url: str, headers: dict[str, str]) -> Iterator[str]:
    """``url`` as seen through the shared loopback proxy (tests/support/proxy.py) adding ``headers``."""
    parts = urlsplit(url)
    with LoopbackProxy([f"{parts.scheme}://{parts.netloc}"], add_headers=headers) as proxy:
        yield proxy.url + parts.path


def check_proxy_streams_sse(url: str, headers: dict[str, str]) -> None:
    """Through the proxy, the gateway's first SSE event arrives at once and a client's close reaches it."""
    import httpx2

    with front(url, headers) as proxied, httpx2.Client(timeout=10) as client:
        started = time.monotonic()
        with client.stream("GET", proxied, headers={"Accept": "text/event-stream"}) as response:
            # Comments (the stream's priming one) and the event's id line are skipped.
            lines = (line for line in response.iter_lines() if line and not line.startswith((":", "id:")))
            first = next(lines), next(lines)
            took = time.monotonic() - started
        record(
            "proxy streams the gateway's SSE",
            response.status_code == 200 and first[0] == "event: endpoint" and took < 2,
            f"{response.status_code} {first[0]!r} {first[1][:40]!r} after {took:.2f}s",
        )
        unauthenticated = client.get(url)
        record("direct GET without credentials", unauthenticated.status_code == 401, str(unauthenticated.status_code))


def check_gateway(clients: list[str]) -> None:
    with gateway() as (base, cookie, bearer):
        url = f"{base}/mcp-test/sse"
        print(f"-- gateway SSE at {url}", flush=True)
        check_proxy_streams_sse(url, cookie)
        for name in clients:
            run = harness.RUNNERS[name]
            for label, headers in (("cookie+csrf", cookie), ("bearer", bearer)):
                expect_call(
                    f"gateway sse {name} {label}",
                    lambda run=run, headers=headers: run(url, transport="sse", headers=headers, tool="whoami"),
                    "alice",
                )
            expect_401(f"gateway sse {name} no credentials", lambda run=run: run(url, transport="sse", tool="whoami"))


# (b) The reference server


def check_proxy_methods(url: str) -> None:
    """Through the proxy: POST initialize (an SSE answer), GET stream, DELETE the session."""
    import httpx2

    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}},
    }
    with front(url, {"X-Interop": "1"}) as proxied, httpx2.Client(timeout=10) as client:
        first = client.post(proxied, json=init, headers=accept)
        session = {"Mcp-Session-Id": first.headers.get("mcp-session-id", ""), "MCP-Protocol-Version": "2025-11-25"}
        done = client.post(
            proxied, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**accept, **session}
        )
        with client.stream("GET", proxied, headers={"Accept": "text/event-stream", **session}) as stream:
            streamed = stream.status_code
        deleted = client.delete(proxied, headers=session)
        gone = client.post(proxied, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers={**accept, **session})
    record(
        "proxy forwards POST/GET/DELETE",
        (first.status_code, done.status_code, streamed, deleted.status_code, gone.status_code)
        == (200, 202, 200, 200, 404),
        f"initialize {first.status_code}, initialized {done.status_code}, GET {streamed}, "
        f"DELETE {deleted.status_code}, after DELETE {gone.status_code}",
    )


def check_reference(clients: list[str]) -> None:
    with harness.serve_reference() as url:
        print(f"-- reference Streamable HTTP at {url}", flush=True)
        check_proxy_methods(url)
        started = time.monotonic()
        result = harness.run_conformance(url, suite="all")
        print(result.summary(), flush=True)
        record(
            "reference conformance --suite all",
            result.ok,
            f"{len(result.passed)} scenarios pass, failed {result.failed}, "
            f"{result.proxied_requests} requests proxied, {time.monotonic() - started:.1f}s",
        )
        for name in clients:
            expect_call(
                f"reference http {name}",
                lambda name=name: harness.run_client(name, url, transport="http", tool="test_simple_text"),
                "This is a simple text response for testing.",
            )
    secret = {"Authorization": "Bearer interop-selfcheck"}
    with harness.serve_reference(require_header="Authorization: Bearer interop-selfcheck") as url:
        print(f"-- reference behind a required header at {url}", flush=True)
        with_header = harness.run_conformance(url, secret, scenario="tools-call-simple-text")
        without = harness.run_conformance(url, scenario="tools-call-simple-text")
        record(
            "proxy adds the header",
            with_header.ok and not without.ok,
            f"with: passed {with_header.passed}; without: failed {without.failed}",
        )
        for name in clients:
            expect_401(
                f"reference http {name} no credentials",
                lambda name=name: harness.run_client(name, url, transport="http"),
            )
            expect_call(
                f"reference http {name} with header",
                lambda name=name: harness.run_client(
                    name, url, transport="http", headers=secret, tool="test_simple_text"
                ),
                "This is a simple text response for testing.",
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["gateway", "reference"])
    parser.add_argument("--clients", default=",".join(harness.CLIENTS))
    args = parser.parse_args()
    clients = [c for c in args.clients.split(",") if c]
    tools = harness.ensure_node_tools()
    harness.ensure_py1_venv()
    print(f"versions: {tools.versions()}", flush=True)
    if args.only in (None, "gateway"):
        check_gateway(clients)
    if args.only in (None, "reference"):
        check_reference(clients)
    failed = [label for label, ok, _ in results if not ok]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    for label in failed:
        print(f"  failed: {label}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
