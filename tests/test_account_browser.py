"""Your MCP access in a real browser: a user helps themselves, and every page passes an accessibility check.

Two gateway processes on Redis: the browser uses the first, the MCP client the second, so that ending the
client's session on the page reaches a stream held by another process. The user logs in through the login
form, creates a token limited to one tool with the keyboard alone, reads it once, sees the session a client
opens with it and the calls it makes (the tool it may use, and one it may not, refused) under Activity, ends
that session (the client's stream closes), revokes the token (the client's next call gets 401), and revokes
the access of an app it allowed through OAuth (under Connected apps). Each page is
checked with axe-core (injected into it; no violation of serious or critical impact) and photographed into
``tests/artifacts/account/`` (git-ignored; one of each is in ``docs/_static/account/``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from django.contrib.auth.models import User

from mcp_oauth.models import Grant, OAuthClient

from .clients import BOUND, INITIALIZE, handshake, jsonrpc, raw_stream
from .conftest import IN_CI, off_loop
from .interop import harness
from .test_browser import serve_static

pytestmark = pytest.mark.django_db(transaction=True)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "account"
PASSWORD = "correct horse battery"
BLOCKING = ("serious", "critical")
# What the client calls with its token, limited to echo: echo, then a tool it may not reach.
CALLS = (("echo", {"text": "hello from the build box"}), ("whoami", {}))


@pytest.fixture(scope="module")
def axe_script() -> Path:
    try:
        return harness.ensure_node_tools().axe
    except harness.InteropUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI needs axe-core (tests/interop): {exc}")
        pytest.skip(f"axe-core unavailable: {exc}")


def check_accessibility(page: Any, axe: Path, what: str) -> None:
    """Run axe-core on the page as it is; fail on any violation of serious or critical impact, naming each."""
    page.add_script_tag(path=str(axe))
    violations = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    blocking = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in violations
        if v["impact"] in BLOCKING
    ]
    assert not blocking, f"{what}: " + "; ".join(blocking)


def snapshot(page: Any, name: str, selector: str | None = None) -> None:
    """The whole page, or only the element ``selector`` picks, into ``ARTIFACTS``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if selector is None:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    else:
        page.locator(selector).screenshot(path=str(ARTIFACTS / f"{name}.png"))


def tab_to(page: Any, selector: str, limit: int = 60) -> list[str]:
    """Press Tab until ``selector`` has the focus (at most ``limit`` times); the focus order seen on the way."""
    seen: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return seen
    raise AssertionError(f"{selector} never got the focus; the order was {seen}")


class Agent:
    """An MCP client holding the token, run in a thread of its own (the browser's driver owns this one).

    It opens an HTTP+SSE session on ``url``, initializes it, calls each of ``CALLS`` (noting whether the answer
    was an error) and reads its stream until it ends; then, told to, makes one more call and notes its status.
    """

    def __init__(self, url: str, secret: str) -> None:
        self.url, self.headers = url, {"Authorization": f"Bearer {secret}"}
        self.connected, self.stream_ended, self.call_again, self.called = (threading.Event() for _ in range(4))
        self.status: int | None = None
        self.answers: dict[str, bool] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            asyncio.run(self.session())
        except BaseException as exc:
            self.error = exc
            self.connected.set()
            self.stream_ended.set()
        finally:
            self.called.set()

    async def session(self) -> None:
        async with httpx2.AsyncClient(timeout=BOUND) as http:
            async with raw_stream(http, f"{self.url}/mcp/sse", self.headers) as stream:
                await handshake(http, self.url, stream, self.headers)
                for n, (tool, arguments) in enumerate(CALLS, start=1):
                    call = jsonrpc("tools/call", {"name": tool, "arguments": arguments}, id=n)
                    await http.post(self.url + stream.endpoint, json=call, headers=self.headers)
                    reply = await stream.next_message(timeout=BOUND)
                    self.answers[tool] = "error" in reply or bool(reply.get("result", {}).get("isError"))
                self.connected.set()
                try:
                    while True:
                        await stream.next_event(timeout=BOUND * 3)
                except EOFError:
                    self.stream_ended.set()
            await asyncio.to_thread(self.call_again.wait, BOUND * 3)
            response = await http.post(f"{self.url}/mcp/", json=INITIALIZE, headers=self.headers)
            self.status = response.status_code

    def wait(self, event: threading.Event, what: str) -> None:
        assert event.wait(BOUND), f"not within {BOUND}s: {what}"
        if self.error is not None:
            raise self.error


def allow_app(name: str) -> Grant:
    """Carol allowed the OAuth client ``name`` for the site's first mount."""
    client = OAuthClient.objects.create(client_id=f"id-{name}", kind="dynamic", name=name)
    return Grant.objects.create(user=User.objects.get(username="carol"), client=client, resource="/mcp", scope="mcp")


def make_carol(make_user: Any) -> None:
    carol = make_user("carol")
    carol.set_password(PASSWORD)
    carol.save()


@pytest.fixture
def sites(start_daphne: Any, redis_settings: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    # A session's client name is saved at its worker's sweep, paced by the ping interval: one a second here.
    overrides = {**redis_settings, "MCP_GATEWAY_PING_INTERVAL": 1.0}
    yield start_daphne(overrides=overrides), start_daphne(overrides=overrides)


def reload_until(page: Any, url: str, text: str, where: str = "body") -> None:
    """Load ``url`` until ``where`` shows ``text`` (what a worker saves later), for at most BOUND seconds."""
    deadline = time.monotonic() + BOUND
    while True:
        page.goto(url)
        if text in page.inner_text(where) or time.monotonic() > deadline:
            return
        page.wait_for_timeout(100)


def test_a_user_ends_their_own_session_and_token_in_a_browser(
    sites: tuple[Any, Any], chromium: Any, make_user: Any, axe_script: Path
) -> None:
    off_loop(make_carol, make_user)
    site, other = sites
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    context.route("**/static/**", serve_static)  # the launcher serves no static files: the page's CSS, from here
    page = context.new_page()

    page.goto(f"{site.url}/accounts/login/")
    page.fill("#id_username", "carol")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/")
    page.click("text=Your MCP access")
    page.wait_for_url(f"{site.url}/account/mcp/")
    assert page.get_by_role("heading", name="Your MCP access", level=1).is_visible()
    check_accessibility(page, axe_script, "the empty page")
    snapshot(page, "1-empty")

    # The keyboard alone, from the page to the new token: link, name, lifetime, what it is limited to, the button.
    tab_to(page, "#mcp-new-token")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site.url}/account/mcp/tokens/new/")
    check_accessibility(page, axe_script, "the token form")
    snapshot(page, "2-token-form")
    page.click("#mcp-create-token")  # without a name: the form again, saying why
    assert page.get_attribute("#id_name", "aria-invalid") == "true"
    check_accessibility(page, axe_script, "the token form with an error")
    tab_to(page, "#id_name")
    page.keyboard.type("agent on the build box")
    assert len(tab_to(page, "#id_expires")) == 1, "the lifetime comes right after the name"
    page.keyboard.press("ArrowDown")  # from 90 days to 365
    assert len(tab_to(page, "#id_limit_to_0")) == 1, "what it is limited to comes right after the lifetime"
    assert page.get_by_role("group", name="Limit to").is_visible()
    tab_to(page, 'input[value="mcp:tools:echo"]')
    page.keyboard.press("Space")
    assert page.is_checked('input[value="mcp:tools:echo"]')
    tab_to(page, "#mcp-create-token")
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    secret = page.input_value("#mcp-token-secret")
    assert secret.startswith("mcp_") and len(secret) == 47
    page_text = page.inner_text("body")
    assert f"{site.url}/mcp/" in page_text and "claude mcp add --transport http my-site" in page_text
    assert "It is limited to:" in page_text and "The tool “echo”" in page_text
    check_accessibility(page, axe_script, "the new token's page")
    snapshot(page, "3-token-created")

    agent = Agent(other.url, secret)
    agent.wait(agent.connected, "the client connected with the token and made its calls")
    assert agent.answers == {"echo": False, "whoami": True}, "the token reaches echo alone"
    reload_until(page, f"{site.url}/account/mcp/", "raw-test")
    assert secret not in page.content()
    row = page.locator("tr", has_text="raw-test")
    assert row.count() == 1
    assert "Token “agent on the build box”" in row.inner_text() and "HTTP+SSE" in row.inner_text()
    assert "The tool “echo”" in page.locator("#tokens tr", has_text="agent on the build box").inner_text()
    check_accessibility(page, axe_script, "the page with a session and a token")
    snapshot(page, "4-session-open")

    # The calls are written in batches, off the request's path: under Activity once the other worker stored them.
    reload_until(page, f"{site.url}/account/mcp/#activity", "whoami", where="#activity")
    calls = page.locator("#activity tbody tr")
    assert calls.count() == 2
    newest, oldest = calls.nth(0).inner_text(), calls.nth(1).inner_text()
    assert "whoami" in newest and "Refused" in newest and "Token “agent on the build box”" in newest
    assert "echo" in oldest and "OK" in oldest and "Session " in oldest
    assert "hello from the build box" not in page.content(), "no argument is shown"
    check_accessibility(page, axe_script, "the page with activity")
    snapshot(page, "7-activity", "#activity")

    row.get_by_role("button", name="End the session of raw-test").click()
    page.wait_for_url(f"{site.url}/account/mcp/#sessions")
    agent.wait(agent.stream_ended, "the client's stream closed")
    assert page.get_by_role("status").inner_text().startswith("The session was ended")
    ended = page.locator("table", has=page.locator("caption", has_text="Recently ended"))
    assert "Revoked" in ended.locator("tr", has_text="raw-test").inner_text()
    check_accessibility(page, axe_script, "the page after ending the session")
    snapshot(page, "5-session-ended")

    page.get_by_role("button", name="Revoke the token “agent on the build box”").click()
    page.wait_for_url(f"{site.url}/account/mcp/#tokens")
    assert "Revoked" in page.locator("#tokens tr", has_text="agent on the build box").last.inner_text()
    agent.call_again.set()
    agent.wait(agent.called, "the client's call after the revocation")
    assert agent.status == 401
    check_accessibility(page, axe_script, "the page after revoking the token")
    snapshot(page, "6-token-revoked")

    # An app carol allowed through OAuth, under Connected apps; its "Revoke access" ends its grant.
    grant = off_loop(allow_app, "Browser app")
    page.goto(f"{site.url}/account/mcp/")  # not "#apps": from "#tokens", only a scroll
    assert "Browser app" in page.locator("#apps tr", has_text="Browser app").inner_text()
    check_accessibility(page, axe_script, "the page with a connected app")
    snapshot(page, "8-connected-apps", "#apps")
    page.get_by_role("button", name="Revoke access of “Browser app”").click()
    page.wait_for_url(f"{site.url}/account/mcp/#apps")
    assert page.get_by_role("status").inner_text().startswith("Browser app no longer has access")
    assert off_loop(lambda: Grant.objects.get(pk=grant.pk).revoked_at is not None)
    check_accessibility(page, axe_script, "the page after revoking the app's access")
    context.close()
