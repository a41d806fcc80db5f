"""The published OAuth flows of Claude.ai and ChatGPT, emulated step by step against the authorization server.

Their metadata documents are served on loopback (the test-only ``MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK``) under
the clients' published shapes: callbacks on their own hosts, ``token_endpoint_auth_method: none``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from mcp_oauth.models import OAuthClient

from .oauth_flow import ISSUER, RESOURCE, Client, allow, callback_params, exchange, refresh, register, start

pytestmark = pytest.mark.django_db

CLAUDE_CALLBACKS = ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"]
CHATGPT_CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"
DOCUMENTS = {
    "/claude.json": {"client_name": "Claude", "redirect_uris": CLAUDE_CALLBACKS, "token_endpoint_auth_method": "none"},
    "/chatgpt.json": {
        "client_name": "ChatGPT",
        "redirect_uris": [CHATGPT_CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    },
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        body = json.dumps({"client_id": url, **DOCUMENTS.get(self.path, {})}).encode()
        self.send_response(200 if self.path in DOCUMENTS else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "max-age=300")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def documents(settings: Any) -> Iterator[str]:
    settings.MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def browser(django_user_model: Any) -> Any:
    browser = Client()
    browser.force_login(django_user_model.objects.create_user("erin"))
    return browser


def discover(api: Any) -> dict[str, Any]:
    """What both clients do first: the resource's metadata names the issuer, whose metadata says how to register."""
    metadata: dict[str, Any] = api.get("/.well-known/oauth-authorization-server").json()
    return metadata


def test_claude_uses_cimd_when_advertised_with_none(documents: str, browser: Any) -> None:
    api = Client()
    metadata = discover(api)
    # Claude.ai's rule: a metadata document only if supported and "none" is an auth method, else DCR.
    assert metadata["client_id_metadata_document_supported"] is True
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    client_id = f"{documents}/claude.json"
    auth = start(client_id, redirect_uri=CLAUDE_CALLBACKS[0])
    response = allow(browser, auth)
    assert response["Location"].startswith(CLAUDE_CALLBACKS[0] + "?")
    params = callback_params(response)
    assert params["iss"] == ISSUER and params["state"] == auth.state
    tokens = exchange(api, auth, params["code"]).json()
    assert tokens["token_type"] == "Bearer"
    assert refresh(api, client_id, tokens["refresh_token"]).status_code == 200


def test_claude_com_callback_is_listed_too(documents: str, browser: Any) -> None:
    auth = start(f"{documents}/claude.json", redirect_uri=CLAUDE_CALLBACKS[1])
    assert urlsplit(allow(browser, auth)["Location"]).netloc == "claude.com"


def test_claude_registers_again_after_401_invalid_client(browser: Any) -> None:
    api = Client()
    first = register(api, client_name="Claude", redirect_uris=CLAUDE_CALLBACKS)
    auth = start(first["client_id"], redirect_uri=CLAUDE_CALLBACKS[0])
    tokens = exchange(api, auth, callback_params(allow(browser, auth))["code"]).json()
    OAuthClient.objects.filter(client_id=first["client_id"]).delete()  # the site forgot the client
    stale = refresh(api, first["client_id"], tokens["refresh_token"])
    assert stale.status_code == 401 and stale.json()["error"] == "invalid_client"
    again = register(api, client_name="Claude", redirect_uris=CLAUDE_CALLBACKS)
    auth = start(again["client_id"], redirect_uri=CLAUDE_CALLBACKS[0])
    assert exchange(api, auth, callback_params(allow(browser, auth))["code"]).status_code == 200


def test_chatgpt_cimd_with_resource_echoed(documents: str, browser: Any) -> None:
    api = Client()
    client_id = f"{documents}/chatgpt.json"
    auth = start(client_id, redirect_uri=CHATGPT_CALLBACK)
    params = callback_params(allow(browser, auth))
    tokens = exchange(api, auth, params["code"], resource=RESOURCE).json()  # ChatGPT repeats the resource
    assert tokens["access_token"].startswith("mcpa_")
    again = refresh(api, client_id, tokens["refresh_token"], resource=RESOURCE)
    assert again.status_code == 200, again.content


def test_chatgpt_sees_no_registration_endpoint_that_refuses(documents: str, settings: Any) -> None:
    settings.MCP_GATEWAY_OAUTH_DYNAMIC_REGISTRATION = False
    metadata = discover(Client())
    assert "registration_endpoint" not in metadata and metadata["client_id_metadata_document_supported"] is True
