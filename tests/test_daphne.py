"""The launcher: its input queue (what daphne needs of ``asyncio.Queue``, lighter), gc freeze, request limits."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import signal
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.collector import THRESHOLDS
from mcp_gateway.daphne import ApplicationQueue, RedactingAccessLog
from mcp_sessions.models import AuditEvent, AuditKind, CloseReason, McpSession

from .clients import raw_stream
from .support.launcher import Launcher


async def test_items_come_out_in_order_and_a_reader_waits_for_one() -> None:
    queue = ApplicationQueue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert [await queue.get(), await queue.get()] == [1, 2]
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait(3)
    assert await asyncio.wait_for(reader, 1) == 3
    assert len(queue) == 0


async def test_waiting_readers_each_get_one_item() -> None:
    queue = ApplicationQueue()
    readers = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for item in "abc":
        queue.put_nowait(item)
    assert sorted(await asyncio.wait_for(asyncio.gather(*readers), 1)) == ["a", "b", "c"]


@pytest.mark.parametrize("woken", [False, True], ids=["cancelled-while-waiting", "cancelled-once-woken"])
async def test_a_cancelled_reader_loses_nothing(woken: bool) -> None:
    queue = ApplicationQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    if woken:
        queue.put_nowait("item")  # wakes the first reader, which is cancelled before it runs
    first.cancel()
    if not woken:
        await asyncio.sleep(0)
        queue.put_nowait("item")
    assert await asyncio.wait_for(second, 1) == "item"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_empty_queue_is_still_true() -> None:
    # daphne tests ``if self.application_queue:`` to know whether the application exists.
    assert ApplicationQueue()


@pytest.mark.parametrize(("args", "frozen"), [([], True), (["--no-gc-freeze"], False)], ids=["default", "opt-out"])
def test_the_loaded_application_is_frozen_and_the_collector_tuned_unless_asked_not_to(
    args: list[str], frozen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from daphne.cli import CommandLineInterface as DaphneCommandLineInterface
    from daphne.server import Server

    from mcp_gateway.daphne import CommandLineInterface

    servers = []

    def build_only(cli: DaphneCommandLineInterface, argv: list[str]) -> None:
        servers.append(cli.server_class(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"]))

    monkeypatch.setattr(DaphneCommandLineInterface, "run", build_only)
    monkeypatch.setattr(Server, "run", lambda server: None)
    CommandLineInterface().run([*args, "demo.asgi:application"])
    before = gc.get_freeze_count()  # not 0 on every Python: 3.12 freezes some objects of its own
    thresholds = gc.get_threshold()
    try:
        servers[0].run()
        assert (gc.get_freeze_count() > before) is frozen
        assert (gc.get_threshold() == THRESHOLDS) is frozen
    finally:
        if gc.get_freeze_count() > before:
            gc.unfreeze()
        gc.set_threshold(*thresholds)


# The launcher's request limits: real launcher processes, raw sockets (to choose Content-Length or chunked, and
# to stop sending once answered), loopback only.

MiB = 1024 * 1024
BIG = 64 * MiB
PIECE = b"x" * 65536


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def declared(method: str, path: str, size: int) -> tuple[bytes, Iterator[bytes]]:
    """A request declaring a ``size``-byte body, and that body in pieces."""
    return request_head(method, path, f"Content-Length: {size}"), (PIECE for _ in range(size // len(PIECE)))


def chunked(method: str, path: str, size: int) -> tuple[bytes, Iterator[bytes]]:
    """A request with a chunked ``size``-byte body (no length declared), and that body in chunks."""
    chunk = b"%x\r\n%s\r\n" % (len(PIECE), PIECE)
    pieces = itertools.chain((chunk for _ in range(size // len(PIECE))), [b"0\r\n\r\n"])
    return request_head(method, path, "Transfer-Encoding: chunked"), pieces


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # bytes of the body the client had sent when the answer came
    complete: bool  # whether that was all of it
    closed: bool  # whether the server then closed the connection

    @property
    def reason(self) -> str | None:
        if self.headers.get("content-type") != "application/json":
            return None
        return json.loads(self.body)["error"]["data"]["reason"]


def read_answer(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock``: status, headers (lower-cased names), body (by its Content-Length)."""
    received = b""
    while b"\r\n\r\n" not in received:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers.get("content-length", 0)):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the answer's body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def send_request(
    port: int, head: bytes, pieces: Iterable[bytes], *, pause: float = 0.0, timeout: float = 60.0, refusal: bool = True
) -> Answer:
    """Send ``head``, then ``pieces`` (``pause`` seconds apart) until the server answers; read the answer.

    For a ``refusal``, also wait for the server to close the connection (else ``closed`` is False).
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sent, complete = 0, True
        for piece in pieces:
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                complete = False
                break  # answered: stop sending
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {timeout} s ({sent} bytes sent)")
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall(piece)
            sent += len(piece)
        status, headers, body = read_answer(sock, deadline)
        closed = False
        if refusal:
            sock.settimeout(max(0.01, min(10.0, deadline - time.monotonic())))
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
        return Answer(status, headers, body, sent, complete, closed)


@pytest.mark.django_db(transaction=True)
def test_bodies_for_the_gateway_are_refused_as_they_arrive_and_never_held(start_daphne: Any) -> None:
    server = start_daphne()
    send_request(server.port, *declared("GET", "/mcp/", MiB))  # the refusal path runs once before measuring
    rss_before, peak_before = server.rss_bytes(), server.peak_rss_bytes()
    answers = {
        (method, framing.__name__): send_request(server.port, *framing(method, path, BIG))
        for method, path in [("GET", "/mcp/"), ("DELETE", "/mcp/"), ("GET", "/mcp/sse"), ("POST", "/mcp/")]
        for framing in (declared, chunked)
    }
    rss_growth = server.rss_bytes() - rss_before
    peak_growth = server.peak_rss_bytes() - peak_before
    print(f"8 requests with 64 MiB bodies: worker grew {rss_growth / MiB:.1f} MiB, peak {peak_growth / MiB:.1f} MiB")
    assert peak_growth < 16 * MiB, f"the worker's peak memory grew {peak_growth / MiB:.0f} MiB"
    assert rss_growth < 16 * MiB, f"the worker grew {rss_growth / MiB:.0f} MiB"

    for (method, framing), answer in answers.items():
        what = f"{method} with a {framing} 64 MiB body"
        expected = (413, "payload_too_large") if method == "POST" else (400, "body_not_allowed")
        assert (answer.status, answer.reason) == expected, f"{what}: {answer.status} {answer.body[:200]!r}"
        assert not answer.complete and answer.sent < BIG, f"{what} was answered only once it had all been sent"
        assert answer.closed, f"{what}: the connection stays open"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"
        error = json.loads(answer.body)
        assert error["jsonrpc"] == "2.0" and error["id"] is None and error["error"]["message"]
    # As the gateway's body guard would, the launcher records the oversize bodies in the audit trail.
    deadline = time.monotonic() + 10
    while AuditEvent.objects.filter(kind=AuditKind.PAYLOAD_TOO_LARGE).count() < 2:
        assert time.monotonic() < deadline, "the launcher's 413s are not in the audit trail"
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
def test_bodies_within_the_limit_and_other_paths_are_served_as_before(start_daphne: Any) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_MAX_BODY_SIZE": MiB})
    # A body at the gateway's limit is read whole and reaches the consumer (which then wants a login).
    for framing in (declared, chunked):
        answer = send_request(server.port, *framing("POST", "/mcp/", MiB), timeout=30, refusal=False)
        assert (answer.status, answer.reason) == (406, "not_acceptable"), answer.body[:200]
        assert answer.complete
    # Other paths are the site's: its own limits apply, not the gateway's.
    answer = send_request(server.port, *declared("POST", "/admin/login/", 2 * MiB), timeout=30, refusal=False)
    assert answer.complete
    assert answer.status != 413 and answer.reason is None, answer.body[:200]


SLOW = {"MCP_GATEWAY_BODY_TIMEOUT": 1.0, "MCP_GATEWAY_PING_INTERVAL": 0.25}


@pytest.mark.parametrize("part", ["body", "headers"])
@pytest.mark.django_db(transaction=True)
def test_a_request_that_trickles_in_gets_408(start_daphne: Any, part: str) -> None:
    server = start_daphne(overrides=SLOW)
    if part == "body":
        head, pieces = request_head("POST", "/mcp/", "Content-Length: 200"), [b"x"] * 200
    else:
        head, pieces = b"POST /mcp/ HTTP/1.1\r\n", [bytes([c]) for c in b"Host: 127.0.0.1\r\nX-Slow: " + b"a" * 200]
    # A byte every 0.1 s: never idle, 20 s in all.
    answer = send_request(server.port, head, pieces, pause=0.1, timeout=30)
    assert (answer.status, answer.reason) == (408, "request_timeout"), answer.body[:200]
    assert not answer.complete, "answered only once the request had arrived"
    assert answer.closed
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.django_db(transaction=True)
async def test_streams_and_idle_connections_outlive_the_request_bound(
    start_daphne: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides=SLOW)
    async with (
        httpx2.AsyncClient(timeout=10) as http,
        http.stream("GET", f"{server.url}/mcp/sse", headers=alice_headers) as response,
    ):
        assert response.status_code == 200
        opened, outlived = time.monotonic(), False
        with anyio.fail_after(20):
            async for line in response.aiter_lines():
                if line.startswith(": ping") and time.monotonic() - opened > 3.0:
                    outlived = True  # three times the bound, and the stream still carries pings
                    break
        assert outlived, "the stream ended"
    # A kept-alive connection idle for longer than the bound between two requests: the bound is per request.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for request in range(2):
            if request:
                time.sleep(1.5)
            sock.sendall(request_head("GET", "/mcp/", "Accept: text/event-stream"))
            status, _, body = read_answer(sock, time.monotonic() + 10)
            assert status == 401, body


@pytest.mark.django_db(transaction=True)
async def test_sigterm_closes_the_sessions_while_a_request_is_still_arriving(
    start_daphne: Any, alice: Any, alice_headers: dict[str, str]
) -> None:
    # A connection whose request has not arrived has no application yet: shutdown must not trip over it.
    server = start_daphne()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as arriving:
        arriving.sendall(request_head("POST", "/mcp/", "Content-Length: 100"))  # and the body never comes
        async with httpx2.AsyncClient(timeout=10) as http, raw_stream(http, f"{server.url}/mcp/sse", alice_headers):
            assert await McpSession.objects.open().filter(user=alice).acount() == 1
            await asyncio.to_thread(server.stop, signal.SIGTERM)
    reasons = [r async for r in McpSession.objects.filter(user=alice).values_list("close_reason", flat=True)]
    assert reasons == [CloseReason.SERVER_SHUTDOWN]


def test_the_access_log_of_an_application_without_django_settings_is_redacted_and_holds_no_traceback() -> None:
    # Any ASGI application under the launcher: no DJANGO_SETTINGS_MODULE, so no settings to read the cookie names
    # from; the access log (verbosity 1: to the output) still blanks secrets, Django's default cookie names too.
    server = Launcher("tests.asgi_helpers:bare_app", env={"DJANGO_SETTINGS_MODULE": None}, name="bare")
    secrets = ["Sess10n-5ecret", "T1cket-5ecret", "Enc0ded-5ecret", "C00kie-5ecret"]
    paths = [
        f"/mcp/messages/?session_id={secrets[0]}",
        f"/mcp/sse?x=1&ticket={secrets[1]}",
        f"/mcp/messages/?session%5Fid={secrets[2]}",
        f"/login?sessionid={secrets[3]}",
        "/plain/path",
    ]
    try:
        with httpx2.Client(timeout=10) as http:
            for path in paths:
                assert http.get(server.url + path).text == "ok"
    finally:
        server.stop()
    log = server.log()
    assert '"GET /plain/path" 200' in log, log
    assert log.count("[redacted]") == 4, log
    assert "Traceback" not in log and "ImproperlyConfigured" not in log, log
    leaked = [secret for secret in secrets if secret in log]
    assert not leaked, log


def test_an_access_log_to_the_null_device_writes_nothing(tmp_path: Any) -> None:
    with open(os.devnull, "w") as null, open(tmp_path / "access.log", "w") as real:
        assert RedactingAccessLog(null).discard and not RedactingAccessLog(real).discard
