"""Each mount as an OAuth protected resource, against a live daphne: metadata, challenges, audience, scope, revocation.

Tokens are issued through the managers in the test process (the flows that obtain them are in
test_oauth_server and test_oauth_clients) and presented by the official SDK client and raw HTTP.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from mcp_gateway.resource import metadata_prefix
from mcp_oauth.models import Grant, OAuthAccessToken, OAuthClient, RevokeReason
from mcp_oauth.secrets import hash_token
from mcp_sessions.models import CloseReason, McpSession

from .clients import BOUND, INITIALIZE, TRANSPORTS, RawStream, handshake, jsonrpc, mcp_client, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)


def issue(user: Any, resource: str, *, scope: str = "mcp", lifetime: float = 3600) -> tuple[Grant, str]:
    """A grant of ``user`` for ``resource`` and its access token (the secret)."""
    client, _ = OAuthClient.objects.get_or_create(
        client_id="test-client", defaults={"kind": "dynamic", "redirect_uris": ["http://127.0.0.1/cb"]}
    )
    grant = Grant.objects.create(user=user, client=client, resource=resource, scope=scope)
    tokens = Grant.objects.issue_tokens(grant, access_lifetime=lifetime, refresh_lifetime=None, refresh=True)
    return grant, tokens["access_token"]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_protected_resource_metadata(daphne: Any, http: httpx2.AsyncClient) -> None:
    response = await http.get(
        f"{daphne.url}/.well-known/oauth-protected-resource/mcp", headers={"Origin": "https://x.example"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    document = response.json()
    scopes = document.pop("scopes_supported")
    assert document == {
        "resource": f"{daphne.url}/mcp",
        "authorization_servers": [daphne.url],
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP server at /mcp/",
    }
    # The gateway's vocabulary (mcp_gateway.scopes): the broad scopes, then one per tool and prompt of the mount.
    assert scopes[:4] == ["mcp", "mcp:tools", "mcp:resources", "mcp:prompts"] and "mcp:tools:whoami" in scopes


async def test_metadata_host_checked(daphne: Any, http: httpx2.AsyncClient) -> None:
    response = await http.get(
        f"{daphne.url}/.well-known/oauth-protected-resource/mcp", headers={"Host": "evil.example"}
    )
    assert response.status_code == 421


async def test_several_mounts_have_no_root_metadata(daphne: Any, http: httpx2.AsyncClient) -> None:
    assert (await http.get(f"{daphne.url}/.well-known/oauth-protected-resource")).status_code == 404


@pytest.mark.parametrize(
    ("path", "prefixes", "expected"),
    [
        pytest.param("/.well-known/oauth-protected-resource", ["/mcp/"], "/mcp/", id="root-single-mount"),
        pytest.param("/.well-known/oauth-protected-resource", ["/a/", "/b/"], None, id="root-several-mounts"),
        pytest.param("/.well-known/oauth-protected-resource/b", ["/a/", "/b/"], "/b/", id="path"),
        pytest.param("/.well-known/oauth-protected-resource/b/", ["/a/", "/b/"], "/b/", id="path-slash"),
        pytest.param("/.well-known/oauth-protected-resource/c", ["/a/", "/b/"], None, id="unknown"),
    ],
)
def test_metadata_paths(path: str, prefixes: list[str], expected: str | None) -> None:
    assert metadata_prefix(path, prefixes) == expected


async def test_no_credential_gets_the_oauth_challenge(daphne: Any, http: httpx2.AsyncClient) -> None:
    response = await http.post(
        f"{daphne.url}/mcp/", json=jsonrpc("ping"), headers={"Accept": "application/json, text/event-stream"}
    )
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge == (
        f'Bearer realm="mcp", resource_metadata="{daphne.url}/.well-known/oauth-protected-resource/mcp", '
        'scope="mcp", Cookie realm="mcp", cookie-name="sessionid"'
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_oauth_token_calls_whoami(daphne: Any, alice: Any, transport: str) -> None:
    _, secret = await sync_to_async(issue)(alice, f"{daphne.url}/mcp")
    async with mcp_client(daphne.url, bearer(secret), transport=transport) as client:
        result = await client.call_tool("whoami", {})
    assert "alice" in str(result.structured_content or result.content)
    record = await McpSession.objects.order_by("-pk").afirst() if transport == "sse" else None
    if record is not None:
        assert record.credential_ref.startswith("oauth:") and record.token_id is None


REFUSALS = [
    pytest.param("/mcp-test", "mcp", 0, 401, "invalid_token", id="token-for-another-resource"),
    pytest.param("/mcp", "mcp", -1, 401, "invalid_token", id="expired"),
    pytest.param("/mcp", "", 0, 403, "insufficient_scope", id="insufficient-scope"),
]


@pytest.mark.parametrize(("resource_path", "scope", "expired", "status", "error"), REFUSALS)
async def test_token_refusals(
    daphne: Any,
    http: httpx2.AsyncClient,
    alice: Any,
    resource_path: str,
    scope: str,
    expired: int,
    status: int,
    error: str,
) -> None:
    grant, secret = await sync_to_async(issue)(alice, f"{daphne.url}{resource_path}", scope=scope)
    if expired:
        await OAuthAccessToken.objects.filter(grant=grant).aupdate(expires_at=timezone.now() - timedelta(seconds=1))
    headers = {**bearer(secret), "Accept": "application/json, text/event-stream"}
    for _ in range(2):  # the second time through the worker's credential cache, were it used
        response = await http.post(f"{daphne.url}/mcp/", json=jsonrpc("ping"), headers=headers)
        assert response.status_code == status, response.text
        challenge = response.headers["www-authenticate"]
        assert f'error="{error}"' in challenge
        assert f'resource_metadata="{daphne.url}/.well-known/oauth-protected-resource/mcp"' in challenge
        assert 'scope="mcp"' in challenge
        assert response.json()["error"]["data"]["reason"] == error


async def test_a_token_cached_for_one_mount_is_refused_at_another(
    daphne: Any, http: httpx2.AsyncClient, alice: Any
) -> None:
    _, secret = await sync_to_async(issue)(alice, f"{daphne.url}/mcp")
    headers = {**bearer(secret), "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
    async with mcp_client(daphne.url, bearer(secret), transport="streamable_http") as client:
        await client.call_tool("whoami", {})
    response = await http.post(f"{daphne.url}/mcp-test/", json=jsonrpc("ping"), headers=headers)
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_personal_tokens_still_work(daphne: Any, alice: Any) -> None:
    from mcp_sessions.models import AccessToken

    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "cli")
    async with mcp_client(daphne.url, bearer(secret), transport="streamable_http") as client:
        assert "alice" in str((await client.call_tool("whoami", {})).content)


@pytest.fixture
def server(start_daphne: Any, redis_settings: dict[str, Any]) -> Any:
    return start_daphne(overrides=redis_settings)


REVOCATIONS = [
    pytest.param("grant", id="revoke-grant"),
    pytest.param("client", id="disable-client"),
    pytest.param("withdraw", id="user-withdraws"),
    pytest.param("deactivate-user", id="deactivate-user"),
    pytest.param("delete-user", id="delete-user"),
]


@pytest.mark.parametrize("how", REVOCATIONS)
async def test_revocation_closes_the_stream_across_processes(
    server: Any, http: httpx2.AsyncClient, alice: Any, how: str
) -> None:
    grant, secret = await sync_to_async(issue)(alice, f"{server.url}/mcp")
    headers = bearer(secret)
    async with raw_stream(http, f"{server.url}/mcp/sse", headers) as stream:
        await handshake(http, server.url, stream, headers)

        def revoke() -> None:
            from mcp_oauth.models import Consent

            if how == "grant":
                Grant.objects.filter(pk=grant.pk).revoke(RevokeReason.ADMIN)
            elif how == "client":
                OAuthClient.objects.filter(pk=grant.client_id).disable()
            elif how == "withdraw":
                Consent.objects.withdraw(alice, grant.client)
            elif how == "deactivate-user":
                alice.is_active = False
                alice.save()
            else:
                alice.delete()

        await sync_to_async(revoke)()
        with anyio.fail_after(BOUND):
            try:
                while True:
                    await stream.next_event(timeout=BOUND)
            except EOFError:
                pass
        response = await http.post(server.url + stream.endpoint, json=jsonrpc("ping"), headers=headers)
        assert response.status_code in (401, 404)
    if how == "delete-user":
        assert not await Grant.objects.filter(pk=grant.pk).aexists()  # gone with the user, its sessions too
        return
    record = await McpSession.objects.aget(credential_ref=grant.ref)
    assert record.close_reason == CloseReason.REVOKED
    assert re.fullmatch(r"oauth:\d+", record.credential_ref)
    assert (
        not await OAuthAccessToken.objects.filter(token_hash=hash_token(secret), revoked_at__isnull=True).aexists()
        or how == "deactivate-user"
    )


async def test_revoking_a_grant_ends_its_listen_stream_across_processes(
    server: Any, http: httpx2.AsyncClient, alice: Any
) -> None:
    from .test_modern import envelope, modern_headers

    grant, secret = await sync_to_async(issue)(alice, f"{server.url}/mcp-conformance")
    listen = envelope("subscriptions/listen", "sub-1", notifications={"toolsListChanged": True})
    headers = {"Content-Type": "application/json", **modern_headers("subscriptions/listen"), **bearer(secret)}
    url = f"{server.url}/mcp-conformance/"
    async with http.stream("POST", url, content=json.dumps(listen).encode(), headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        stream = RawStream(response)
        _, data = await stream.next_event(timeout=BOUND)
        assert json.loads(data)["method"] == "notifications/subscriptions/acknowledged"
        await sync_to_async(Grant.objects.filter(pk=grant.pk).revoke)(RevokeReason.ADMIN)
        with anyio.fail_after(BOUND):
            try:
                while True:
                    await stream.next_event(timeout=BOUND)
            except EOFError:
                pass


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_grant_for_one_tool_steps_up_for_another(daphne: Any, alice: Any, transport: str) -> None:
    """The grant's scopes are the gateway's vocabulary: beyond them, 403 insufficient_scope naming the tool's."""
    _, secret = await sync_to_async(issue)(alice, f"{daphne.url}/mcp", scope="mcp:tools:whoami")
    async with mcp_client(daphne.url, bearer(secret), transport=transport) as client:
        assert "alice" in str((await client.call_tool("whoami", {})).content)
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        session = {**bearer(secret), "Accept": "application/json, text/event-stream"}
        opened = await http.post(f"{daphne.url}/mcp/", json=INITIALIZE, headers=session)
        session["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        call = jsonrpc("tools/call", {"name": "add_note", "arguments": {"title": "x"}}, id=9)
        response = await http.post(f"{daphne.url}/mcp/", json=call, headers=session)
    assert response.status_code == 403 and response.json()["id"] == 9
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp:tools:add_note"' in challenge
    assert f'resource_metadata="{daphne.url}/.well-known/oauth-protected-resource/mcp"' in challenge
