"""The official MCP clients and the official conformance suite against a real daphne, through authenticated paths.

Node-based tools (TS SDK client, MCP Inspector CLI, mcp-remote, the conformance suite) run on the Node 22 that
``tests/interop/package.json`` pins; the Python SDK 1.x client runs in its own virtualenv. Both are installed on
first use (``tests/interop/harness.py``): without npm or network the module skips, and fails in CI.
"""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from mcp import MCPError

from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, CloseReason, McpSession, Transport

from .clients import mcp_client
from .conftest import IN_CI
from .interop import harness

pytestmark = pytest.mark.django_db(transaction=True)

TRANSPORTS = {"sse": "/mcp-test/sse", "http": "/mcp-test/"}


@pytest.fixture(scope="session")
def interop_tools() -> None:
    try:
        harness.ensure_node_tools()
        harness.ensure_py1_venv()
    except harness.InteropUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI needs the interop tools: {exc}")
        pytest.skip(f"interop tools unavailable: {exc}")


@pytest.fixture
def bearer_headers(alice: Any) -> dict[str, str]:
    _, secret = AccessToken.objects.issue(alice, "interop")
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("credential", ["cookie", "bearer"])
@pytest.mark.parametrize("client", harness.CLIENTS)
async def test_official_clients_connect_list_and_call(
    interop_tools: None,
    daphne: Any,
    alice: Any,
    alice_headers: dict[str, str],
    bearer_headers: dict[str, str],
    client: str,
    credential: str,
    transport: str,
) -> None:
    headers = alice_headers if credential == "cookie" else bearer_headers
    url = daphne.url + TRANSPORTS[transport]
    run = await sync_to_async(harness.run_client, thread_sensitive=False)(
        client, url, transport=transport, headers=headers, tool="whoami", timeout=90
    )
    assert {"whoami", "blob", "sleep"} <= set(run.tools)
    assert run.text == "alice" and not run.is_error
    assert not harness.error_lines(run.output), run.output
    expected = Transport.SSE if transport == "sse" else Transport.STREAMABLE_HTTP
    assert await McpSession.objects.filter(user=alice, transport=expected).aexists()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("client", harness.CLIENTS)
async def test_official_clients_without_credentials_get_401(
    interop_tools: None, daphne: Any, client: str, transport: str
) -> None:
    url = daphne.url + TRANSPORTS[transport]
    # mcp-remote answers the 401 by starting OAuth, which the gateway now offers (test_oauth_clients follows it
    # through a real browser): with no one to log in, it waits for the authorization, then gives up.
    timeout = 40 if client == "mcp-remote" else 90
    with pytest.raises(harness.ClientFailed) as failed:
        await sync_to_async(harness.run_client, thread_sensitive=False)(
            client, url, transport=transport, headers={}, tool="whoami", timeout=timeout
        )
    if client == "mcp-remote":
        assert "Waiting for authorization" in failed.value.stderr, failed.value
    else:
        assert failed.value.unauthorized, failed.value
    assert not await McpSession.objects.aexists()


MODERN = "2026-07-28"
MODERN_SERVER_INFO = "io.modelcontextprotocol/serverInfo"  # a 2026-07-28 result's _meta names the server


def server_error_lines(server: Any, since: int) -> list[str]:
    """The lines the gateway logged at ERROR or above (or a traceback) after offset ``since`` of its log."""
    return [line for line in server.log()[since:].splitlines() if line.startswith(("ERROR", "CRITICAL", "Traceback"))]


@pytest.mark.parametrize("mode", ["auto", "pin"])
@pytest.mark.parametrize("credential", ["cookie", "bearer"])
async def test_ts_sdk_2_client_negotiates_2026_07_28_without_initialize(
    interop_tools: None,
    daphne: Any,
    alice_headers: dict[str, str],
    bearer_headers: dict[str, str],
    credential: str,
    mode: str,
) -> None:
    """``@modelcontextprotocol/client`` (v2) probes with ``server/discover`` and stays on 2026-07-28: no session."""
    headers = alice_headers if credential == "cookie" else bearer_headers
    since = len(daphne.log())
    run = await sync_to_async(harness.run_ts2_client, thread_sensitive=False)(
        daphne.url + TRANSPORTS["http"], headers=headers, tool="whoami", mode=mode, timeout=90
    )
    assert run.text == "alice" and not run.is_error
    assert {"whoami", "blob", "sleep"} <= set(run.tools)
    assert (run.details["era"], run.details["protocolVersion"]) == ("modern", MODERN), run.details
    assert run.details["methods"] == ["server/discover", "tools/list", "tools/call"], run.details
    assert not harness.error_lines(run.output), run.output
    assert not server_error_lines(daphne, since)
    assert not await McpSession.objects.aexists()  # served per request


@pytest.mark.parametrize("mode", ["auto", "pin"])
async def test_ts_sdk_2_client_without_credentials_gets_401(interop_tools: None, daphne: Any, mode: str) -> None:
    with pytest.raises(harness.ClientFailed) as failed:
        await sync_to_async(harness.run_ts2_client, thread_sensitive=False)(
            daphne.url + TRANSPORTS["http"], headers={}, tool="whoami", mode=mode, timeout=90
        )
    assert failed.value.unauthorized, failed.value
    assert "initialize" not in (harness._last_json_line(failed.value.stdout) or {}).get("methods", [])


@pytest.mark.parametrize("era", ["legacy", "auto", "modern"])
@pytest.mark.parametrize("credential", ["cookie", "bearer"])
async def test_inspector_cli_on_each_protocol_era_prints_no_error(
    interop_tools: None,
    daphne: Any,
    alice: Any,
    alice_headers: dict[str, str],
    bearer_headers: dict[str, str],
    credential: str,
    era: str,
) -> None:
    """``--protocol-era``: ``legacy`` (its default) opens a session; ``auto`` and ``modern`` speak 2026-07-28.

    No line of its output, stdout or stderr, matches /error/i (other than ``"isError": false``), nor does the
    gateway log an error.
    """
    headers = alice_headers if credential == "cookie" else bearer_headers
    since = len(daphne.log())
    run = await sync_to_async(harness.run_inspector, thread_sensitive=False)(
        daphne.url + TRANSPORTS["http"], transport="http", headers=headers, tool="whoami", protocol_era=era, timeout=90
    )
    assert run.text == "alice" and not run.is_error
    assert not harness.error_lines(run.output), run.output
    assert not server_error_lines(daphne, since)
    modern = era != "legacy"
    assert (MODERN_SERVER_INFO in run.details["call"].get("_meta", {})) is modern, run.details["call"]
    assert await McpSession.objects.filter(user=alice).aexists() is not modern


# mcp-remote's strategies: its default (http-first) tries Streamable HTTP and falls back to HTTP+SSE when the POST
# is refused, logging that refusal. Against the SDK's own sse_app() under the same launcher it prints the same
# line (tests/interop/README.md): the client's design, not the gateway's.
HTTP_FIRST_FALLBACK = r"Received error \(status 405\): Error POSTing to endpoint"
MCP_REMOTE_STRATEGIES = [
    pytest.param("http", "http-only", (), id="http-only"),
    pytest.param("http", "http-first", (), id="http-first"),
    pytest.param("sse", "sse-only", (), id="sse-only"),
    pytest.param("sse", "http-first", (HTTP_FIRST_FALLBACK,), id="http-first-at-the-sse-url"),
]


@pytest.mark.parametrize(("transport", "strategy", "expected"), MCP_REMOTE_STRATEGIES)
async def test_mcp_remote_strategies_print_no_unexpected_error(
    interop_tools: None,
    daphne: Any,
    bearer_headers: dict[str, str],
    transport: str,
    strategy: str,
    expected: tuple[str, ...],
) -> None:
    since = len(daphne.log())
    run = await sync_to_async(harness.run_mcp_remote, thread_sensitive=False)(
        daphne.url + TRANSPORTS[transport],
        transport=transport,
        headers=bearer_headers,
        tool="whoami",
        strategy=strategy,
        timeout=90,
    )
    assert run.text == "alice" and not run.is_error
    assert not harness.error_lines(run.output, expected), run.output
    assert all(any(re.search(pattern, line) for line in run.output.splitlines()) for pattern in expected), run.output
    assert not server_error_lines(daphne, since)


# (suite, how it is run, how many scenarios it scores): 0.1.16 and the 0.2 prerelease's active suite at the handshake
# era; the prerelease's required scenarios of protocol 2026-07-28, each request on its own.
CONFORMANCE_RUNS = [
    pytest.param({"suite": "active"}, 30, id="0.1.16-active"),
    pytest.param({"suite": "active", "next_suite": True}, 31, id="0.2.0-alpha.12-active"),
    pytest.param({"requirements": "2026-07-28", "next_suite": True}, 37, id="0.2.0-alpha.12-requirements-2026-07-28"),
]


@pytest.mark.parametrize(("run", "scored"), CONFORMANCE_RUNS)
async def test_conformance_suite_passes_through_an_authenticated_path(
    interop_tools: None, start_daphne: Any, bearer_headers: dict[str, str], run: dict[str, Any], scored: int
) -> None:
    # The suite opens a session per scenario and ends none: over the default per-user limit (20), the rest got 429.
    server = start_daphne(overrides={"MCP_GATEWAY_MAX_SESSIONS_PER_USER": 200})
    result = await sync_to_async(harness.run_conformance, thread_sensitive=False)(
        f"{server.url}/mcp-conformance/", bearer_headers, timeout=600, **run
    )
    assert result.ok, result.summary()
    assert len(result.passed) == len(result.scored) == scored, result.summary()


async def test_inspector_runs_in_a_row_never_lock_their_owner_out(
    interop_tools: None, start_daphne: Any, alice: Any, bearer_headers: dict[str, str]
) -> None:
    """The issue's acceptance test: 25 Inspector CLI runs under the default cap (20), none ending its sessions.

    Each run lists the tools and calls one, each in a session of its own that the Inspector leaves open
    (no ``DELETE``): without eviction the 11th run got 429. Every run succeeds; the sessions that made room
    were closed as ``evicted``, and audited so.
    """
    server = start_daphne()  # the default MAX_SESSIONS_PER_USER
    for run_no in range(25):
        run = await sync_to_async(harness.run_client, thread_sensitive=False)(
            "inspector", f"{server.url}/mcp-test/", transport="http", headers=bearer_headers, tool="whoami", timeout=90
        )
        assert run.text == "alice" and not run.is_error, f"run {run_no}: {run}"
    assert await McpSession.objects.open().filter(user=alice).acount() <= 20
    evicted = [s.ref async for s in McpSession.objects.filter(user=alice, close_reason=CloseReason.EVICTED)]
    assert len(evicted) >= 50 - 20  # two sessions a run
    audited = AuditEvent.objects.filter(kind=AuditKind.SESSION_REVOKED, detail=CloseReason.EVICTED, user=alice)
    assert sorted([row.session_ref async for row in audited]) == sorted(evicted)


@pytest.mark.parametrize("transport", ["sse", "streamable_http"])
@pytest.mark.parametrize("credential", ["cookie", "bearer", "none"])
async def test_python_sdk_2_client_on_both_transports(
    daphne: Any,
    alice_headers: dict[str, str],
    bearer_headers: dict[str, str],
    credential: str,
    transport: str,
) -> None:
    """The mcp 2.3 client in its default (auto) mode; the 1.x one runs in its own venv above."""
    headers = {"cookie": alice_headers, "bearer": bearer_headers, "none": {}}[credential]
    if credential == "none":
        with pytest.raises(BaseException) as refused:
            async with mcp_client(daphne.url, headers, prefix="/mcp-test/", transport=transport):
                pass
        assert _unauthorized(refused.value), repr(refused.value)
        return
    async with mcp_client(daphne.url, headers, prefix="/mcp-test/", transport=transport) as client:
        assert "whoami" in {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("whoami", {})
    assert result.content[0].text == "alice"


def _unauthorized(exc: BaseException) -> bool:
    """Whether the client failed on the gateway's 401, however it wrapped it.

    Over Streamable HTTP the client surfaces the 401's JSON-RPC error body as an ``MCPError``.
    """
    if isinstance(exc, BaseExceptionGroup):
        return any(_unauthorized(inner) for inner in exc.exceptions)
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code == 401
    if isinstance(exc, MCPError):
        return (exc.error.data or {}).get("reason") == "authentication_required"
    return exc.__cause__ is not None and _unauthorized(exc.__cause__)
