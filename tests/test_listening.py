"""Owned listen streams (mcp_gateway/listening.py): recorded, capped with sessions, revocable live from anywhere.

The official mcp 2.3 client listens (``Client.listen``) to an in-process low-level server on the 2026-07-28
path, whose ``subscriptions/listen`` handler is wired as a transport wires it: ``open_listen_stream``, then
``async with stream`` around the gateway's ``serve_listen``. This process's worker has its inbox on the real
Redis, so revocations travel as in production: the record closed, ``mcp.close`` sent through the layer to
the worker holding it, the stream ended with the SDK's graceful close. One revocation comes from another
process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.test import Client as DjangoClient
from django.urls import reverse
from django.utils import timezone
from mcp import Client
from mcp.server.lowlevel import Server
from mcp.shared.subscriptions import ServerEvent, ToolsListChanged
from mcp_types import SubscriptionFilter, SubscriptionsListenRequestParams

from mcp_gateway.auth import Credential, authenticate
from mcp_gateway.bus import bus
from mcp_gateway.exceptions import TooManySessions
from mcp_gateway.http import GatewayRequest
from mcp_gateway.listening import ListenStream, open_listen_stream, serve_listen
from mcp_gateway.mounts import Mount
from mcp_gateway.opening import open_session
from mcp_gateway.worker import worker
from mcp_sessions.models import AccessToken, CloseReason, McpSession, Transport

from .asgi_helpers import http_scope
from .clients import BOUND, closed_session, until
from .conftest import login_headers
from .support.process import run_django
from .support.workers import inbox_on

pytestmark = pytest.mark.django_db(transaction=True)

PREFIX = "/mcp/"
CLIENT_INFO = {"name": "listen-test", "version": "2.3"}


@pytest.fixture
async def layer(redis_settings: dict[str, Any]) -> AsyncIterator[Any]:
    """The gateway's layer (Redis), with this process's worker listening on it."""
    channel_layer = get_channel_layer()
    try:
        async with inbox_on(worker, channel_layer):
            yield channel_layer
    finally:
        await channel_layer.flush()
        await channel_layer.close_pools()


async def bearer(user: Any, **token: Any) -> tuple[GatewayRequest, AccessToken]:
    record, secret = await sync_to_async(AccessToken.objects.issue)(user, "listener", **token)
    return GatewayRequest(http_scope(headers=[("Authorization", f"Bearer {secret}")])), record


async def cookie(user: Any) -> tuple[GatewayRequest, DjangoClient]:
    """A login of its own for ``user`` (the Django client that holds it, to log out with)."""
    client = await sync_to_async(DjangoClient)()
    await sync_to_async(client.force_login)(user)
    headers = await sync_to_async(login_headers)(user, csrf=False)
    cookie_value = client.cookies["sessionid"].value
    headers["Cookie"] = f"sessionid={cookie_value}"
    return GatewayRequest(http_scope(headers=list(headers.items()))), client


class OwnedListenServer:
    """A low-level server whose ``subscriptions/listen`` runs as the transport runs it, for one caller."""

    def __init__(self, layer: Any, request: GatewayRequest, credential: Credential) -> None:
        self.server: Server[Any] = Server("listen-test")
        self.server.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, self.listen)
        self.layer, self.request, self.credential = layer, request, credential
        self.streams: list[ListenStream] = []

    async def listen(self, ctx: Any, params: SubscriptionsListenRequestParams) -> Any:
        stream = await open_listen_stream(
            layer=self.layer,
            mount=Mount(PREFIX, self.server),
            request=self.request,
            credential=self.credential,
            params=params,
            protocol_version="2026-07-28",
            client_info=CLIENT_INFO,
        )
        self.streams.append(stream)
        async with stream:
            return await serve_listen(ctx, params)


@dataclass
class Listening:
    """The client's side of one listen stream: the events it got, and whether the server closed it gracefully."""

    events: list[ServerEvent] = field(default_factory=list)
    ended: bool = False
    lost: BaseException | None = None


@contextlib.asynccontextmanager
async def client_listening(owned: OwnedListenServer, **wanted: Any) -> AsyncIterator[Listening]:
    """The official client listening through ``owned`` until the block ends (or the server ends the stream)."""
    seen = Listening()
    async with Client(owned.server) as client, anyio.create_task_group() as group:

        async def consume() -> None:
            try:
                async with client.listen(**wanted) as subscription:
                    async for event in subscription:
                        seen.events.append(event)
                seen.ended = True
            except Exception as exc:
                seen.lost = exc

        group.start_soon(consume)
        await until(lambda: bool(owned.streams) or seen.lost is not None, "the listen stream opened")
        await until(lambda: len(worker.listens.fanout) > 0 or seen.lost is not None, "the stream subscribed")
        assert seen.lost is None, seen.lost
        yield seen
        group.cancel_scope.cancel()


async def test_a_listen_stream_is_recorded_as_its_owners_and_ends_when_the_client_leaves(
    layer: Any, alice: Any
) -> None:
    request, token = await bearer(alice)
    owned = OwnedListenServer(layer, request, await authenticate(request))
    async with client_listening(owned, tools_list_changed=True, resource_subscriptions=["notes://1"]) as seen:
        [stream] = owned.streams
        record = await McpSession.objects.aget(pk=stream.pk)
        assert (record.user_id, record.token_id, record.transport) == (alice.pk, token.pk, Transport.LISTEN)
        assert (record.client_name, record.client_version, record.protocol_version) == (
            "listen-test",
            "2.3",
            "2026-07-28",
        )
        assert record.listen_filter == {"lists": ["tools"], "resources": ["notes://1"], "resource_count": 1}
        assert record.channel_name == await worker.inbox.address(layer) and record.is_open
        assert stream.pk in worker.live_records(), "the lease counts it live: its heartbeat never takes it for lost"

        await bus.publish(ToolsListChanged())
        await bus.publish_for(ToolsListChanged(), str(alice.pk))
        await until(lambda: len(seen.events) == 2, "both events")
        assert (await McpSession.objects.aget(pk=stream.pk)).messages_out == 0, "no write per event"
        await worker.sweeper.sweep()
        saved = await McpSession.objects.aget(pk=stream.pk)
        assert saved.messages_out == 2 and saved.last_event_at is not None
    closed = await closed_session(pk=stream.pk)
    assert closed.close_reason == CloseReason.CLIENT_DISCONNECT
    assert worker.listens.get(stream.pk) is None


def admin_revokes(user: Any, client: Any, pk: int) -> None:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    browser = DjangoClient()
    browser.force_login(admin)
    url = reverse("admin:mcp_sessions_mcpsession_changelist")
    browser.post(url, {"action": "revoke_sessions", "_selected_action": [pk], "post": "yes"})


def change_password(user: Any, client: Any, pk: int) -> None:
    user.set_password("another")
    user.save()


def deactivate(user: Any, client: Any, pk: int) -> None:
    user.is_active = False
    user.save()


def delete(user: Any, client: Any, pk: int) -> None:
    get_user_model().objects.filter(pk=user.pk).first().delete()  # type: ignore[union-attr]


def log_out(user: Any, client: Any, pk: int) -> None:
    client.logout()


def revoke_token(user: Any, client: Any, pk: int) -> None:
    token = AccessToken.objects.get(user=user)
    token.revoked_at = timezone.now()
    token.save()


REVOCATIONS = [
    pytest.param(admin_revokes, "token", id="admin-revoke-action"),
    pytest.param(revoke_token, "token", id="token-revoked"),
    pytest.param(deactivate, "token", id="user-deactivated"),
    pytest.param(delete, "token", id="user-deleted"),
    pytest.param(log_out, "cookie", id="logout"),
    pytest.param(change_password, "cookie", id="password-changed"),
]


@pytest.mark.parametrize(("revoke", "credential"), REVOCATIONS)
async def test_what_ends_sessions_ends_a_listen_stream_gracefully(
    layer: Any, alice: Any, revoke: Callable[[Any, Any, int], None], credential: str
) -> None:
    if credential == "token":
        request, login = (await bearer(alice))[0], None
    else:
        request, login = await cookie(alice)
    owned = OwnedListenServer(layer, request, await authenticate(request))
    async with client_listening(owned, tools_list_changed=True) as seen:
        [stream] = owned.streams
        await sync_to_async(revoke)(alice, login, stream.pk)
        await until(lambda: seen.ended or seen.lost is not None, "the stream ended", within=BOUND)
        assert seen.ended and seen.lost is None, "ended by the server's final result, not dropped"
    if credential == "token" and revoke is delete:
        assert not await McpSession.objects.filter(pk=stream.pk).aexists()  # deleted with its user
        return
    closed = await closed_session(pk=stream.pk)
    assert closed.close_reason == CloseReason.REVOKED


async def test_a_revocation_from_another_process_ends_the_stream(
    layer: Any, alice: Any, redis_settings: dict[str, Any]
) -> None:
    request, _ = await bearer(alice)
    owned = OwnedListenServer(layer, request, await authenticate(request))
    async with client_listening(owned, prompts_list_changed=True) as seen:
        [stream] = owned.streams
        code = f"from mcp_sessions.models import McpSession\nMcpSession.objects.filter(pk={stream.pk}).revoke()\n"
        await run_django(code, redis_settings)
        await until(lambda: seen.ended, "the stream ended by the other process's revocation")
    assert (await closed_session(pk=stream.pk)).close_reason == CloseReason.REVOKED


async def test_a_record_closed_without_a_message_is_found_by_the_sweep(layer: Any, alice: Any) -> None:
    """A revocation whose ``mcp.close`` was lost: the sweep finds the record closed and ends the stream."""
    request, _ = await bearer(alice)
    owned = OwnedListenServer(layer, request, await authenticate(request))
    async with client_listening(owned, tools_list_changed=True) as seen:
        [stream] = owned.streams
        await McpSession.objects.filter(pk=stream.pk).aupdate(closed_at=timezone.now(), close_reason="revoked")
        await worker.sweeper.sweep()
        await until(lambda: seen.ended, "the stream ended by the sweep")
    assert worker.listens.get(stream.pk) is None


async def test_shutting_down_ends_listen_streams_gracefully(layer: Any, alice: Any) -> None:
    request, _ = await bearer(alice)
    owned = OwnedListenServer(layer, request, await authenticate(request))
    async with client_listening(owned, tools_list_changed=True) as seen:
        [stream] = owned.streams
        await asyncio.wait_for(worker.close_all(), BOUND)
        await until(lambda: seen.ended, "the stream ended")
    assert (await closed_session(pk=stream.pk)).close_reason == CloseReason.SERVER_SHUTDOWN


async def test_a_token_expiring_ends_its_listen_stream(layer: Any, alice: Any) -> None:
    request, _ = await bearer(alice, expires_in=timedelta(seconds=1))
    owned = OwnedListenServer(layer, request, await authenticate(request))
    async with client_listening(owned, tools_list_changed=True) as seen:
        await until(lambda: seen.ended, "the stream ended at its token's expiry")
    assert (await closed_session(pk=owned.streams[0].pk)).close_reason == CloseReason.EXPIRED


@pytest.mark.parametrize(
    ("session", "listens", "session_reason"),
    [
        pytest.param(None, 2, None, id="listens-only"),
        pytest.param("in-use", 1, None, id="a-session-in-use-keeps-its-slot"),
        pytest.param("idle", 2, CloseReason.EVICTED, id="an-idle-session-makes-room"),
    ],
)
async def test_listen_streams_count_against_the_cap_with_sessions_and_are_never_evicted(
    layer: Any, alice: Any, settings: Any, session: str | None, listens: int, session_reason: str | None
) -> None:
    """Five concurrent opens, cap 2: exactly as many listen streams as fit; the ones open are never the victims."""
    settings.MCP_GATEWAY_MAX_SESSIONS_PER_USER = 2
    request, _ = await bearer(alice)
    credential = await authenticate(request)
    mount = Mount(PREFIX, Server("listen-test"))
    hosts: list[Any] = []
    if session is not None:
        host, _ = await open_session(
            layer=layer, mount=mount, request=request, credential=credential, transport=Transport.STREAMABLE_HTTP
        )
        hosts.append(host)
        await McpSession.objects.filter(pk=host.pk).aupdate(in_use=session == "in-use")

    async def attempt() -> ListenStream | None:
        try:
            return await open_listen_stream(layer=layer, mount=mount, request=request, credential=credential, params={})
        except TooManySessions:
            return None

    results = await asyncio.gather(*(attempt() for _ in range(5)))
    streams = [s for s in results if s is not None]
    try:
        assert len(streams) == listens
        assert await McpSession.objects.filter(user=alice).open().acount() == 2
        assert (
            await McpSession.objects.filter(pk__in=[s.pk for s in streams], closed_at__isnull=True).acount() == listens
        )
        if hosts:
            record = await McpSession.objects.aget(pk=hosts[0].pk)
            assert (record.close_reason or None) == session_reason
    finally:
        for closing in [*streams, *hosts]:
            await closing.close(CloseReason.SERVER_SHUTDOWN)


@dataclass
class Recorded:
    sent: list[Any] = field(default_factory=list)

    async def send_notification(self, notification: Any, related_request_id: Any = None) -> None:
        self.sent.append(notification)


@dataclass
class Ctx:
    request_id: str
    session: Recorded


async def test_a_stream_revoked_before_it_is_served_ends_at_once(layer: Any, alice: Any) -> None:
    """The revocation can arrive between the record's insert and the handler's subscribe: nothing waits forever."""
    request, _ = await bearer(alice)
    stream = await open_listen_stream(
        layer=layer,
        mount=Mount(PREFIX, Server("t")),
        request=request,
        credential=await authenticate(request),
        params={},
    )
    stream.post({"type": "mcp.close", "reason": CloseReason.REVOKED})
    params = SubscriptionsListenRequestParams(notifications=SubscriptionFilter(tools_list_changed=True))
    async with stream:
        result = await asyncio.wait_for(stream.serve(Ctx("late", Recorded()), params), BOUND)
    assert result.meta is not None
    assert (await closed_session(pk=stream.pk)).close_reason == CloseReason.REVOKED


async def test_serve_listen_refuses_a_request_with_no_stream_opened() -> None:
    from mcp.shared.exceptions import MCPError

    with pytest.raises(MCPError, match="not served"):
        await serve_listen(Ctx("x", Recorded()), SubscriptionsListenRequestParams(notifications=SubscriptionFilter()))  # type: ignore[arg-type]
