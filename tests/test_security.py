"""Every refusal the gateway makes, one case each, against a real daphne.

Each POST case carries a real ``tools/call`` of ``add_note`` unless the case is
about the body itself, so a refusal that still reached the MCP server would
leave a note behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest

from demo.models import Note
from mcp_gateway.http import request_id_of
from mcp_sessions.ids import new_session_id

from .clients import RawStream, handshake, jsonrpc, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)

ADD_NOTE = json.dumps(jsonrpc("tools/call", {"name": "add_note", "arguments": {"title": "injected"}}, id=7)).encode()
EVIL = "http://evil.example"
LIMIT = 4 * 1024 * 1024


@dataclass
class Ctx:
    url: str
    endpoint: str
    alice: dict[str, str]
    bob: dict[str, str]

    @property
    def origin(self) -> str:
        return self.url


@dataclass
class Case:
    id: str
    method: str
    path: Callable[[Ctx], str]
    headers: Callable[[Ctx], dict[str, str]]
    status: int
    reason: str | None = None
    # None: ADD_NOTE for a POST, no body for the other methods (which take none).
    body: bytes | Callable[[], Any] | None = None
    content_type: str | None = "application/json"
    extra: dict[str, str] = field(default_factory=dict)


def endpoint(ctx: Ctx) -> str:
    return ctx.endpoint


def alice(ctx: Ctx) -> dict[str, str]:
    return ctx.alice


def alice_no_csrf(ctx: Ctx) -> dict[str, str]:
    return {"Cookie": ctx.alice["Cookie"].split(";")[0]}


def nobody(ctx: Ctx) -> dict[str, str]:
    return {}


async def oversize_stream() -> AsyncIterator[bytes]:
    chunk = b" " * 65536
    for _ in range(LIMIT // len(chunk) + 2):
        yield chunk


CASES = [
    Case("get-sse-without-credential", "GET", lambda c: "/mcp/sse", nobody, 401, "authentication_required"),
    Case(
        "get-sse-with-unknown-login-cookie",
        "GET",
        lambda c: "/mcp/sse",
        lambda c: {"Cookie": "sessionid=notarealsession"},
        401,
        "authentication_required",
    ),
    Case("post-without-credential", "POST", endpoint, nobody, 401, "authentication_required"),
    Case("post-missing-session-id", "POST", lambda c: "/mcp/messages/", alice, 400, "missing_session_id"),
    Case("post-empty-session-id", "POST", lambda c: "/mcp/messages/?session_id=", alice, 400, "missing_session_id"),
    Case(
        "post-malformed-session-id",
        "POST",
        lambda c: "/mcp/messages/?session_id=abc",
        alice,
        400,
        "malformed_session_id",
    ),
    Case(
        "post-repeated-session-id",
        "POST",
        lambda c: c.endpoint + "&" + c.endpoint.split("?")[1],
        alice,
        400,
        "malformed_session_id",
    ),
    Case(
        "post-unknown-session-id",
        "POST",
        lambda c: f"/mcp/messages/?session_id={new_session_id()}",
        alice,
        404,
        "session_not_found",
    ),
    Case("post-foreign-session-id", "POST", endpoint, lambda c: c.bob, 404, "session_not_found"),
    Case(
        "post-session-of-other-mount",
        "POST",
        lambda c: c.endpoint.replace("/mcp/", "/mcp-test/"),
        alice,
        404,
        "session_not_found",
    ),
    Case("post-invalid-json", "POST", endpoint, alice, 400, "parse_error", body=b'{"jsonrpc": '),
    Case("post-not-jsonrpc", "POST", endpoint, alice, 400, "invalid_message", body=b'{"hello": "world"}'),
    Case("post-text-plain", "POST", endpoint, alice, 415, "unsupported_media_type", content_type="text/plain"),
    Case(
        "post-form-encoded",
        "POST",
        endpoint,
        alice,
        415,
        "unsupported_media_type",
        content_type="application/x-www-form-urlencoded",
    ),
    Case("post-no-content-type", "POST", endpoint, alice, 415, "unsupported_media_type", content_type=None),
    Case("post-oversize-declared", "POST", endpoint, alice, 413, "payload_too_large", body=b" " * (LIMIT + 1)),
    Case("post-oversize-streamed", "POST", endpoint, alice, 413, "payload_too_large", body=oversize_stream),
    Case(
        "get-sse-foreign-origin",
        "GET",
        lambda c: "/mcp/sse",
        lambda c: {**c.alice, "Origin": EVIL},
        403,
        "origin_not_allowed",
    ),
    Case(
        "get-sse-null-origin",
        "GET",
        lambda c: "/mcp/sse",
        lambda c: {**c.alice, "Origin": "null"},
        403,
        "origin_not_allowed",
    ),
    Case("post-foreign-origin", "POST", endpoint, lambda c: {**c.alice, "Origin": EVIL}, 403, "origin_not_allowed"),
    Case(
        "post-foreign-origin-with-csrf-trusted-lookalike",
        "POST",
        endpoint,
        lambda c: {**c.alice, "Origin": c.origin.replace("127.0.0.1", "localhost")},
        403,
        "origin_not_allowed",
    ),
    Case(
        "get-sse-foreign-host",
        "GET",
        lambda c: "/mcp/sse",
        lambda c: {**c.alice, "Host": "evil.example"},
        421,
        "host_not_allowed",
    ),
    Case("post-foreign-host", "POST", endpoint, lambda c: {**c.alice, "Host": "evil.example"}, 421, "host_not_allowed"),
    Case("post-cookie-without-csrf-token", "POST", endpoint, alice_no_csrf, 403, "csrf_failed"),
    Case(
        "post-cookie-with-wrong-csrf-token",
        "POST",
        endpoint,
        lambda c: {**c.alice, "X-CSRFToken": "x" * 32},
        403,
        "csrf_failed",
    ),
    Case("post-cookie-with-csrf-token", "POST", endpoint, alice, 202),
    Case("post-same-origin-with-csrf-token", "POST", endpoint, lambda c: {**c.alice, "Origin": c.origin}, 202),
    Case("get-sse-same-origin", "GET", lambda c: "/mcp/sse", lambda c: {**c.alice, "Origin": c.origin}, 200),
    Case("get-messages", "GET", endpoint, alice, 405, "method_not_allowed"),
    Case("post-sse", "POST", lambda c: "/mcp/sse", alice, 405, "method_not_allowed"),
    Case("delete-sse", "DELETE", lambda c: "/mcp/sse", alice, 405, "method_not_allowed"),
    Case("get-unknown-path", "GET", lambda c: "/mcp/nothing-here", alice, 404, "not_found"),
    Case("get-sse-with-body", "GET", lambda c: "/mcp/sse", alice, 400, "body_not_allowed", body=ADD_NOTE),
    Case("get-streamable-with-body", "GET", lambda c: "/mcp/", alice, 400, "body_not_allowed", body=ADD_NOTE),
    Case("delete-streamable-with-body", "DELETE", lambda c: "/mcp/", alice, 400, "body_not_allowed", body=ADD_NOTE),
]


@pytest.fixture
async def stream(daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]) -> AsyncIterator[RawStream]:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, daphne.url, stream, alice_headers)
        yield stream


# Refusals decided before the body is read (the guards, the routing): their answer cannot carry the request's id.
PRE_BODY_REASONS = frozenset(
    {
        "host_not_allowed",
        "origin_not_allowed",
        "unsupported_media_type",
        "payload_too_large",
        "body_not_allowed",
        "method_not_allowed",
        "not_found",
    }
)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_status(
    case: Case,
    daphne: Any,
    http: httpx2.AsyncClient,
    stream: RawStream,
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
) -> None:
    ctx = Ctx(url=daphne.url, endpoint=stream.endpoint, alice=alice_headers, bob=bob_headers)
    headers = dict(case.headers(ctx))
    if case.content_type:
        headers["Content-Type"] = case.content_type
    body = case.body() if callable(case.body) else case.body
    if body is None and case.method == "POST":
        body = ADD_NOTE
    request = http.build_request(case.method, daphne.url + case.path(ctx), headers=headers, content=body)
    if case.method == "GET" and case.status == 200:
        response = await http.send(request, stream=True)
        await response.aclose()
    else:
        response = await http.send(request)

    assert response.status_code == case.status, response.text
    if case.reason is not None:
        assert response.headers["content-type"] == "application/json"
        error = response.json()
        # The request's id once its body arrived whole; null for what is refused before the body is read.
        expected_id = None if case.reason in PRE_BODY_REASONS or not body else request_id_of(body)
        assert error["jsonrpc"] == "2.0" and error["id"] == expected_id
        assert error["error"]["data"]["reason"] == case.reason
        assert isinstance(error["error"]["code"], int) and error["error"]["message"]
    if case.status == 401:
        # The OAuth challenge (RFC 9728: where the resource's metadata is, the scope to ask for) on an OAuth mount,
        # then the login cookie's hint.
        assert re.fullmatch(
            r'Bearer realm="mcp", resource_metadata="http://127\.0\.0\.1:\d+/\.well-known/oauth-protected-resource/'
            r'[a-z-]+", scope="mcp", Cookie realm="mcp", cookie-name="sessionid"',
            response.headers["www-authenticate"],
        ), response.headers["www-authenticate"]
    if case.status == 405:
        assert response.headers["allow"] in ("GET", "POST")
    if case.status not in (200, 202):
        assert await Note.objects.acount() == 0, "a refused request reached the MCP server"
    else:
        assert response.headers["cache-control"] == "no-store"


async def test_foreign_and_unknown_sessions_are_indistinguishable(
    daphne: Any, http: httpx2.AsyncClient, stream: RawStream, bob_headers: dict[str, str]
) -> None:
    headers = {**bob_headers, "Content-Type": "application/json"}
    foreign = await http.post(daphne.url + stream.endpoint, headers=headers, content=ADD_NOTE)
    unknown = await http.post(
        f"{daphne.url}/mcp/messages/?session_id={new_session_id()}", headers=headers, content=ADD_NOTE
    )
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.content == unknown.content

    def comparable(response: httpx2.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k != "date"}

    assert comparable(foreign) == comparable(unknown)


async def test_foreign_session_is_logged_as_security_event_without_the_id(
    daphne: Any, http: httpx2.AsyncClient, stream: RawStream, bob_headers: dict[str, str]
) -> None:
    headers = {**bob_headers, "Content-Type": "application/json"}
    response = await http.post(daphne.url + stream.endpoint, headers=headers, content=ADD_NOTE)
    assert response.status_code == 404
    # Recorded after the answer (so that it answers as fast as an unknown session): wait for the line.
    with anyio.fail_after(5):
        while "WARNING mcp_gateway.security.SessionNotFound: foreign_session user=" not in (log := daphne.log()):
            await anyio.sleep(0.02)
    assert stream.session_id not in log
