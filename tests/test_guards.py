"""Transport guards, driven in-process as plain ASGI middleware."""

from __future__ import annotations

import pytest
from django.test import override_settings

from mcp_gateway.guards import BodySizeGuard, Checks, ContentTypeGuard, HostGuard, OriginGuard, guard
from mcp_gateway.routing import McpRouter, Mount

from .asgi_helpers import Downstream, Recorder, http_scope

ORIGIN_CASES = [
    ("no-origin", None, (), True),
    ("same-origin", "http://127.0.0.1:8000", (), True),
    ("same-host-other-port", "http://127.0.0.1:9000", (), False),
    ("same-host-https", "https://127.0.0.1:8000", (), False),
    ("foreign", "http://evil.example", (), False),
    ("null", "null", (), False),
    ("allowlisted", "https://app.example", ("https://app.example",), True),
    ("allowlist-is-exact", "https://app.example.evil", ("https://app.example",), False),
    ("wildcard", "http://evil.example", ("*",), True),
]


@pytest.mark.parametrize(
    ("origin", "allowed", "passes"), [c[1:] for c in ORIGIN_CASES], ids=[c[0] for c in ORIGIN_CASES]
)
async def test_origin_guard(origin: str | None, allowed: tuple[str, ...], passes: bool) -> None:
    downstream = Downstream()
    recorder = Recorder()
    headers = [("origin", origin)] if origin else []
    with override_settings(MCP_GATEWAY_ALLOWED_ORIGINS=allowed):
        await OriginGuard(downstream)(http_scope(headers=headers), recorder.receive, recorder.send)
    assert downstream.called is passes
    if not passes:
        assert (recorder.status, recorder.reason) == (403, "origin_not_allowed")


HOST_CASES = [
    ("allowed", "127.0.0.1:8000", True),
    ("allowed-localhost", "localhost", True),
    ("foreign", "evil.example", False),
    ("rebinding-lookalike", "127.0.0.1.evil.example", False),
    ("garbage", "bad host!", False),
]


@pytest.mark.parametrize(("host", "passes"), [c[1:] for c in HOST_CASES], ids=[c[0] for c in HOST_CASES])
async def test_host_guard(host: str, passes: bool) -> None:
    downstream = Downstream()
    recorder = Recorder()
    await HostGuard(downstream)(http_scope(host=host), recorder.receive, recorder.send)
    assert downstream.called is passes
    if not passes:
        assert (recorder.status, recorder.reason) == (421, "host_not_allowed")


async def test_a_remembered_host_is_forgotten_when_allowed_hosts_change() -> None:
    async def passes(host: str) -> bool:
        downstream, recorder = Downstream(), Recorder()
        await HostGuard(downstream)(http_scope(host=host), recorder.receive, recorder.send)
        return downstream.called

    with override_settings(ALLOWED_HOSTS=["api.example"]):
        assert await passes("api.example")
        assert await passes("api.example")  # remembered
    with override_settings(ALLOWED_HOSTS=["other.example"]):
        assert not await passes("api.example")


CONTENT_TYPE_CASES = [
    ("json", "POST", "application/json", True),
    ("json-with-charset", "POST", "application/json; charset=utf-8", True),
    ("json-uppercase", "POST", "Application/JSON", True),
    ("text", "POST", "text/plain", False),
    ("missing", "POST", None, False),
    ("get-needs-none", "GET", None, True),
]


@pytest.mark.parametrize(
    ("method", "content_type", "passes"), [c[1:] for c in CONTENT_TYPE_CASES], ids=[c[0] for c in CONTENT_TYPE_CASES]
)
async def test_content_type_guard(method: str, content_type: str | None, passes: bool) -> None:
    downstream = Downstream()
    recorder = Recorder()
    headers = [("content-type", content_type)] if content_type else []
    await ContentTypeGuard(downstream)(http_scope(method, headers=headers), recorder.receive, recorder.send)
    assert downstream.called is passes
    if not passes:
        assert (recorder.status, recorder.reason) == (415, "unsupported_media_type")


@override_settings(MCP_GATEWAY_MAX_BODY_SIZE=100)
async def test_body_size_guard_refuses_declared_length_without_reading() -> None:
    downstream = Downstream()
    recorder = Recorder([b"x" * 101])
    scope = http_scope("POST", headers=[("content-length", "101")])
    await BodySizeGuard(downstream)(scope, recorder.receive, recorder.send)
    assert not downstream.called
    assert recorder.received == 0
    assert (recorder.status, recorder.reason) == (413, "payload_too_large")


@override_settings(MCP_GATEWAY_MAX_BODY_SIZE=100)
async def test_body_size_guard_stops_a_streamed_body_at_the_limit() -> None:
    downstream = Downstream()
    recorder = Recorder([b"x" * 40] * 10)
    await BodySizeGuard(downstream)(http_scope("POST"), recorder.receive, recorder.send)
    assert recorder.received == 3, "reading stops at the first chunk past the limit"
    assert len(downstream.body) == 80
    assert (recorder.status, recorder.reason) == (413, "payload_too_large")
    assert [m["type"] for m in recorder.sent] == ["http.response.start", "http.response.body"]


@override_settings(MCP_GATEWAY_MAX_BODY_SIZE=100)
async def test_body_size_guard_passes_a_body_at_the_limit() -> None:
    downstream = Downstream()
    recorder = Recorder([b"x" * 50, b"x" * 50])
    await BodySizeGuard(downstream)(http_scope("POST"), recorder.receive, recorder.send)
    assert downstream.body == b"x" * 100
    assert recorder.status == 200


async def test_guards_leave_other_scope_types_alone() -> None:
    calls = []

    async def app(scope: dict, receive: object, send: object) -> None:
        calls.append(scope["type"])

    stack = guard(app)
    await stack({"type": "lifespan"}, None, None)
    await stack({"type": "websocket", "headers": [], "path": "/ws"}, None, None)
    assert calls == ["lifespan", "websocket"]


# (id, host, headers, method, expected status): each request breaks several rules; the first guard decides.
ORDER_CASES = [
    ("host-before-origin", "evil.example", [("origin", "http://evil.example")], "GET", 421),
    ("origin-before-content-type", "127.0.0.1:8000", [("origin", "http://evil.example")], "POST", 403),
    (
        "content-type-before-body-size",
        "127.0.0.1:8000",
        [("content-type", "text/plain"), ("content-length", str(10**9))],
        "POST",
        415,
    ),
    (
        "body-size-last",
        "127.0.0.1:8000",
        [("content-type", "application/json"), ("content-length", str(10**9))],
        "POST",
        413,
    ),
]


@pytest.mark.parametrize(
    ("host", "headers", "method", "status"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES]
)
async def test_default_guards_run_in_their_documented_order(
    host: str, headers: list[tuple[str, str]], method: str, status: int
) -> None:
    downstream, recorder = Downstream(), Recorder()
    await guard(downstream)(http_scope(method, host=host, headers=headers), recorder.receive, recorder.send)
    assert not downstream.called
    assert recorder.status == status


def test_consecutive_check_only_guards_are_one_middleware() -> None:
    stack = guard(Downstream())
    assert isinstance(stack, Checks)
    assert [type(g) for g in stack.guards] == [HostGuard, OriginGuard, ContentTypeGuard]
    assert isinstance(stack.app, BodySizeGuard)


BODILESS_CASES = [
    ("get-declared", "GET", "10", False),
    ("delete-declared", "DELETE", "10", False),
    ("get-empty", "GET", "0", True),
    ("get-undeclared", "GET", None, True),
]


@pytest.mark.parametrize(
    ("method", "length", "passes"), [c[1:] for c in BODILESS_CASES], ids=[c[0] for c in BODILESS_CASES]
)
async def test_body_size_guard_refuses_a_body_on_a_method_that_takes_none(
    method: str, length: str | None, passes: bool
) -> None:
    downstream = Downstream()
    recorder = Recorder([b"x" * 10] if length and length != "0" else [b""])
    headers = [("content-length", length)] if length is not None else []
    await BodySizeGuard(downstream)(http_scope(method, "/mcp/", headers=headers), recorder.receive, recorder.send)
    assert downstream.called is passes
    if not passes:
        assert recorder.received == 0, "refused unread"
        assert (recorder.status, recorder.reason) == (400, "body_not_allowed")


async def test_body_size_guard_passes_the_servers_own_send_on() -> None:
    # Backpressure under daphne looks through ``send`` to daphne's request (mcp_gateway.flow): a wrapper hides it.
    seen = []

    async def app(scope: dict, receive: object, send: object) -> None:
        seen.append(send)

    recorder = Recorder()
    for method in ("GET", "POST"):
        await BodySizeGuard(app)(http_scope(method, "/mcp/"), recorder.receive, recorder.send)
    assert seen == [recorder.send, recorder.send]


# The consumers hold no more than the limit, and no body at all for GET and DELETE, even without the guards
# (a site may replace them): mounted with guards=(), driven in-process.


def unguarded() -> McpRouter:
    return McpRouter(Downstream(), [Mount("/mcp/", "tests.servers.lowlevel")], guards=())


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_streamable_http_get_and_delete_refuse_a_body_before_anything_else(method: str) -> None:
    recorder = Recorder([b"x" * 10, b"x" * 10])
    headers = [("accept", "text/event-stream")]
    await unguarded()(http_scope(method, "/mcp/", headers=headers), recorder.receive, recorder.send)
    assert recorder.received == 1, "refused at the first chunk"
    assert (recorder.status, recorder.reason) == (400, "body_not_allowed")


@override_settings(MCP_GATEWAY_MAX_BODY_SIZE=100)
@pytest.mark.parametrize("path", ["/mcp/", "/mcp/messages/"])
async def test_consumers_hold_no_more_of_a_post_body_than_the_limit(path: str) -> None:
    recorder = Recorder([b"x" * 40] * 10)
    headers = [("accept", "application/json, text/event-stream"), ("content-type", "application/json")]
    scope = http_scope("POST", path, headers=headers, query="session_id=" + "a" * 43)
    await unguarded()(scope, recorder.receive, recorder.send)
    assert recorder.received == 3, "reading stops at the first chunk past the limit"
    assert (recorder.status, recorder.reason) == (413, "payload_too_large")


async def test_the_site_origin_is_remembered_and_forgotten_when_settings_change() -> None:
    """A browser sends the same Origin on every POST: the second one builds no Django request."""

    async def passes(origin: str, **headers: str) -> tuple[bool, bool]:
        downstream, recorder = Downstream(), Recorder()
        scope = http_scope("POST", headers=[("origin", origin), *headers.items()])
        await OriginGuard(downstream)(scope, recorder.receive, recorder.send)
        return downstream.called, "django_request" in scope["mcp_gateway.request"].__dict__

    with override_settings(MCP_GATEWAY_ALLOWED_ORIGINS=()):  # a settings change: nothing remembered yet
        assert await passes("http://127.0.0.1:8000") == (True, True)
        assert await passes("http://127.0.0.1:8000") == (True, False)  # remembered
        assert await passes("https://127.0.0.1:8000") == (False, False)  # the remembered origin is http's
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert await passes("https://127.0.0.1:8000", **{"x-forwarded-proto": "https"}) == (True, True)
        assert await passes("http://127.0.0.1:8000", **{"x-forwarded-proto": "https"}) == (False, False)
        assert await passes("http://127.0.0.1:8000") == (True, True)
    with override_settings(ALLOWED_HOSTS=["other.example"]):
        assert await passes("http://127.0.0.1:8000") == (False, True)
