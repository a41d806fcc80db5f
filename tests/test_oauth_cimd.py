"""Client ID Metadata Documents (mcp_oauth.cimd, .clients): the fetcher's SSRF rules, its cache, and a whole flow.

Documents are served by a small HTTP server on loopback, admitted only through the test-only
``MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK``; without it, loopback is refused like any private address.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mcp_oauth import cimd
from mcp_oauth.clients import find_client
from mcp_oauth.models import OAuthClient

from .oauth_flow import REDIRECT, Client, allow, authorize_url, callback_params, exchange, refresh, start

pytestmark = pytest.mark.django_db


class DocumentServer(ThreadingHTTPServer):
    daemon_threads = True
    hits: dict[str, int]


class Handler(BaseHTTPRequestHandler):
    server: DocumentServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        document = {"client_id": url, "client_name": "Doc Client", "redirect_uris": [REDIRECT]}
        headers: dict[str, str] = {"Content-Type": "application/json"}
        body = json.dumps(document).encode()
        status = 200
        if self.path == "/cached.json":
            headers["Cache-Control"] = "public, max-age=86400"
        elif self.path == "/redirect.json":
            status, headers, body = 302, {"Location": "/client.json"}, b""
        elif self.path == "/oversize.json":
            body = json.dumps({**document, "padding": "x" * 20_000}).encode()
        elif self.path == "/undeclared-oversize.json":
            headers["Transfer-Encoding"] = "chunked"
        elif self.path == "/slow.json":
            time.sleep(cimd.TIMEOUT + 1)
        elif self.path == "/mismatch.json":
            body = json.dumps({**document, "client_id": "https://claude.ai/oauth/mcp-oauth-client-metadata"}).encode()
        elif self.path == "/secret.json":
            body = json.dumps({**document, "token_endpoint_auth_method": "client_secret_basic"}).encode()
        elif self.path == "/not-json.json":
            body = b"<html></html>"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.path == "/undeclared-oversize.json":
            self.end_headers()
            chunk = b"x" * 4096
            for _ in range(6):
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def documents() -> Iterator[DocumentServer]:
    server = DocumentServer(("127.0.0.1", 0), Handler)
    server.hits = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def loopback(settings: Any) -> None:
    settings.MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK = True


def url(server: DocumentServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


REFUSED_URLS = [
    pytest.param("https://10.1.2.3/client.json", id="private-address"),
    pytest.param("https://192.168.0.10/client.json", id="private-192-168"),
    pytest.param("https://169.254.169.254/latest/meta-data", id="link-local-metadata-service"),
    pytest.param("https://[::1]/client.json", id="loopback-v6"),
    pytest.param("https://localhost/client.json", id="loopback-name"),
    pytest.param("https://0.0.0.0/client.json", id="unspecified"),
    pytest.param("https://[::ffff:10.0.0.1]/client.json", id="v4-mapped-private"),
    pytest.param("http://example.com/client.json", id="plain-http"),
    pytest.param("https://user:pw@example.com/client.json", id="credentials-in-url"),
]


@pytest.mark.parametrize("address", REFUSED_URLS)
def test_refused_without_connecting(address: str) -> None:
    with pytest.raises(cimd.DocumentRefused):
        cimd.fetch(address)


def test_loopback_refused_unless_the_test_setting(documents: DocumentServer) -> None:
    with pytest.raises(cimd.DocumentRefused):
        cimd.fetch(url(documents, "/client.json"))
    assert documents.hits == {}


DOCUMENT_REFUSALS = [
    pytest.param("/redirect.json", "redirects are not followed", id="redirecting"),
    pytest.param("/oversize.json", "over 16384 bytes", id="oversize-declared"),
    pytest.param("/undeclared-oversize.json", "over 16384 bytes", id="oversize-chunked"),
    pytest.param("/slow.json", "did not arrive", id="slow"),
    pytest.param("/mismatch.json", "client_id is not its own URL", id="mismatched-client-id"),
    pytest.param("/secret.json", "must use token_endpoint_auth_method 'none'", id="client-secret-method"),
    pytest.param("/not-json.json", "not JSON", id="not-json"),
]


@pytest.mark.parametrize(("path", "reason"), DOCUMENT_REFUSALS)
def test_document_refusals(loopback: None, documents: DocumentServer, path: str, reason: str) -> None:
    with pytest.raises(cimd.DocumentRefused, match=reason):
        cimd.fetch(url(documents, path))
    if path != "/slow.json":  # (once is enough to wait for)
        assert find_client(url(documents, path)) is None


def test_host_allowlist(loopback: None, documents: DocumentServer, settings: Any) -> None:
    settings.MCP_GATEWAY_OAUTH_CLIENT_ID_METADATA_HOSTS = ["claude.ai", "chatgpt.com"]
    with pytest.raises(cimd.DocumentRefused, match="not accepted"):
        cimd.fetch(url(documents, "/client.json"))


def test_cache_follows_headers_at_most_an_hour(loopback: None, documents: DocumentServer) -> None:
    uncached, cached = url(documents, "/client.json"), url(documents, "/cached.json")
    for _ in range(2):
        assert find_client(uncached) is not None
        assert find_client(cached) is not None
    assert documents.hits == {"/client.json": 2, "/cached.json": 1}
    client = OAuthClient.objects.get(client_id=cached)
    assert client.metadata_expires_at is not None
    assert (client.metadata_expires_at - client.created_at).total_seconds() <= cimd.MAX_CACHE_AGE + 5


def test_cimd_off_knows_no_document_client(loopback: None, documents: DocumentServer, settings: Any) -> None:
    settings.MCP_GATEWAY_OAUTH_CLIENT_ID_METADATA_DOCUMENTS = False
    assert find_client(url(documents, "/client.json")) is None
    assert documents.hits == {}


def test_flow_with_a_metadata_document_client(
    loopback: None, documents: DocumentServer, django_user_model: Any
) -> None:
    client_id = url(documents, "/client.json")
    browser = Client()
    browser.force_login(django_user_model.objects.create_user("carol"))
    auth = start(client_id)
    params = callback_params(allow(browser, auth))
    tokens = exchange(Client(), auth, params["code"]).json()
    assert tokens["access_token"].startswith("mcpa_")
    assert refresh(Client(), client_id, tokens["refresh_token"]).status_code == 200
    assert OAuthClient.objects.get(client_id=client_id).name == "Doc Client"


def test_redirect_uris_exactly_as_listed(loopback: None, documents: DocumentServer, django_user_model: Any) -> None:
    client_id = url(documents, "/client.json")
    browser = Client()
    browser.force_login(django_user_model.objects.create_user("dave"))
    response = browser.get(authorize_url(start(client_id), redirect_uri="https://evil.example/callback"))
    assert response.status_code == 400 and not response.has_header("Location")
