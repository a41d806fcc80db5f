"""What tools see: the user helper, and SSE framing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mcp_gateway import sse
from mcp_gateway.context import GatewayRequestContext, get_request_context, get_user


def test_get_user_reads_the_gateway_context_through_either_kind_of_ctx() -> None:
    gateway = GatewayRequestContext(user="u", session_ref="r", transport="sse", server="/mcp/")
    lowlevel_ctx = SimpleNamespace(request=gateway)
    mcpserver_ctx = SimpleNamespace(request_context=lowlevel_ctx)
    assert get_user(lowlevel_ctx) == "u"
    assert get_user(mcpserver_ctx) == "u"
    assert get_request_context(mcpserver_ctx) is gateway


@pytest.mark.parametrize("request_obj", [None, {"user": "spoofed"}, SimpleNamespace(user="spoofed")])
def test_get_user_refuses_anything_but_the_gateways_context(request_obj: object) -> None:
    with pytest.raises(LookupError):
        get_user(SimpleNamespace(request=request_obj))


def test_sse_event_framing() -> None:
    assert (
        sse.event("endpoint", "/mcp/messages/?session_id=x")
        == b"event: endpoint\ndata: /mcp/messages/?session_id=x\n\n"
    )
    assert sse.event("message", "a\nb") == b"event: message\ndata: a\ndata: b\n\n"
    assert sse.comment("ping") == b": ping\n\n"
