"""A multi-round-trip request's state is bound to its user, credential and mount, short-lived and tamper-proof."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import signing
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.request_state import InvalidRequestState, RequestStateBoundary
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from mcp_gateway.context import GatewayRequestContext
from mcp_gateway.request_state import (
    GatewayRequestStateBoundary,
    SignedRequestStateCodec,
    install_request_state,
    serving,
)
from mcp_sessions import audit
from mcp_sessions.models import AuditKind

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = b'{"v":1,"s":"step two"}'


def context_for(user: Any, fingerprint: str) -> GatewayRequestContext:
    return GatewayRequestContext(
        user=user, session_ref="", transport="streamable_http", server="/mcp/", credential_fingerprint=fingerprint
    )


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    record = audit.record

    def noting(kind: str, **fields: Any) -> None:
        events.append((kind, fields))
        record(kind, **fields)

    monkeypatch.setattr(audit, "record", noting)
    return events


def sealed_long_ago(codec: SignedRequestStateCodec, monkeypatch: pytest.MonkeyPatch) -> str:
    with monkeypatch.context() as frozen:
        frozen.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(1))
        return codec.seal(PAYLOAD)


def tamper(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


@pytest.mark.parametrize(
    ("presenter", "mount", "mangle", "refusal"),
    [
        pytest.param("alice-token", "/mcp/", None, None, id="same-user-same-credential-round-trips"),
        pytest.param("bob-token", "/mcp/", None, "sealed for user", id="bob-presents-alices"),
        pytest.param("alice-cookie", "/mcp/", None, "another credential", id="alices-other-credential"),
        pytest.param("alice-token", "/other/", None, "bad signature", id="another-mount"),
        pytest.param("alice-token", "/mcp/", "expired", "expired", id="expired"),
        pytest.param("alice-token", "/mcp/", "tamper", "bad signature", id="tampered-byte"),
        pytest.param("alice-token", "/mcp/", "garbage", "bad signature", id="garbage"),
        pytest.param("nobody", "/mcp/", None, "no gateway request", id="not-through-the-gateway"),
    ],
)
def test_the_state_comes_back_only_to_whom_it_was_for(
    presenter: str,
    mount: str,
    mangle: str | None,
    refusal: str | None,
    alice: Any,
    bob: Any,
    recorded: list[tuple[str, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contexts = {
        "alice-token": context_for(alice, "bearer:" + "a" * 64),
        "alice-cookie": context_for(alice, "session:" + "c" * 64),
        "bob-token": context_for(bob, "bearer:" + "b" * 64),
        "nobody": None,
    }
    sealer = SignedRequestStateCodec("/mcp/")
    with serving(contexts["alice-token"]):
        token = sealed_long_ago(sealer, monkeypatch) if mangle == "expired" else sealer.seal(PAYLOAD)
    token = {"tamper": tamper(token), "garbage": "not a state at all"}.get(mangle or "", token)
    with serving(contexts[presenter]):
        if refusal is None:
            assert SignedRequestStateCodec(mount).unseal(token) == PAYLOAD
            assert recorded == []
            return
        with pytest.raises(InvalidRequestState, match=refusal):
            SignedRequestStateCodec(mount).unseal(token)
    [(kind, fields)] = recorded
    assert kind == AuditKind.REQUEST_STATE_REFUSED
    assert fields["detail"].startswith(f"{mount} ") and refusal in fields["detail"]
    presenting = contexts[presenter]
    assert fields["user"] == (None if presenting is None else presenting.user)


def test_every_byte_round_trips(alice: Any) -> None:
    codec = SignedRequestStateCodec("/mcp/")
    with serving(context_for(alice, "bearer:" + "a" * 64)):
        payload = bytes(range(256))
        assert codec.unseal(codec.seal(payload)) == payload


def test_nothing_is_sealed_outside_a_gateway_request() -> None:
    with pytest.raises(InvalidRequestState):
        SignedRequestStateCodec("/mcp/").seal(PAYLOAD)


@pytest.mark.parametrize("kind", ["mcpserver", "lowlevel"])
def test_install_replaces_the_sdks_boundary(kind: str) -> None:
    server = MCPServer("demo")._lowlevel_server if kind == "mcpserver" else Server("demo")
    install_request_state(server, "/mcp/")
    ours = install_request_state(server, "/mcp/")
    assert [m for m in server.middleware if isinstance(m, RequestStateBoundary | GatewayRequestStateBoundary)] == [ours]


def request(user: Any, fingerprint: str, params: dict[str, Any]) -> ServerRequestContext[Any, Any]:
    return ServerRequestContext(
        session=None,  # type: ignore[arg-type]  # the boundary never reaches the session
        lifespan_context=None,
        protocol_version="2026-07-28",
        method="tools/call",
        params=params,
        request_id=1,
        request=context_for(user, fingerprint),
    )


async def test_through_the_sdks_boundary(alice: Any, bob: Any) -> None:
    """The SDK seals what a tool returns and answers a foreign echo with the spec's error."""
    boundary = GatewayRequestStateBoundary("/mcp/")
    seen: list[Any] = []

    async def tool(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
        seen.append((ctx.params or {}).get("requestState"))
        return {"resultType": "input_required", "inputRequests": {}, "requestState": "step two"}

    call = {"name": "ask", "arguments": {}}
    first = await boundary(request(alice, "bearer:" + "a" * 64, call), tool)
    assert isinstance(first, dict) and first["requestState"] != "step two"
    again = {**call, "requestState": first["requestState"]}
    await boundary(request(alice, "bearer:" + "a" * 64, again), tool)
    assert seen == [None, "step two"], "the tool sees only the state it minted"
    with pytest.raises(MCPError) as refused:
        await boundary(request(bob, "bearer:" + "b" * 64, again), tool)
    assert refused.value.error.code == INVALID_PARAMS
    assert seen == [None, "step two"]
