"""A bounded, seeded fuzz of every route against a real launcher: malformed requests get 4xx, never a 5xx.

Thousands of requests, each wrong in some way (bad JSON, wrong JSON-RPC types,
deep and long JSON, invalid UTF-8, NUL bytes, odd or duplicated headers, wrong
methods, bodies on GET and DELETE), go to both transports and the tickets
endpoint of a launcher of this test's own, some of them into real open sessions.
Afterwards the worker has answered none of them with a 5xx, logged no
traceback, kept its memory bounded, and still serves a normal client.
Requests are written on raw sockets, since an HTTP client library refuses to
send most of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async

from mcp_sessions.models import AccessToken

from .clients import INITIALIZE, INITIALIZED, RawStream, handshake, jsonrpc, mcp_client, poll, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)

# Fixed, so every run sends the same requests; MCP_TEST_FUZZ_SEED explores others (a failure names its request).
SEED = int(os.environ.get("MCP_TEST_FUZZ_SEED", "20261212"))
REQUESTS = 2400
CONCURRENCY = 4
MiB = 1024 * 1024
OVERRIDES = {
    # Garbage must reach the transports, not stop at the per-user limits (which answer 429 before parsing).
    "MCP_GATEWAY_RATE_LIMIT": None,
    "MCP_GATEWAY_MAX_SESSIONS_PER_USER": None,
}


@dataclass
class Target:
    """What the fuzz knows about its server: where it is, real sessions in it, and credentials for it."""

    host: bytes
    streamable_session: str
    sse_session: str
    auth: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)


def header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in headers.items()]


def deep(levels: int, rng: random.Random) -> bytes:
    """JSON nested ``levels`` deep: arrays, objects, or (unclosed) just the openings."""
    shape = rng.choice(["array", "object", "unclosed"])
    if shape == "array":
        return b"[" * levels + b"]" * levels
    if shape == "object":
        return b'{"a":' * levels + b"1" + b"}" * levels
    return b"[" * levels


def junk_value(rng: random.Random) -> Any:
    """A JSON value of a type a JSON-RPC field does not expect."""
    return rng.choice(
        [None, True, False, 0, -1, 1.5, 10**40, -(10**40), "", "x" * rng.randint(1, 3000), [], [1, "a"], {}, {"a": {}}]
    )


def body_for(rng: random.Random) -> bytes:
    """One malformed (or merely surprising) JSON-RPC body, at most a few KiB except deep nesting."""
    kind = rng.randrange(22)
    if kind == 0:  # not JSON at all
        return rng.choice(
            [b"", b"{", b"[", b"}", b"nul", b'{"jsonrpc":', b"\x00" * 16, b"[1,]", b"{'a': 1}", b"\xef\xbb\xbf{}"]
        )
    if kind == 1:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 2048)))
    if kind == 2:  # invalid UTF-8 inside otherwise valid JSON
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
        return b'{"jsonrpc":"2.0","id":1,"method":"tools/' + bad + b'list"}'
    if kind == 3:  # NUL bytes and escapes
        return rng.choice(
            [
                b'{"jsonrpc":"2.0","id":1,"method":"tools/list\x00"}',
                b'{"jsonrpc":"2.0","id":1,"method":"tools/list\\u0000"}',
                b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
                b'{"jsonrpc":"2.0","id":1,"method":"ping"}\x00',
            ]
        )
    if kind == 4:  # deep nesting, alone or as params
        levels = rng.choice([1000, 10_000])
        if rng.random() < 0.5:
            return deep(levels, rng)
        return b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":' + (
            deep(levels, rng) + b"}}}"
        )
    if kind == 5:  # long JSON: many keys, long arrays, long strings
        shape = rng.randrange(3)
        if shape == 0:
            params: Any = {f"k{n}": n for n in range(rng.randint(100, 400))}
        elif shape == 1:
            params = list(range(rng.randint(100, 1500)))
        else:
            params = {"name": "echo", "arguments": {"text": "y" * rng.randint(1000, 4000)}}
        return json.dumps(jsonrpc(rng.choice(["tools/call", "ping", "tools/list", "nope"]), params)).encode()
    if kind == 6:  # wrong types in each field
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        message[rng.choice(["jsonrpc", "id", "method", "params"])] = junk_value(rng)
        return json.dumps(message).encode()
    if kind == 7:  # fields missing or extra
        message = {"jsonrpc": "2.0", "id": 1, "method": "ping", "result": {}, "error": {"code": 1}}
        for name in rng.sample(list(message), rng.randint(1, 4)):
            del message[name]
        return json.dumps(message).encode()
    if kind == 8:  # unknown or odd methods
        method = rng.choice(["", "foo/bar", "rpc.discover", "tools/", "../tools/list", "notifications/", "x" * 500])
        return json.dumps(jsonrpc(method, junk_value(rng) if rng.random() < 0.5 else {})).encode()
    if kind == 9:  # responses and errors answering nothing
        answer = rng.choice(
            [
                {"jsonrpc": "2.0", "id": rng.randint(-5, 10**6), "result": {}},
                {"jsonrpc": "2.0", "id": "nothing", "result": junk_value(rng)},
                {"jsonrpc": "2.0", "id": 3, "error": {"code": "x", "message": 5}},
                {"jsonrpc": "2.0", "id": 3, "error": {"code": -32000, "message": "no", "data": junk_value(rng)}},
                {"jsonrpc": "2.0", "id": None, "result": {}},
            ]
        )
        return json.dumps(answer).encode()
    if kind == 10:  # notifications with bad params
        method = rng.choice(
            [
                "notifications/cancelled",
                "notifications/progress",
                "notifications/initialized",
                "notifications/roots/list_changed",
                "notifications/message",
            ]
        )
        params = rng.choice([junk_value(rng), {"requestId": junk_value(rng)}, {"progressToken": {}, "progress": "x"}])
        return json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode()
    if kind == 11:  # huge and odd ids
        request_id = rng.choice([10**400, -(10**400), 1e308, "i" * 3000, 2**63, -(2**63) - 1, 0.0])
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "ping"}).encode()
    if kind == 12:  # numbers Python's json accepts and strict parsers do not
        return rng.choice(
            [
                b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
                b'{"jsonrpc":"2.0","id":Infinity,"method":"ping"}',
                b'{"jsonrpc":"2.0","id":1e99999,"method":"ping"}',
                b'{"jsonrpc":"2.0","id":-0,"method":"ping"}',
                b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping","method":"tools/list"}',
            ]
        )
    if kind == 13:  # batches
        items = [rng.choice([1, "x", {}, [], None, jsonrpc("ping", id=n)]) for n in range(rng.randint(0, 60))]
        return json.dumps(items).encode()
    if kind == 14:  # initialize with bad params
        params = {"protocolVersion": junk_value(rng), "capabilities": junk_value(rng), "clientInfo": junk_value(rng)}
        return json.dumps(jsonrpc("initialize", params, id=rng.choice([0, "init", None]))).encode()
    if kind == 15:  # tool calls with bad params
        params = rng.choice(
            [
                {"name": junk_value(rng)},
                {"name": "echo", "arguments": junk_value(rng)},
                {"name": "no-such-tool", "arguments": {}},
                {"arguments": {"text": "x"}},
                {"name": "echo", "arguments": {"text": junk_value(rng)}, "_meta": junk_value(rng)},
            ]
        )
        return json.dumps(jsonrpc("tools/call", params, id=rng.randint(1, 10**9))).encode()
    if kind == 16:  # server/discover and the 2026-07-28 _meta with junk
        meta = {
            "io.modelcontextprotocol/protocolVersion": junk_value(rng),
            "io.modelcontextprotocol/clientInfo": junk_value(rng),
        }
        return json.dumps(jsonrpc(rng.choice(["server/discover", "tools/list"]), {"_meta": meta})).encode()
    if kind == 17:  # a JSON scalar, not an object
        return json.dumps(junk_value(rng)).encode()
    if kind == 18:  # valid JSON in UTF-16 or with a BOM
        text = json.dumps(jsonrpc("ping"))
        return rng.choice([text.encode("utf-16"), text.encode("utf-32"), b"\xef\xbb\xbf" + text.encode()])
    if kind == 19:  # well-formed requests the session may or may not accept
        method = rng.choice(["ping", "tools/list", "resources/list", "prompts/list", "logging/setLevel"])
        return json.dumps(jsonrpc(method, {"level": "debug"} if method == "logging/setLevel" else None)).encode()
    if kind == 20:  # trailing garbage and several messages
        return json.dumps(jsonrpc("ping")).encode() + rng.choice([b"x", b"\n{}", b" " * 100, b'{"jsonrpc":"2.0"}'])
    return b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"progressToken":' + deep(200, rng) + b"}}}"


ODD_HEADER_VALUES: dict[bytes, list[bytes]] = {
    b"Content-Type": [
        b"text/plain",
        b"application/json; charset=latin-1",
        b"application/json; charset=utf-16",
        b"multipart/form-data; boundary=x",
        b"application/x-www-form-urlencoded",
        b"application/json\x7f",
        b"application/" + b"j" * 3000,
        b"",
    ],
    b"Accept": [
        b"*/*",
        b"text/event-stream",
        b"application/json",
        b"application/json;q=0, text/event-stream;q=0",
        b"\xff\xfe",
        b"",
    ],
    b"MCP-Protocol-Version": [
        b"",
        b"garbage",
        b"2025-11-25",
        b"2026-07-28",
        b"1999-01-01",
        b"2025-11-25, 2025-06-18",
        b"v" * 2000,
        b"\xc3\x28",
    ],
    b"Last-Event-ID": [
        b"",
        b"..",
        b"x.1.2",
        b"aaaaaaaaaaaa.0.-1",
        b"aaaaaaaaaaaa.99999999999999999999999.1",
        b"aaaaaaaaaaaa.0.1e9",
        b"\xff.0.1",
        b"a" * 3000,
    ],
    b"Mcp-Session-Id": [b"", b"A" * 43, b"A" * 3000, b"../../etc", b"\xff\xfe", b" "],
    b"Origin": [b"null", b"http://evil.example", b"garbage", b"http://127.0.0.1:1", b"\xff"],
    b"Cookie": [b"sessionid=garbage", b"sessionid=", b";;;", b"csrftoken=a; csrftoken=b", b"\xff=\xfe"],
    b"Authorization": [
        b"Bearer",
        b"Bearer ",
        b"Bearer mcp_" + b"A" * 43,
        b"Basic YWxpY2U6eA==",
        b"Bearer a b c",
        b"bearer \xff",
        b"Bearer " + b"x" * 3000,
    ],
    b"X-CSRFToken": [b"", b"wrong", b"\xff", b"x" * 3000],
    b"Host": [b"evil.example", b"", b"127.0.0.1:1", b"h" * 2000],
    b"X-Forwarded-For": [b"1.2.3.4", b"garbage", b"::1, 1.1.1.1"],
    b"Content-Encoding": [b"gzip", b"br"],
    b"Expect": [b"100-continue"],
}


@dataclass
class Case:
    label: str
    data: bytes


class Fuzzer:
    """Writes the requests: seeded, so a failure can be replayed by its number."""

    def __init__(self, target: Target, seed: int) -> None:
        self.target = target
        self.rng = random.Random(seed)

    def case(self) -> Case:
        rng = self.rng
        route = rng.choices(
            ["streamable", "sse-messages", "sse-stream", "tickets", "wrong-method", "odd-path"],
            weights=[40, 25, 10, 10, 10, 5],
        )[0]
        return getattr(self, route.replace("-", "_"))()

    # One request of each route

    def streamable(self) -> Case:
        rng = self.rng
        method = rng.choices([b"POST", b"GET", b"DELETE"], weights=[70, 20, 10])[0]
        session = rng.choices(["real", "bogus", "none"], weights=[50, 25, 25])[0]
        headers = [
            *self.auth(real_session=session == "real"),
            (b"Accept", b"application/json, text/event-stream"),
            (b"Content-Type", b"application/json"),
        ]
        if session == "real":
            headers.append((b"Mcp-Session-Id", self.target.streamable_session.encode()))
        elif session == "bogus":
            headers.append((b"Mcp-Session-Id", rng.choice(ODD_HEADER_VALUES[b"Mcp-Session-Id"])))
        if method == b"DELETE" and session == "real":
            # The real session must live through the fuzz: never a DELETE it would honour.
            headers = [(n, v) for n, v in headers if n not in (b"Cookie", b"Authorization", b"X-CSRFToken")]
        body = body_for(rng) if method == b"POST" or rng.random() < 0.5 else None
        prefix = b"/mcp/" if session == "real" or rng.random() < 0.5 else b"/mcp-test/"
        return self.request(f"streamable {method.decode()} {session}", method, prefix, headers, body)

    def sse_messages(self) -> Case:
        rng = self.rng
        real = rng.random() < 0.6
        if real:
            query = f"?session_id={self.target.sse_session}"
        else:
            session_id = rng.choice(
                [
                    "A" * 43,
                    "",
                    "x" * 2000,
                    "%00",
                    "%ff%fe",
                    self.target.sse_session + "&session_id=" + "B" * 43,
                    self.target.streamable_session,  # a session of the other transport
                ]
            )
            query = rng.choice([f"?session_id={session_id}", "", "?", f"?sessionid={session_id}", "?session_id"])
        headers = [*self.auth(real_session=real), (b"Content-Type", b"application/json")]
        path = b"/mcp/messages/" + query.encode()
        return self.request(f"sse messages POST {'real' if real else 'bogus'}", b"POST", path, headers, body_for(rng))

    def sse_stream(self) -> Case:
        rng = self.rng
        query = rng.choice(
            [
                "",
                "?ticket=garbage",
                "?ticket=",
                "?ticket=" + "t" * 2000,
                "?last_event_id=garbage",
                "?last_event_id=aaaaaaaaaaaa.0.1",
                "?session_id=" + self.target.sse_session,
                "?ticket=a&ticket=b",
                "?%ff=%fe",
            ]
        )
        headers = [*self.auth(), (b"Accept", b"text/event-stream")]
        body = body_for(rng) if rng.random() < 0.3 else None
        return self.request("sse GET", b"GET", b"/mcp/sse" + query.encode(), headers, body)

    def tickets(self) -> Case:
        rng = self.rng
        headers = [*self.auth(), (b"Content-Type", b"application/json")]
        body = rng.choice([body_for(rng), b"{}", b"", b"[]", b"null", json.dumps({"origin": junk_value(rng)}).encode()])
        return self.request("tickets POST", b"POST", b"/mcp/tickets", headers, body)

    def wrong_method(self) -> Case:
        rng = self.rng
        method = rng.choice([b"PUT", b"PATCH", b"OPTIONS", b"HEAD", b"TRACE", b"PROPFIND", b"BREW", b"get", b"DELETE"])
        path = rng.choice([b"/mcp/", b"/mcp/sse", b"/mcp/messages/?session_id=" + self.target.sse_session.encode()])
        if method == b"DELETE" and path == b"/mcp/":
            path = b"/mcp/tickets"
        if method in (b"GET", b"get", b"DELETE") or rng.random() < 0.3:
            body: bytes | None = body_for(rng)
        else:
            body = None
        if rng.random() < 0.3:
            path = rng.choice([b"/mcp/tickets", b"/mcp/sse", b"/mcp/messages/"])
            method = rng.choice([b"GET", b"PUT", b"DELETE"]) if path != b"/mcp/sse" else b"POST"
        return self.request(f"wrong method {method.decode(errors='replace')}", method, path, self.auth(), body)

    def odd_path(self) -> Case:
        rng = self.rng
        path = rng.choice(
            [
                b"/mcp",
                b"/mcp/sse/",
                b"/mcp/messages",
                b"/mcp/tickets/",
                b"/mcp/%00",
                b"/mcp/../mcp/sse",
                b"/mcp//sse",
                b"/mcp/sse?" + b"q" * 3000,
                b"/mcp/%ff%fe/",
                b"/mcp/messages/?session_id=%00%00",
            ]
        )
        method = rng.choice([b"GET", b"POST", b"DELETE"])
        body = body_for(rng) if method != b"GET" or rng.random() < 0.3 else None
        return self.request("odd path", method, path, self.auth(), body)

    # The parts

    def auth(self, real_session: bool = False) -> list[tuple[bytes, bytes]]:
        """Some credential; for a request to a real session mostly the one that opened it, so garbage gets in."""
        if real_session and self.rng.random() < 0.7:
            return list(self.target.auth["alice-cookie"])
        name = self.rng.choice(list(self.target.auth))
        return list(self.target.auth[name])

    def request(
        self, label: str, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> Case:
        rng = self.rng
        headers = [(b"Host", self.target.host), *headers]
        for _ in range(rng.choice([0, 0, 1, 2, 3])):  # odd, duplicated or replaced headers
            name = rng.choice(list(ODD_HEADER_VALUES))
            value = rng.choice(ODD_HEADER_VALUES[name])
            if rng.random() < 0.5:
                headers = [(n, v) for n, v in headers if n.lower() != name.lower()]
            headers.append((name, value))
            label += f" +{name.decode()}"
        chunked = body is not None and rng.random() < 0.1
        if chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        elif body is not None:
            headers.append((b"Content-Length", str(len(body)).encode()))
        headers.append((b"Connection", b"close"))
        head = method + b" " + path + b" HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
        if not chunked:
            return Case(label, head + b"\r\n" + (body or b""))
        assert body is not None
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 512]), body[i : i + 512]) for i in range(0, len(body), 512)
        )
        return Case(label + " chunked", head + b"\r\n" + chunks + b"0\r\n\r\n")


def shown(data: bytes) -> str:
    """A request for a failure message: its request line and the start of its body, not its credentials."""
    head, _, body = data.partition(b"\r\n\r\n")
    return repr(head.split(b"\r\n", 1)[0] + b" ... " + body[:200])


async def send_raw(port: int, data: bytes, timeout: float = 15.0) -> int | None:
    """Send ``data`` on a new connection; the response's status, or None if the server closed without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with anyio.fail_after(timeout):
            with contextlib.suppress(ConnectionError):
                writer.write(data)
                await writer.drain()
            try:
                while True:
                    line = await reader.readline()
                    if not line:
                        return None
                    status = int(line.split()[1])
                    if status >= 200:
                        return status
                    while (await reader.readline()).strip():  # an interim response (100 Continue): skip it
                        pass
            except ConnectionError:
                return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def drained(stream: RawStream) -> AsyncIterator[list[tuple[str, str]]]:
    """Keep reading ``stream``'s (event, data) pairs in the background (a stream nobody reads is closed as stalled)."""
    events: list[tuple[str, str]] = []

    async def read() -> None:
        with contextlib.suppress(EOFError, TimeoutError, httpx2.HTTPError):
            while True:
                events.append(await stream.next_event(timeout=3600))

    task = asyncio.ensure_future(read())
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_thousands_of_malformed_requests_get_no_5xx_and_leave_the_worker_serving(
    start_daphne: Any,
    http: httpx2.AsyncClient,
    alice: Any,
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
) -> None:
    server = start_daphne(overrides=OVERRIDES)
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "fuzz")
    # A real Streamable HTTP session, so that some of the garbage reaches a live session.
    accept = {"Accept": "application/json, text/event-stream"}
    opened = await http.post(f"{server.url}/mcp/", json=INITIALIZE, headers={**alice_headers, **accept})
    assert opened.status_code == 200, opened.text
    streamable_session = opened.headers["mcp-session-id"]
    with_session = {**alice_headers, **accept, "Mcp-Session-Id": streamable_session}
    assert (await http.post(f"{server.url}/mcp/", json=INITIALIZED, headers=with_session)).status_code == 202

    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)
        target = Target(
            host=f"127.0.0.1:{server.port}".encode(),
            streamable_session=streamable_session,
            sse_session=stream.session_id,
            auth={
                "none": [],
                "alice-cookie": header_list(alice_headers),
                "alice-cookie-no-csrf": header_list({"Cookie": alice_headers["Cookie"]}),
                "alice-bearer": [(b"Authorization", f"Bearer {secret}".encode())],
                "bob-cookie": header_list(bob_headers),
                "bad-bearer": [(b"Authorization", b"Bearer mcp_" + b"A" * 43)],
            },
        )
        fuzzer = Fuzzer(target, SEED)
        cases = [fuzzer.case() for _ in range(REQUESTS)]
        rss_before = server.rss_bytes()

        outcomes: Counter[tuple[str, int | None]] = Counter()
        failures: list[tuple[int, str, int | None]] = []
        queue = iter(enumerate(cases))

        async def worker() -> None:
            for n, case in queue:
                status = await send_raw(server.port, case.data)
                outcomes[case.label.split(" +")[0], status] += 1
                if status is None or status >= 500:
                    failures.append((n, case.label, status))

        async with drained(stream) as events:
            with anyio.fail_after(300):
                async with anyio.create_task_group() as tg:
                    for _ in range(CONCURRENCY):
                        tg.start_soon(worker)
            growth = server.rss_bytes() - rss_before
            # The live HTTP+SSE session took all that garbage and still answers on its stream.
            pong = await http.post(
                server.url + stream.endpoint, json=jsonrpc("ping", id="after"), headers=alice_headers
            )
            assert pong.status_code == 202, pong.text

            async def answered() -> bool:
                return any(name == "message" and json.loads(data).get("id") == "after" for name, data in events)

            assert await poll(answered, bool), f"no answer to the ping on the live stream; it got {events[-5:]}"

    summary = "\n".join(f"  {count:>5} x {label}: {status}" for (label, status), count in sorted(outcomes.items()))
    print(f"\n{sum(outcomes.values())} requests; RSS grew {growth / MiB:.1f} MiB\n{summary}")
    log = server.log()
    levels = Counter(line.split(" ", 1)[0] for line in log.splitlines() if line[:1].isupper())
    print(f"log lines by level: {dict(levels)}")
    assert sum(outcomes.values()) == REQUESTS
    taken = sum(
        n for (label, status), n in outcomes.items() if " real" in label and status is not None and status < 300
    )
    assert taken >= 100, f"only {taken} requests got into the live sessions: the fuzz no longer reaches them"
    examples = "\n".join(f"  #{n} {label}: {status}\n    {shown(cases[n].data)}" for n, label, status in failures[:10])
    assert not failures, f"{len(failures)} requests got a 5xx or no answer, e.g.:\n{examples}\n{log[-4000:]}"
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 2000) : log.index("Traceback") + 4000]
    assert growth < 64 * MiB, f"the worker grew by {growth / MiB:.0f} MiB"
    # The live Streamable HTTP session too, and a normal client on each transport.
    tools = await http.post(f"{server.url}/mcp/", json=jsonrpc("tools/list", id=9), headers=with_session)
    assert tools.status_code == 200, tools.text
    for transport in ("sse", "streamable_http"):
        async with mcp_client(server.url, alice_headers, transport=transport) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"whoami", "echo"} <= names
            assert (await client.call_tool("whoami", {})).structured_content["username"] == "alice"
