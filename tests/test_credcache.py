"""The cache of verified credentials: hits cost no query, revocations drop entries at once, in-process and across
real launcher processes on Redis; the TTL bounds what bypasses the signals, the size bounds the memory."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db.backends.utils import CursorWrapper
from django.test import Client, override_settings
from django.utils import timezone
from django.utils.crypto import get_random_string

from mcp_gateway.auth import Credential, token_fingerprint
from mcp_gateway.credcache import CredentialCache, credential_cache
from mcp_gateway.exceptions import AuthenticationRequired
from mcp_gateway.http import GatewayRequest
from mcp_gateway.identity import authenticate_cached
from mcp_sessions.models import AccessToken

from .asgi_helpers import http_scope
from .clients import BOUND, jsonrpc, poll

pytestmark = pytest.mark.django_db(transaction=True)

# Long enough that only a revocation, never the TTL, can explain a refusal within BOUND.
LONG = {"MCP_GATEWAY_RECHECK_INTERVAL": 600.0}


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    credential_cache.clear()
    yield
    credential_cache.clear()


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL run from now on, in any thread (the authenticators query in asgiref's thread)."""
    seen: list[str] = []
    execute = CursorWrapper.execute

    def noting_execute(self: CursorWrapper, sql: str, params: Any = None) -> Any:
        seen.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", noting_execute)
    return seen


def post(headers: dict[str, str]) -> GatewayRequest:
    return GatewayRequest(http_scope("POST", path="/mcp/", headers=list(headers.items())))


def login(user: Any) -> tuple[Client, dict[str, str]]:
    """A login of its own for ``user`` (its client can log out), and the headers a client sends with it."""
    client = Client()
    client.force_login(user)
    token = get_random_string(32)
    cookie = client.cookies["sessionid"].value
    return client, {"Cookie": f"sessionid={cookie}; csrftoken={token}", "X-CSRFToken": token}


def bearer(user: Any) -> tuple[AccessToken, dict[str, str]]:
    token, secret = AccessToken.objects.issue(user, get_random_string(8))
    return token, {"Authorization": f"Bearer {secret}"}


def logout(user: Any, client: Client, token: AccessToken) -> None:
    client.logout()


def change_password(user: Any, client: Client, token: AccessToken) -> None:
    user.set_password("another password")
    user.save()


def revoke_token(user: Any, client: Client, token: AccessToken) -> None:
    token.revoked_at = timezone.now()
    token.save()


def revoke_tokens_in_bulk(user: Any, client: Client, token: AccessToken) -> None:
    AccessToken.objects.filter(pk=token.pk).revoke()  # what the admin's action does


def delete_token(user: Any, client: Client, token: AccessToken) -> None:
    token.delete()


def deactivate(user: Any, client: Client, token: AccessToken) -> None:
    user.is_active = False
    user.save()


def delete_user(user: Any, client: Client, token: AccessToken) -> None:
    user.delete()


Revocation = Callable[[Any, Client, AccessToken], None]

# (what revokes, whether it ends the login, whether it ends the token)
REVOCATIONS = [
    pytest.param(logout, True, False, id="logout"),
    pytest.param(change_password, True, False, id="password-change"),
    pytest.param(revoke_token, False, True, id="token-revoke"),
    pytest.param(revoke_tokens_in_bulk, False, True, id="token-revoke-admin-action"),
    pytest.param(delete_token, False, True, id="token-delete"),
    pytest.param(deactivate, True, True, id="deactivate"),
    pytest.param(delete_user, True, True, id="user-delete"),
]


async def refused(headers: dict[str, str]) -> bool:
    try:
        await authenticate_cached(post(headers))
    except AuthenticationRequired:
        return True
    return False


@pytest.mark.parametrize("kind", ["token", "cookie"])
async def test_a_hit_costs_no_query(kind: str, alice: Any, queries: list[str]) -> None:
    if kind == "token":
        _, headers = await sync_to_async(bearer)(alice)
    else:
        _, headers = await sync_to_async(login)(alice)
    first = await authenticate_cached(post(headers))
    assert queries, "the first request is checked by the database"
    queries.clear()
    again = post(headers)
    second = await authenticate_cached(again)
    assert queries == []
    assert second.user.pk == alice.pk and second.fingerprint == first.fingerprint
    assert second.ambient == (kind == "cookie")
    if kind == "cookie":
        assert again.django_request.user.pk == alice.pk  # as the full path leaves it, for the CSRF check
        assert again.django_request.session.session_key == headers["Cookie"].split(";")[0].split("=")[1]


@override_settings(**LONG)
@pytest.mark.parametrize(("revoke", "ends_login", "ends_token"), REVOCATIONS)
async def test_revocation_drops_the_credential_at_once(
    revoke: Revocation, ends_login: bool, ends_token: bool, alice: Any, bob: Any
) -> None:
    client, cookie = await sync_to_async(login)(alice)
    token, token_headers = await sync_to_async(bearer)(alice)
    _, bobs = await sync_to_async(bearer)(bob)
    for headers in (cookie, token_headers, bobs):
        await authenticate_cached(post(headers))
    assert len(credential_cache) == 3
    await sync_to_async(revoke)(alice, client, token)
    assert await refused(cookie) == ends_login
    assert await refused(token_headers) == ends_token
    assert not await refused(bobs)


async def test_a_change_bypassing_the_signals_is_seen_within_the_ttl(alice: Any) -> None:
    _, headers = await sync_to_async(bearer)(alice)
    with override_settings(MCP_GATEWAY_RECHECK_INTERVAL=0.2):
        await authenticate_cached(post(headers))
        await get_user_model().objects.filter(pk=alice.pk).aupdate(is_active=False)  # no post_save
        assert await poll(lambda: refused(headers), bool)


def credential(n: int, *, checked_at: float | None = None, expires_at: Any = None) -> Credential:
    extra = {} if checked_at is None else {"checked_at": checked_at}
    user = get_user_model()(pk=n, username=f"user{n}")
    return Credential(
        user=user,
        scheme="bearer",
        ambient=False,
        fingerprint=token_fingerprint(f"{n:064}"),
        expires_at=expires_at,
        **extra,
    )


def test_the_size_bound_evicts_the_least_recently_used() -> None:
    cache = CredentialCache()
    with override_settings(MCP_GATEWAY_CREDENTIAL_CACHE_SIZE=2):
        one, two, three = credential(1), credential(2), credential(3)
        for c in (one, two):
            assert cache.put(c, epoch=cache.epoch)
        assert cache.get(one.fingerprint) is one  # now the most recently used
        cache.put(three, epoch=cache.epoch)
        assert len(cache) == 2
        assert cache.get(two.fingerprint) is None
        assert cache.get(one.fingerprint) is one and cache.get(three.fingerprint) is three


@pytest.mark.parametrize(
    ("case", "settings_", "stored"),
    [
        pytest.param("fresh", {}, True, id="fresh-is-kept"),
        pytest.param("raced", {}, False, id="check-begun-before-a-revocation"),
        pytest.param("old", {}, False, id="checked-longer-ago-than-the-ttl"),
        pytest.param("expired", {}, False, id="token-past-its-expiry"),
        pytest.param("unverified", {}, False, id="unverified-ticket-credential"),
        pytest.param("fresh", {"MCP_GATEWAY_CREDENTIAL_CACHE_TTL": 0}, False, id="ttl-zero-turns-it-off"),
        pytest.param("fresh", {"MCP_GATEWAY_CREDENTIAL_CACHE_SIZE": 0}, False, id="size-zero-turns-it-off"),
        pytest.param("fresh", {"MCP_GATEWAY_RECHECK_INTERVAL": 0}, False, id="recheck-zero-turns-it-off"),
    ],
)
def test_what_is_never_served(case: str, settings_: dict[str, Any], stored: bool) -> None:
    cache = CredentialCache()
    with override_settings(**settings_):
        epoch = cache.epoch
        if case == "raced":
            cache.forget({"type": "mcp.forget_credentials", "fingerprints": []})
        made = {
            "old": credential(1, checked_at=-1e9),
            "expired": credential(1, expires_at=timezone.now() - timedelta(seconds=1)),
            "unverified": Credential(
                user=None, scheme="ticket", ambient=False, fingerprint="session:x", verified=False
            ),
        }.get(case) or credential(1)
        cache.put(made, epoch=epoch)
        assert (cache.get(made.fingerprint) is made) == stored


def test_a_message_off_the_wire_is_checked() -> None:
    cache = CredentialCache()
    one, two = credential(1), credential(2)
    for c in (one, two):
        cache.put(c, epoch=cache.epoch)
    cache.forget_received({"type": "mcp.forget_credentials", "fingerprints": [7, None, one.fingerprint], "user": 2})
    assert cache.get(one.fingerprint) is None
    assert cache.get(two.fingerprint) is two, "a user that is no string names nobody"
    cache.forget_received({"type": "mcp.forget_credentials", "fingerprints": "nonsense", "user": "2"})
    assert len(cache) == 0


# Across processes: two workers on Redis, the revocation in this process


@pytest.fixture
def workers(start_daphne: Any, redis_settings: dict[str, Any]) -> list[Any]:
    overrides = {**redis_settings, **LONG}
    return [start_daphne(overrides=overrides), start_daphne(overrides=overrides)]


async def answer(http: httpx2.AsyncClient, server: Any, headers: dict[str, str]) -> int:
    """The status of a POST that carries no session: 401 once its credential no longer holds."""
    response = await http.post(f"{server.url}/mcp/", json=jsonrpc("tools/list"), headers=headers)
    return response.status_code


@pytest.mark.parametrize(("revoke", "ends_login", "ends_token"), REVOCATIONS)
async def test_revocation_reaches_every_worker(
    revoke: Revocation, ends_login: bool, ends_token: bool, workers: list[Any], http: httpx2.AsyncClient, alice: Any
) -> None:
    client, cookie = await sync_to_async(login)(alice)
    token, token_headers = await sync_to_async(bearer)(alice)
    for server in workers:
        for headers in (cookie, token_headers):
            assert await answer(http, server, headers) != 401
    await sync_to_async(revoke)(alice, client, token)
    for server in workers:
        for headers, ends in ((cookie, ends_login), (token_headers, ends_token)):
            if ends:
                status = await poll(functools.partial(answer, http, server, headers), lambda s: s == 401, within=BOUND)
                assert status == 401, f"{server.url} still trusts the revoked credential"
    for server in workers:
        for headers, ends in ((cookie, ends_login), (token_headers, ends_token)):
            if not ends:
                assert await answer(http, server, headers) != 401
