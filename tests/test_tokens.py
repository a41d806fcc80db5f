"""Personal access tokens: issuing, storing, admin, and bearer authentication against a real daphne."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mcp_gateway.conf import gateway_settings
from mcp_sessions.ids import hash_token, is_token_shaped
from mcp_sessions.models import AccessToken, McpSession

from .clients import closed_session, jsonrpc, mcp_client, raw_stream

pytestmark = pytest.mark.django_db(transaction=True)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# The model


def test_issue_stores_only_prefix_and_hash(alice: Any) -> None:
    token, secret = AccessToken.objects.issue(alice, "laptop")
    assert is_token_shaped(secret)
    token.refresh_from_db()
    assert token.prefix == secret[:12] and token.token_hash == hash_token(secret)
    assert secret not in str(AccessToken.objects.values().get(pk=token.pk))


SPOILERS: list[tuple[str, Callable[[AccessToken], None]]] = [
    ("revoked", lambda t: AccessToken.objects.filter(pk=t.pk).update(revoked_at=timezone.now())),
    ("expired", lambda t: AccessToken.objects.filter(pk=t.pk).update(expires_at=timezone.now() - timedelta(seconds=1))),
    ("owner-inactive", lambda t: type(t.user).objects.filter(pk=t.user_id).update(is_active=False)),
]


@pytest.mark.parametrize("spoil", [s[1] for s in SPOILERS], ids=[s[0] for s in SPOILERS])
def test_unusable_tokens_do_not_authenticate(alice: Any, spoil: Callable[[AccessToken], None]) -> None:
    token, secret = AccessToken.objects.issue(alice, "laptop")
    assert AccessToken.objects.authenticate(secret) == token
    spoil(token)
    assert AccessToken.objects.authenticate(secret) is None


@pytest.mark.parametrize("secret", ["", "mcp_short", "x" * 47, "mcp_" + "A" * 43])
def test_malformed_or_unknown_secrets_do_not_authenticate(alice: Any, secret: str) -> None:
    AccessToken.objects.issue(alice, "laptop")
    assert AccessToken.objects.authenticate(secret) is None


def test_last_use_is_recorded_at_most_once_a_minute(alice: Any) -> None:
    token, secret = AccessToken.objects.issue(alice, "laptop")
    first = AccessToken.objects.authenticate(secret).last_used_at
    assert AccessToken.objects.authenticate(secret).last_used_at == first
    AccessToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    assert AccessToken.objects.authenticate(secret).last_used_at > first


# The command


def test_create_mcp_token_prints_a_working_token_once(alice: Any) -> None:
    out = StringIO()
    call_command("create_mcp_token", "alice", "--name", "ci", "--expires-in", "7", stdout=out)
    secret = out.getvalue().strip()
    token = AccessToken.objects.authenticate(secret)
    assert token is not None and token.name == "ci" and token.user == alice
    assert timedelta(days=6.9) < token.expires_at - timezone.now() < timedelta(days=7.1)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["nobody"], "No user"), (["alice", "--expires-in", "0"], "positive"), (["inactive"], "inactive")],
    ids=["unknown-user", "non-positive-expiry", "inactive-user"],
)
def test_create_mcp_token_refuses(alice: Any, make_user: Any, args: list[str], message: str) -> None:
    make_user("inactive", is_active=False)
    with pytest.raises(CommandError, match=message):
        call_command("create_mcp_token", *args, stdout=StringIO())
    assert not AccessToken.objects.exists()


# The admin


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def test_admin_shows_a_new_secret_once_and_stores_only_its_hash(admin_client: Client, alice: Any) -> None:
    response = admin_client.post(
        reverse("admin:mcp_sessions_accesstoken_add"), {"user": alice.pk, "name": "from admin", "expires_at_0": ""}
    )
    assert response.status_code == 200
    secret = re.search(r'id="mcp-token-secret"[^>]*>(mcp_[A-Za-z0-9_-]{43})<', response.content.decode()).group(1)
    token = AccessToken.objects.get()
    assert token.token_hash == hash_token(secret)
    for url in (
        reverse("admin:mcp_sessions_accesstoken_changelist"),
        reverse("admin:mcp_sessions_accesstoken_change", args=[token.pk]),
    ):
        page = admin_client.get(url).content.decode()
        assert secret not in page and token.token_hash not in page
        assert f"{token.prefix}…" in page


def test_admin_revoke_action(admin_client: Client, alice: Any) -> None:
    token, secret = AccessToken.objects.issue(alice, "laptop")
    response = admin_client.post(
        reverse("admin:mcp_sessions_accesstoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.state == "revoked"
    assert AccessToken.objects.authenticate(secret) is None
    revoked = admin_client.get(reverse("admin:mcp_sessions_accesstoken_changelist") + "?state=revoked")
    assert "laptop" in revoked.content.decode()


# Bearer authentication through a real daphne and the official client


@pytest.fixture
def alice_token(alice: Any) -> tuple[AccessToken, str]:
    return AccessToken.objects.issue(alice, "agent")


async def test_bearer_token_opens_and_drives_a_session(daphne: Any, alice: Any, alice_token: Any) -> None:
    token, secret = alice_token
    async with mcp_client(daphne.url, bearer(secret)) as client:
        result = await client.call_tool("whoami", {})
    assert result.structured_content["username"] == "alice"
    record = await closed_session(user=alice)
    assert record.token_id == token.pk


async def test_bearer_posts_need_no_csrf_token_but_origin_still_applies(
    daphne: Any, http: httpx2.AsyncClient, alice_token: Any
) -> None:
    headers = bearer(alice_token[1])
    async with raw_stream(http, f"{daphne.url}/mcp/sse", headers) as stream:
        ping = jsonrpc("ping")
        assert (await http.post(daphne.url + stream.endpoint, json=ping, headers=headers)).status_code == 202
        foreign = {**headers, "Origin": "http://evil.example"}
        response = await http.post(daphne.url + stream.endpoint, json=ping, headers=foreign)
        assert response.status_code == 403


async def test_another_users_token_cannot_use_the_session(
    daphne: Any, http: httpx2.AsyncClient, alice_token: Any, bob: Any
) -> None:
    _, bob_secret = await sync_to_async(AccessToken.objects.issue)(bob, "bob's")
    async with raw_stream(http, f"{daphne.url}/mcp/sse", bearer(alice_token[1])) as stream:
        response = await http.post(daphne.url + stream.endpoint, json=jsonrpc("ping"), headers=bearer(bob_secret))
    assert response.status_code == 404


INVALID = [
    ("revoked", lambda t: AccessToken.objects.filter(pk=t.pk).update(revoked_at=timezone.now())),
    ("expired", lambda t: AccessToken.objects.filter(pk=t.pk).update(expires_at=timezone.now())),
    ("owner-inactive", lambda t: type(t.user).objects.filter(pk=t.user_id).update(is_active=False)),
    ("unknown", lambda t: AccessToken.objects.filter(pk=t.pk).delete()),
]


@pytest.mark.parametrize("spoil", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_invalid_token_is_401_invalid_token(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str], alice_token: Any, spoil: Any, method: str
) -> None:
    token, secret = alice_token
    async with raw_stream(http, f"{daphne.url}/mcp/sse", bearer(secret)) as stream:
        await sync_to_async(spoil)(token)
        # A valid login cookie alongside does not rescue a bad bearer token.
        headers = {**bearer(secret), "Cookie": alice_headers["Cookie"], "X-CSRFToken": alice_headers["X-CSRFToken"]}
        if method == "GET":
            response = await http.get(f"{daphne.url}/mcp/sse", headers=headers)
        else:
            # These changes bypass model signals (a bulk update), so the session is not ended: its worker may
            # still vouch for the token it was opened with, for at most RECHECK_INTERVAL after its last check.
            deadline = anyio.current_time() + gateway_settings.RECHECK_INTERVAL + 2
            while True:
                response = await http.post(daphne.url + stream.endpoint, json=jsonrpc("ping"), headers=headers)
                if response.status_code != 202 or anyio.current_time() > deadline:
                    break
                await anyio.sleep(0.1)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mcp", error="invalid_token"'
    assert response.json()["error"]["data"]["reason"] == "invalid_token"
    assert await McpSession.objects.acount() == 1, "no session was opened by the refused request"
