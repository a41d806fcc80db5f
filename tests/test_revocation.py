"""Live revocation and expiry: streams held by clients end when their credentials stop holding.

The daphne here and this test process share a real Redis channel layer, so the
admin actions and signal receivers run in another process than the streams
they close, as in production.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import get_random_string
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from mcp_sessions.models import AccessToken, CloseReason, McpSession

from .clients import BOUND, RawStream, closed_session, handshake, jsonrpc, mcp_client, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(start_daphne: Any, redis_settings: dict[str, Any]) -> Any:
    return start_daphne(overrides=redis_settings)


def logged_in(user: Any) -> tuple[Client, dict[str, str]]:
    """A login of its own for ``user``, and the headers a client sends with it."""
    client = Client()
    client.force_login(user)
    token = get_random_string(32)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return client, {"Cookie": f"sessionid={cookie}; csrftoken={token}", "X-CSRFToken": token}


async def ends(stream: RawStream) -> None:
    """Wait for the server to end ``stream``; fail if it is still open after ``BOUND`` seconds.

    The bound is generous, for a loaded machine: these tests check that the stream ends, not how fast.
    """
    with anyio.fail_after(BOUND):
        try:
            while True:
                await stream.next_event(timeout=BOUND)
        except EOFError:
            return


async def still_serves(http: httpx2.AsyncClient, url: str, stream: RawStream, headers: dict[str, str]) -> None:
    response = await http.post(url + stream.endpoint, json=jsonrpc("ping", id=77), headers=headers)
    assert response.status_code == 202
    assert (await stream.next_message())["id"] == 77


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


async def test_admin_revoke_closes_the_stream(
    server: Any,
    http: httpx2.AsyncClient,
    admin_client: Client,
    alice: Any,
    alice_headers: dict[str, str],
    bob_headers: dict[str, str],
) -> None:
    async with (
        raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as alices,
        raw_stream(http, f"{server.url}/mcp/sse", bob_headers) as bobs,
    ):
        await handshake(http, server.url, alices, alice_headers)
        await handshake(http, server.url, bobs, bob_headers)
        record = await McpSession.objects.aget(user=alice)
        url = reverse("admin:mcp_sessions_mcpsession_changelist")
        selection = {"action": "revoke_sessions", "_selected_action": [record.pk]}
        confirm = await sync_to_async(admin_client.post)(url, selection)
        assert confirm.status_code == 200 and record.ref in confirm.content.decode()
        assert await McpSession.objects.open().acount() == 2, "nothing happens before the confirmation"
        done = await sync_to_async(admin_client.post)(url, {**selection, "post": "yes"})
        assert done.status_code == 302
        await ends(alices)
        response = await http.post(server.url + alices.endpoint, json=jsonrpc("ping"), headers=alice_headers)
        assert response.status_code == 404
        await still_serves(http, server.url, bobs, bob_headers)
    record = await McpSession.objects.aget(pk=record.pk)
    assert record.close_reason == CloseReason.REVOKED


async def test_admin_revoke_ends_the_official_clients_session(
    server: Any, admin_client: Client, alice: Any, alice_headers: dict[str, str]
) -> None:
    async with mcp_client(server.url, alice_headers) as client:
        assert (await client.call_tool("whoami", {})).structured_content["username"] == "alice"
        record = await McpSession.objects.aget(user=alice)
        url = reverse("admin:mcp_sessions_mcpsession_changelist")
        payload = {"action": "revoke_sessions", "_selected_action": [record.pk], "post": "yes"}
        await sync_to_async(admin_client.post)(url, payload)
        # The server ends the stream: the call in progress fails as the client's connection closing, whether its
        # POST came before the revocation (accepted, then the stream ends) or after (refused, then the same).
        with anyio.fail_after(BOUND), pytest.raises(MCPError) as refused:
            await client.call_tool("whoami", {})
        assert refused.value.error.code == CONNECTION_CLOSED, refused.value.error
    assert (await McpSession.objects.aget(pk=record.pk)).close_reason == CloseReason.REVOKED


def revoke_token_in_admin(admin_client: Client, token: AccessToken) -> None:
    url = reverse("admin:mcp_sessions_accesstoken_changelist")
    assert admin_client.post(url, {"action": "revoke", "_selected_action": [token.pk]}).status_code == 302


def deactivate(user: Any) -> None:
    user.is_active = False
    user.save()


def change_password(user: Any) -> None:
    user.set_password("a new password")
    user.save()


# Each case: what happens to alice, then which of her three streams must end and which must stay.
# Her streams: "login" (cookie of the login that gets logged out), "other-login" (another cookie login),
# and "token" (a bearer token).
CASES: list[tuple[str, Callable[..., None], set[str]]] = [
    ("token-revoked-in-admin", lambda ctx: revoke_token_in_admin(ctx["admin"], ctx["token"]), {"token"}),
    ("token-revoked-by-save", lambda ctx: _save_revoked(ctx["token"]), {"token"}),
    ("logout", lambda ctx: ctx["login"].logout(), {"login"}),
    ("password-change", lambda ctx: change_password(ctx["alice"]), {"login", "other-login"}),
    ("user-deactivated", lambda ctx: deactivate(ctx["alice"]), {"login", "other-login", "token"}),
    ("user-deleted", lambda ctx: ctx["alice"].delete(), {"login", "other-login", "token"}),
]


def _save_revoked(token: AccessToken) -> None:
    token = AccessToken.objects.get(pk=token.pk)
    token.revoked_at = timezone.now()
    token.save()


@pytest.mark.parametrize(("event", "ended"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_credential_changes_end_exactly_the_sessions_they_opened(
    server: Any,
    http: httpx2.AsyncClient,
    admin_client: Client,
    alice: Any,
    bob_headers: dict[str, str],
    event: Callable[..., None],
    ended: set[str],
) -> None:
    login, login_headers = await sync_to_async(logged_in)(alice)
    _, other_headers = await sync_to_async(logged_in)(alice)
    token, secret = await sync_to_async(AccessToken.objects.issue)(alice, "agent")
    headers = {"login": login_headers, "other-login": other_headers, "token": {"Authorization": f"Bearer {secret}"}}
    async with (
        raw_stream(http, f"{server.url}/mcp/sse", headers["login"]) as s1,
        raw_stream(http, f"{server.url}/mcp/sse", headers["other-login"]) as s2,
        raw_stream(http, f"{server.url}/mcp/sse", headers["token"]) as s3,
        raw_stream(http, f"{server.url}/mcp/sse", bob_headers) as bobs,
    ):
        streams = {"login": s1, "other-login": s2, "token": s3}
        ctx = {"admin": admin_client, "alice": alice, "login": login, "token": token}
        await sync_to_async(event)(ctx)
        for name in ended:
            try:
                await ends(streams[name])
            except TimeoutError:
                pytest.fail(f"the {name!r} stream is still open; daphne's log:\n{server.log()[-6000:]}")
        for name in set(streams) - ended:
            await handshake(http, server.url, streams[name], headers[name])
        await handshake(http, server.url, bobs, bob_headers)


async def test_a_lost_close_message_is_caught_at_the_next_keepalive(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str]
) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_PING_INTERVAL": 0.2})
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as stream:
        # Close the record the way revoke() does, but send no message to the stream.
        await McpSession.objects.filter(user=alice).aupdate(closed_at=timezone.now(), close_reason=CloseReason.REVOKED)
        await ends(stream)


EXPIRY_CASES = [
    ("max-lifetime", {"MCP_GATEWAY_MAX_LIFETIME": 0.5}, None),
    ("idle-timeout", {"MCP_GATEWAY_IDLE_TIMEOUT": 0.3, "MCP_GATEWAY_PING_INTERVAL": 0.2}, None),
    ("token-expiry", {}, timedelta(seconds=0.5)),
]


@pytest.mark.parametrize(("overrides", "token_life"), [c[1:] for c in EXPIRY_CASES], ids=[c[0] for c in EXPIRY_CASES])
async def test_sessions_expire(
    start_daphne: Any,
    http: httpx2.AsyncClient,
    alice: Any,
    alice_headers: dict[str, str],
    overrides: dict[str, Any],
    token_life: timedelta | None,
) -> None:
    server = start_daphne(overrides=overrides)
    headers = alice_headers
    if token_life is not None:
        _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "short", token_life)
        headers = {"Authorization": f"Bearer {secret}"}
    async with raw_stream(http, f"{server.url}/mcp/sse", headers) as stream:
        await ends(stream)
    record = await closed_session(user=alice)
    assert record.close_reason == CloseReason.EXPIRED
