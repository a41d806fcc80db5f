"""mcp_gateway.webrequest: a request that skips form parsing keeps its body as it came, and parses no args."""

from __future__ import annotations

import io

import pytest
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from mcp_gateway.webrequest import skip_form_parsing

BODY = b"a=1&b=2"


def _received(request: http.Request, content_type: bytes) -> http.Request:
    request.process = lambda: None  # type: ignore[method-assign]  # only the parsing before it is under test
    request.content = io.BytesIO()
    request.content.write(BODY)  # as the channel leaves it: the body written, positioned at its end
    request.requestHeaders.setRawHeaders(b"content-type", [content_type])
    request.requestHeaders.setRawHeaders(b"content-length", [str(len(BODY)).encode()])
    request.requestReceived(b"POST", b"/mcp/messages/?session_id=x", b"HTTP/1.1")
    return request


@pytest.mark.parametrize("content_type", [b"application/x-www-form-urlencoded", b"application/json; charset=utf-8"])
def test_a_post_body_is_not_parsed(content_type: bytes) -> None:
    request = http.Request(DummyChannel())
    skip_form_parsing(request)
    _received(request, content_type)
    assert request.args == {b"session_id": [b"x"]}  # the query string only
    assert request.content.read() == BODY


def test_twisted_parses_a_form_body_otherwise() -> None:
    """What the switch turns off (so the test above can fail)."""
    request = _received(http.Request(DummyChannel()), b"application/x-www-form-urlencoded")
    assert request.args[b"a"] == [b"1"]


def test_the_launchers_requests_skip_it() -> None:
    """``mcp_gateway.daphne.GatewayWebRequest`` turns the parsing off as it is made."""
    from types import SimpleNamespace

    from mcp_gateway.daphne import GatewayWebRequest

    channel = DummyChannel()
    channel.factory = SimpleNamespace(server=SimpleNamespace(protocol_connected=lambda request: None))
    request = _received(GatewayWebRequest(channel), b"application/x-www-form-urlencoded")
    assert request.args == {b"session_id": [b"x"]}
    assert request.content.read() == BODY
