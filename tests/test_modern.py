"""Protocol 2026-07-28 at ``<prefix>`` (mcp_gateway/transports/modern.py), driven by the official mcp 2.3 client
and by raw requests, on a real daphne."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import LATEST_MODERN_VERSION

from mcp_sessions.models import AccessToken, McpSession

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bearer_headers(alice: Any) -> dict[str, str]:
    _, secret = AccessToken.objects.issue(alice, "modern")
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("credential", ["cookie", "bearer"])
async def test_client_in_auto_mode_negotiates_2026_and_calls_a_tool_without_initialize(
    daphne: Any, alice_headers: dict[str, str], bearer_headers: dict[str, str], credential: str
) -> None:
    headers = alice_headers if credential == "cookie" else bearer_headers
    sent: list[bytes] = []

    async def record(request: httpx2.Request) -> None:
        sent.append(request.content)

    async with (
        httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"request": [record]}) as http,
        Client(streamable_http_client(f"{daphne.url}/mcp-test/", http_client=http)) as client,
    ):
        assert "whoami" in {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("whoami", {})
    assert result.content[0].text == "alice"
    assert sent and not any(b'"initialize"' in body for body in sent), sent
    assert any(LATEST_MODERN_VERSION.encode() in body for body in sent)
    assert not await McpSession.objects.aexists()  # served per request: no session
