"""A real browser: a page on another origin attacks a logged-in victim's MCP session and gets nothing.

The victim logs in on the site's origin; the site's own page gets a stream ticket, opens an EventSource and calls
a tool. A page on another origin of the same site (another port on the same host, so the browser still sends the
victim's Lax cookies) then tries the hijacks: an EventSource on the victim's session ID, credentialed fetch POSTs
into the victim's session, and a stolen and a replayed ticket. It must receive no event and inject no call.
Headless Chromium from Debian, driven by Playwright with no browser download.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from demo.models import Note
from mcp_sessions.models import AuditEvent, AuditKind

from .conftest import off_loop

pytestmark = pytest.mark.django_db(transaction=True)

SITE_PAGE = """
async () => {
  const waitFor = async (test) => {
    for (let i = 0; i < 200 && !test(); i++) await new Promise(r => setTimeout(r, 25));
  };
  const csrf = document.cookie.match(/csrftoken=([^;]+)/)[1];
  const ask = async () => (await (await fetch("/mcp/tickets", {method: "POST", body: "{}",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf}})).json()).ticket;
  const ticket = await ask();
  const es = new EventSource(`/mcp/sse?ticket=${ticket}`);
  const messages = [];
  es.addEventListener("message", e => messages.push(JSON.parse(e.data)));
  const endpoint = await new Promise(r => es.addEventListener("endpoint", e => r(e.data)));
  const post = (m) => fetch(endpoint, {method: "POST", body: JSON.stringify(m),
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf}});
  await post({jsonrpc: "2.0", id: 0, method: "initialize", params: {protocolVersion: "2025-11-25",
      capabilities: {}, clientInfo: {name: "browser", version: "1"}}});
  await waitFor(() => messages.some(m => m.id === 0));
  await post({jsonrpc: "2.0", method: "notifications/initialized"});
  await post({jsonrpc: "2.0", id: 1, method: "tools/call", params: {name: "whoami", arguments: {}}});
  await waitFor(() => messages.some(m => m.id === 1));
  window.mcp = {messages, post};
  return {endpoint, replayed: ticket, stolen: await ask(),
          whoami: messages.find(m => m.id === 1).result.structuredContent.username};
}
"""

ATTACK_PAGE = """
async ({site, endpoint, stolen, replayed}) => {
  const got = {events: 0, posts: []};
  const sessionId = new URL(site + endpoint).searchParams.get("session_id");
  const stream = (url) => new Promise(resolve => {
    const es = new EventSource(url, {withCredentials: true});
    es.addEventListener("endpoint", () => got.events++);
    es.addEventListener("message", () => got.events++);
    es.onerror = () => { es.close(); resolve(); };
    setTimeout(() => { es.close(); resolve(); }, 3000);
  });
  await stream(`${site}/mcp/sse?session_id=${sessionId}`);
  await stream(`${site}/mcp/sse?ticket=${stolen}`);
  await stream(`${site}/mcp/sse?ticket=${replayed}`);
  const call = JSON.stringify({jsonrpc: "2.0", id: 99, method: "tools/call",
      params: {name: "add_note", arguments: {title: "pwned"}}});
  for (const [mode, type] of [["cors", "text/plain"], ["cors", "application/json"], ["no-cors", "text/plain"]]) {
    try {
      const r = await fetch(site + endpoint, {method: "POST", mode, credentials: "include",
          headers: {"Content-Type": type}, body: call});
      got.posts.push(r.type === "opaque" ? "opaque" : r.status);
    } catch (e) { got.posts.push("blocked"); }
  }
  return got;
}
"""


def make_victim(make_user: Callable[..., Any]) -> None:
    victim = make_user("victim")
    victim.set_password("correct horse battery")
    victim.save()


@pytest.fixture
def attacker_origin() -> Iterator[str]:
    """An empty page served from another port of the same host: another origin, the same site."""

    class Blank(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>attacker</title>")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_cross_origin_page_cannot_hijack_the_victims_session(
    start_daphne: Any, chromium: Any, attacker_origin: str, make_user: Any
) -> None:
    off_loop(make_victim, make_user)
    site = start_daphne()
    context = chromium.new_context()

    page = context.new_page()
    page.goto(f"{site.url}/accounts/login/")
    page.fill("#id_username", "victim")
    page.fill("#id_password", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/")
    legit = page.evaluate(SITE_PAGE)
    assert legit["whoami"] == "victim"

    attack = context.new_page()
    attack.goto(attacker_origin)
    got = attack.evaluate(ATTACK_PAGE, {"site": site.url, **legit})

    assert got["events"] == 0, "the attack page received events from the victim's session"
    # The page can read nothing back: CORS-mode POSTs fail (the simple one is sent and refused with 403, the
    # JSON one dies in its preflight), the no-cors one is opaque.
    assert got["posts"] == ["blocked", "blocked", "opaque"]
    refusals = AuditEvent.objects.filter(kind=AuditKind.ORIGIN_REFUSED)
    deadline = time.monotonic() + 5  # the audit trail stores its rows in batches
    while off_loop(refusals.count) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert off_loop(refusals.count) >= 5, "the gateway itself refused the cross-origin streams and posts"
    assert not off_loop(Note.objects.filter(title="pwned").exists), "the attack page injected a tool call"
    # The victim's own page never saw a reply to the attacker's request, and still works.
    page.evaluate("""async () => {
        await window.mcp.post({jsonrpc: "2.0", id: 2, method: "tools/call",
                               params: {name: "whoami", arguments: {}}});
        for (let i = 0; i < 200 && !window.mcp.messages.some(m => m.id === 2); i++)
            await new Promise(r => setTimeout(r, 25));
    }""")  # fmt: skip
    ids = [m.get("id") for m in page.evaluate("window.mcp.messages")]
    assert 99 not in ids and 2 in ids
    context.close()


def make_usage(make_user: Callable[..., Any]) -> None:
    """A superuser to log in with, and usage rows as wide as their columns allow."""
    from django.utils import timezone

    from mcp_sessions.models import ClientUsage, CredentialKind, UsageRow

    root = make_user("root", is_staff=True, is_superuser=True)
    root.set_password("correct horse battery")
    root.save()
    user = make_user("someone.at.corp", email="someone.with.a.long.address@corp.example")
    now = timezone.now()
    ClientUsage.objects.record_batch(
        UsageRow(
            user_id=user.pk,
            username=user.username,
            credential_kind=kind,
            credential_ref="f" * 12,
            token_id=None,
            client_name=name,
            client_version="9" * 100,
            protocol_version="2" * 40,  # what a refused request may have claimed
            first_seen=now,
            last_seen=now,
            requests=10**10,
            refusals=10**7,
        )
        for kind, name in ((CredentialKind.TOKEN, "w" * 200), (CredentialKind.LOGIN, "claude-code"))
    )


def serve_static(route: Any) -> None:
    """Answer a request for a static file with the file Django's finders find, as runserver would."""
    from urllib.parse import urlsplit

    from django.conf import settings
    from django.contrib.staticfiles import finders

    found = finders.find(urlsplit(route.request.url).path.removeprefix(settings.STATIC_URL))
    if isinstance(found, str):
        route.fulfill(path=found)
    else:
        route.fulfill(status=404)


def test_the_client_usage_list_fits_1280_px(start_daphne: Any, chromium: Any, make_user: Any) -> None:
    """The widest rows the columns allow, in a 1280 px window: the list needs no horizontal scrolling."""
    off_loop(make_usage, make_user)
    site = start_daphne()
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.route("**/static/**", serve_static)  # the launcher serves no static files: the admin's CSS, from here
    page = context.new_page()
    page.goto(f"{site.url}/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_url(f"{site.url}/admin/")
    # With the navigation sidebar folded away, as the admin remembers it per browser; open, the list scrolls in its box.
    page.evaluate("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    page.goto(f"{site.url}/admin/mcp_sessions/clientusage/")
    widths = page.evaluate("""() => ({
        page: document.documentElement.scrollWidth,
        table: document.querySelector("#result_list").scrollWidth,
        room: document.querySelector(".results").clientWidth,
        rows: document.querySelectorAll("#result_list tbody tr").length,
        filters: document.querySelector("#changelist-filter").scrollWidth,
        filters_room: document.querySelector("#changelist-filter").clientWidth,
        columns: [...document.querySelectorAll("#result_list thead th")].map(th => [th.className, th.offsetWidth]),
    })""")  # fmt: skip
    assert widths["rows"] == 2
    assert widths["page"] <= 1280, repr(widths)
    assert widths["table"] <= widths["room"], repr(widths)
    assert widths["filters"] <= widths["filters_room"], repr(widths)
    context.close()
