"""Transport guards, driven in-process as plain ASGI middleware."""

from __future__ import annotations

import pytest
from django.test import override_settings

from mcp_gateway.guards import BodySizeGuard, ContentTypeGuard, HostGuard, OriginGuard, guard

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
