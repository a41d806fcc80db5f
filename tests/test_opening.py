"""Opening a session (mcp_gateway.opening): no record for a client gone before its turn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from mcp_gateway.auth import authenticate
from mcp_gateway.conf import gateway_settings
from mcp_gateway.credcache import credential_cache
from mcp_gateway.http import CLIENT_GONE, GatewayRequest
from mcp_gateway.mounts import Mount
from mcp_gateway.opening import ClientGone, open_session
from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, McpSession, Transport

from .asgi_helpers import http_scope

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    credential_cache.clear()
    yield
    credential_cache.clear()


def stream_request(secret: str, *, gone: bool | None = None) -> GatewayRequest:
    scope = http_scope(headers=[("Authorization", f"Bearer {secret}")])
    if gone is not None:
        scope["extensions"] = {CLIENT_GONE: lambda: gone}
    return GatewayRequest(scope)


def test_a_request_says_its_client_is_gone_only_where_the_server_tells() -> None:
    assert stream_request("x").client_gone() is False  # a server without the extension: never gone
    assert stream_request("x", gone=False).client_gone() is False
    assert stream_request("x", gone=True).client_gone() is True


async def test_no_record_is_written_for_a_client_gone_before_the_write(alice: Any) -> None:
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "agent")
    request = stream_request(secret, gone=True)
    credential = await authenticate(request)
    with pytest.raises(ClientGone):
        await open_session(
            layer=get_channel_layer(),
            mount=Mount("/mcp/", gateway_settings.SERVER),
            request=request,
            credential=credential,
            transport=Transport.SSE,
        )
    assert await McpSession.objects.acount() == 0
    assert not await AuditEvent.objects.filter(kind=AuditKind.SESSION_OPENED).aexists()


async def test_a_client_still_there_gets_its_record(alice: Any) -> None:
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "agent")
    request = stream_request(secret, gone=False)
    host, _ = await open_session(
        layer=get_channel_layer(),
        mount=Mount("/mcp/", gateway_settings.SERVER),
        request=request,
        credential=await authenticate(request),
        transport=Transport.SSE,
    )
    assert await McpSession.objects.filter(pk=host.pk, closed_at__isnull=True).aexists()
    await host.close("terminated")
