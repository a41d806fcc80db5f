"""The page a browser gets at an MCP endpoint: only for a browser's navigation, secret-free, behind the Host guard."""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import override_settings
from mcp.server.lowlevel import Server

from mcp_gateway.http import GatewayRequest
from mcp_gateway.page import wants_page
from mcp_gateway.routing import mcp_application
from mcp_sessions import audit
from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, McpSession

from .asgi import application
from .asgi_helpers import Downstream, Recorder, http_scope
from .clients import BOUND
from .conftest import Daphne, login_headers

pytestmark = pytest.mark.django_db(transaction=True)

CHROME = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
    "application/signed-exchange;v=b3;q=0.7"
)
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SITE = "http://127.0.0.1:8000"
URLS = (f"{SITE}/mcp/", f"{SITE}/mcp/sse")

# (id, Accept, whether it gets the page)
NEGOTIATION = [
    ("chrome", CHROME, True),
    ("firefox-safari", FIREFOX, True),
    ("html-only", "text/html", True),
    ("html-over-a-weaker-event-stream", "text/html, text/event-stream;q=0.5", True),
    ("sse-client", "text/event-stream", False),
    ("streamable-http-client", "application/json, text/event-stream", False),
    ("any", "*/*", False),
    ("text-any", "text/*", False),
    ("no-accept", None, False),
    ("html-and-event-stream-tied", "text/html, text/event-stream", False),
    ("event-stream-tied-with-html", "text/event-stream, text/html", False),
    ("event-stream-preferred", "text/html;q=0.5, text/event-stream", False),
    ("html-under-a-stronger-wildcard", "text/html;q=0.9, */*", False),
    ("html-refused", "text/html;q=0, */*;q=0.1", False),
    ("json-only", "application/json", False),
]


@pytest.mark.parametrize(("accept", "page"), [c[1:] for c in NEGOTIATION], ids=[c[0] for c in NEGOTIATION])
def test_only_a_browser_navigation_wants_the_page(accept: str | None, page: bool) -> None:
    headers = [("Accept", accept)] if accept is not None else []
    assert wants_page(GatewayRequest(http_scope(headers=headers))) is page
    assert not wants_page(GatewayRequest(http_scope("POST", headers=headers)))


async def call(
    path: str, *, accept: str | None = FIREFOX, headers: tuple[tuple[str, str], ...] = (), **kw: Any
) -> Recorder:
    extra = [("Accept", accept)] if accept is not None else []
    recorder = Recorder()
    await application(http_scope("GET", path, headers=[*extra, *headers], **kw), recorder.receive, recorder.send)
    return recorder


def headers_of(recorder: Recorder) -> dict[str, str]:
    [start] = [m for m in recorder.sent if m["type"] == "http.response.start"]
    return {k.decode(): v.decode() for k, v in start["headers"]}


# (id, path, what the visitor opened)
PAGES = [
    ("streamable-http", "/mcp/", URLS[0]),
    ("streamable-http-without-slash", "/mcp", URLS[0]),
    ("http-sse", "/mcp/sse", URLS[1]),
]


@pytest.mark.parametrize(("path", "opened"), [c[1:] for c in PAGES], ids=[c[0] for c in PAGES])
@pytest.mark.parametrize("accept", [CHROME, FIREFOX], ids=["chrome", "firefox"])
async def test_a_browser_gets_a_page_naming_both_endpoints(path: str, opened: str, accept: str) -> None:
    response = await call(path, accept=accept)
    assert response.status == 200
    page = response.body.decode()
    for url in URLS:
        assert f"<code>{url}</code>" in page
    assert f"<code>{opened}</code> <span" in page  # marked as the address opened
    assert f"claude mcp add --transport http demo-notes {URLS[0]}" in page
    assert f"npx -y mcp-remote {URLS[0]}" in page
    assert "Bearer &lt;your token&gt;" in page
    assert "You are not logged in" in page
    headers = headers_of(response)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'unsafe-inline'")
    assert "Accept" in headers["vary"]
    assert "set-cookie" not in headers


# (id, path, Accept, status and reason the transports answer today)
UNCHANGED = [
    ("streamable-get-sse-client-401", "/mcp/", "text/event-stream", 401, "authentication_required"),
    ("streamable-get-mcp-client-401", "/mcp/", "application/json, text/event-stream", 401, "authentication_required"),
    ("streamable-get-any-401", "/mcp/", "*/*", 401, "authentication_required"),
    ("streamable-get-tied-401", "/mcp/", "text/html, text/event-stream", 401, "authentication_required"),
    ("streamable-get-json-only-406", "/mcp/", "application/json", 406, "not_acceptable"),
    ("streamable-get-no-accept-406", "/mcp/", None, 406, "not_acceptable"),
    ("sse-get-sse-client-401", "/mcp/sse", "text/event-stream", 401, "authentication_required"),
    ("sse-get-any-401", "/mcp/sse", "*/*", 401, "authentication_required"),
]


@pytest.mark.parametrize(
    ("path", "accept", "status", "reason"), [c[1:] for c in UNCHANGED], ids=[c[0] for c in UNCHANGED]
)
async def test_mcp_clients_get_what_they_got_before(path: str, accept: str | None, status: int, reason: str) -> None:
    response = await call(path, accept=accept)
    assert (response.status, response.reason) == (status, reason)


async def test_a_token_without_a_session_still_gets_400_not_the_page(alice: Any) -> None:
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "cli")
    response = await call("/mcp/", accept="text/event-stream", headers=(("Authorization", f"Bearer {secret}"),))
    assert (response.status, response.reason) == (400, "missing_session_id")


@pytest.mark.parametrize("path", ["/mcp/", "/mcp/sse"], ids=["streamable-http", "http-sse"])
async def test_a_bad_host_is_refused_before_the_page(path: str) -> None:
    response = await call(path, host="evil.example")
    assert (response.status, response.reason) == (421, "host_not_allowed")
    with anyio.fail_after(BOUND):  # recorded as any refused Host is
        while not await AuditEvent.objects.filter(kind=AuditKind.HOST_REFUSED).aexists():
            await anyio.sleep(0.05)


@pytest.mark.parametrize(
    ("path", "status"),
    [("/mcp/messages/", 405), ("/mcp/tickets", 405), ("/mcp/nothing", 404)],
    ids=["messages", "tickets", "unknown-path"],
)
async def test_other_paths_keep_their_answers(path: str, status: int) -> None:
    assert (await call(path)).status == status


@pytest.fixture
def spy_audit(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Everything recorded or scheduled for the audit trail from now on."""
    seen: list[Any] = []
    monkeypatch.setattr(audit, "record", lambda *a, **kw: seen.append(a))
    monkeypatch.setattr(audit, "record_refusal_after_answer", lambda *a, **kw: seen.append(a))
    return seen


@override_settings(MCP_GATEWAY_RATE_LIMIT=(1, 60))
async def test_a_logged_in_visitor_is_named_and_nothing_secret_is_shown(alice: Any, spy_audit: list[Any]) -> None:
    login = await sync_to_async(login_headers)(alice)
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "cli")
    cookies = dict(part.split("=", 1) for part in login["Cookie"].split("; "))
    presented = (("Cookie", login["Cookie"]), ("X-CSRFToken", login["X-CSRFToken"]))
    for path in ("/mcp/", "/mcp/sse", "/mcp/", "/mcp/sse"):  # past the rate limit of one request a minute
        response = await call(path, headers=presented)
        assert response.status == 200
        page = response.body.decode()
        assert "logged in to this site as <strong>alice</strong>" in page
        for value in (*cookies.values(), secret, login["X-CSRFToken"], "csrfmiddlewaretoken"):
            assert value not in page
        assert "set-cookie" not in headers_of(response)
    assert spy_audit == []
    assert not await McpSession.objects.aexists()
    assert not await AuditEvent.objects.aexists()


async def test_a_bearer_token_is_neither_used_nor_shown(alice: Any, spy_audit: list[Any]) -> None:
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "cli")
    response = await call("/mcp/sse", headers=(("Authorization", f"Bearer {secret}"),))
    assert response.status == 200
    assert secret not in response.body.decode() and "You are not logged in" in response.body.decode()
    assert (await AccessToken.objects.aget()).last_used_at is None
    assert spy_audit == []


async def test_names_are_escaped_and_urls_follow_the_root_path_and_scheme() -> None:
    app = mcp_application(Downstream(), servers={"/tools/": Server("<script>alert(1)</script>")})
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        recorder = Recorder()
        scope = http_scope("GET", "/site/tools/sse", headers=[("Accept", FIREFOX), ("X-Forwarded-Proto", "https")])
        scope["root_path"] = "/site"
        await app(scope, recorder.receive, recorder.send)
    page = recorder.body.decode()
    assert recorder.status == 200
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<code>https://127.0.0.1:8000/site/tools/</code>" in page
    assert "<code>https://127.0.0.1:8000/site/tools/sse</code>" in page


async def test_a_site_overrides_the_template(tmp_path: Any) -> None:
    (tmp_path / "mcp_gateway").mkdir()
    template = "Ours: {{ streamable_http_url }} {{ username|default:'-' }}"
    (tmp_path / "mcp_gateway" / "endpoint.html").write_text(template)
    templates = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    with override_settings(TEMPLATES=templates):
        response = await call("/mcp/sse")
    assert response.body.decode() == f"Ours: {URLS[0]} -"


def test_through_a_real_launcher(daphne: Daphne, alice: Any) -> None:
    login = login_headers(alice)
    with httpx2.Client(timeout=10) as client:
        for path in ("/mcp/", "/mcp/sse"):
            page = client.get(daphne.url + path, headers={"Accept": CHROME, **login})
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert f"<code>{daphne.url}/mcp/</code>" in page.text and f"<code>{daphne.url}/mcp/sse</code>" in page.text
            assert "<strong>alice</strong>" in page.text
            stream = client.get(daphne.url + path, headers={"Accept": "text/event-stream"})
            assert stream.status_code == 401
        assert client.get(daphne.url + "/mcp/", headers={"Accept": CHROME, "Host": "evil.example"}).status_code == 421
