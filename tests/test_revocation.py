"""Live revocation and expiry: streams held by clients end when their credentials stop holding.

The daphne here and this test process share a real Redis channel layer, so the
admin actions and signal receivers run in another process than the streams
they close, as in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


# The signal between the model app and the gateway (issue 13): the model app closes records and says so; the
# gateway's receiver sends each worker its one mcp.close.


def open_record(user: Any, channel: str) -> McpSession:
    from mcp_sessions.ids import hash_session_id, new_session_id

    return McpSession.objects.create(
        user=user, id_hash=hash_session_id(new_session_id()), server="/mcp/", transport="sse", channel_name=channel
    )


@pytest.fixture
def in_memory_layer(settings: Any) -> Any:
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return get_channel_layer()


@pytest.fixture
def revocations() -> Iterator[list[dict[str, Any]]]:
    """What ``sessions_revoked`` says, as receivers get it."""
    from mcp_sessions.signals import sessions_revoked

    said: list[dict[str, Any]] = []

    def note(sender: Any, **kwargs: Any) -> None:
        said.append({"sender": sender, **kwargs})

    sessions_revoked.connect(note, dispatch_uid="tests.note_revocations")
    yield said
    sessions_revoked.disconnect(dispatch_uid="tests.note_revocations")


def test_revoking_says_which_records_closed_by_worker_once_committed(
    alice: Any, bob: Any, revocations: list[dict[str, Any]]
) -> None:
    from django.db import transaction

    one, two, other = open_record(alice, "worker.1!"), open_record(bob, "worker.1!"), open_record(alice, "worker.2!")
    with transaction.atomic():
        assert McpSession.objects.filter(pk__in=[one.pk, two.pk, other.pk]).revoke(CloseReason.EXPIRED) == 3
        assert revocations == [], "nothing is said before the records' close has committed"
    [said] = revocations
    assert said["sender"] is McpSession and said["reason"] == CloseReason.EXPIRED
    assert {channel: sorted(pks) for channel, pks in said["by_worker"].items()} == {
        "worker.1!": sorted([one.pk, two.pk]),
        "worker.2!": [other.pk],
    }
    assert McpSession.objects.filter(pk__in=[one.pk, two.pk, other.pk]).revoke() == 0
    assert len(revocations) == 1, "closed records are not revoked again, and nothing is said"


def test_a_rolled_back_revocation_says_nothing(alice: Any, revocations: list[dict[str, Any]]) -> None:
    from django.db import transaction

    record = open_record(alice, "worker.1!")
    with pytest.raises(RuntimeError), transaction.atomic():
        McpSession.objects.filter(pk=record.pk).revoke()
        raise RuntimeError("rolled back")
    assert revocations == [] and McpSession.objects.open().filter(pk=record.pk).exists()


async def test_the_gateway_sends_each_worker_one_close_message(alice: Any, bob: Any, in_memory_layer: Any) -> None:
    worker1, worker2 = await in_memory_layer.new_channel(), await in_memory_layer.new_channel()
    records = [await sync_to_async(open_record)(user, channel) for user, channel in ((alice, worker1), (bob, worker1))]
    records.append(await sync_to_async(open_record)(alice, worker2))
    revoked = await sync_to_async(McpSession.objects.filter(pk__in=[r.pk for r in records]).revoke)()
    assert revoked == 3
    first = await in_memory_layer.receive(worker1)
    assert first == {"type": "mcp.close", "sessions": first["sessions"], "reason": CloseReason.REVOKED}
    assert sorted(first["sessions"]) == sorted([records[0].pk, records[1].pk])
    assert await in_memory_layer.receive(worker2) == {
        "type": "mcp.close",
        "sessions": [records[2].pk],
        "reason": CloseReason.REVOKED,
    }
    for channel in (worker1, worker2):
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.2):
                await in_memory_layer.receive(channel)


def test_an_unreachable_worker_never_fails_the_revocation(
    alice: Any, in_memory_layer: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from channels.exceptions import ChannelFull

    failures = iter([ChannelFull(), ConnectionError("redis is down")])

    async def failing_send(channel: str, message: dict[str, Any]) -> None:
        raise next(failures)

    monkeypatch.setattr(in_memory_layer, "send", failing_send)
    full, down = open_record(alice, "worker.1!"), open_record(alice, "worker.2!")
    with caplog.at_level("ERROR", logger="mcp_gateway"):
        assert McpSession.objects.filter(pk=full.pk).revoke() == 1
        assert not caplog.records, "a full channel is no error: the worker's next sweep closes the session"
        assert McpSession.objects.filter(pk=down.pk).revoke() == 1
    [record] = caplog.records
    assert record.name == "mcp_gateway" and "next sweep" in record.getMessage() and record.exc_info is not None
    assert not McpSession.objects.open().exists()


def test_revoking_tokens_ends_their_sessions_only(alice: Any) -> None:
    token, _ = AccessToken.objects.issue(alice, "agent")
    kept, _ = AccessToken.objects.issue(alice, "other")
    with_token, with_other, with_cookie = (open_record(alice, f"worker.{n}!") for n in range(3))
    McpSession.objects.filter(pk=with_token.pk).update(token=token)
    McpSession.objects.filter(pk=with_other.pk).update(token=kept)
    assert AccessToken.objects.filter(pk=token.pk).revoke() == (1, 1)
    assert AccessToken.objects.filter(pk=token.pk).revoke() == (0, 0), "a revoked token is not revoked again"
    assert set(McpSession.objects.open().values_list("pk", flat=True)) == {with_other.pk, with_cookie.pk}
    assert AccessToken.objects.get(pk=token.pk).state == "revoked"
