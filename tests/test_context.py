"""What tools see: the user helper, the request headers (never a credential), and SSE framing."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from mcp_gateway import sse
from mcp_gateway.context import GatewayRequestContext, get_request_context, get_user

from .clients import mcp_client
from .conftest import login_headers


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


# What tools see of the request: no credential, no session ID (through the real daphne and the official client)

HIDDEN = {"cookie", "authorization", "x-csrftoken", "x-xsrf-token", "mcp-session-id"}

# (id, transport, settings of the server, the CSRF header under its configured name)
HEADER_CASES = [
    ("sse", "sse", {}, "X-CSRFToken"),
    ("streamable-http", "streamable_http", {}, "X-CSRFToken"),
    ("sse-custom-csrf-header", "sse", {"CSRF_HEADER_NAME": "HTTP_X_XSRF_TOKEN"}, "X-XSRF-Token"),
    (
        "streamable-http-custom-csrf-header",
        "streamable_http",
        {"CSRF_HEADER_NAME": "HTTP_X_XSRF_TOKEN"},
        "X-XSRF-Token",
    ),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("transport", "overrides", "csrf_header"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES]
)
async def test_tools_never_see_credentials_or_the_session_id(
    start_daphne: Any, alice: Any, transport: str, overrides: dict[str, Any], csrf_header: str
) -> None:
    server = start_daphne(overrides=overrides)
    headers = await sync_to_async(login_headers)(alice)
    headers[csrf_header] = headers.pop("X-CSRFToken")
    async with mcp_client(
        server.url, {**headers, "X-Trace": "t-1"}, prefix="/mcp-test/", transport=transport
    ) as client:
        result = await client.call_tool("headers", {})
    seen = json.loads(result.content[0].text)
    assert seen["x-trace"] == "t-1" and "user-agent" in seen  # the rest reaches the tool
    assert HIDDEN.isdisjoint(seen), sorted(HIDDEN & set(seen))
    secrets = [value.strip() for part in headers["Cookie"].split(";") for value in part.split("=")[1:]]
    assert not any(secret in json.dumps(seen) for secret in secrets)
