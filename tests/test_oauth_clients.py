"""Real OAuth clients end to end against a live daphne: the Python SDK with a Client ID Metadata Document, and
mcp-remote (dynamic registration) with a real browser that logs in with the site's form and clicks "Allow".

The Python SDK requires an https metadata document URL: it is served on loopback with a certificate made here,
which the server trusts through ``SSL_CERT_FILE`` (the fetcher uses the default trust store), and admitted by
the test-only ``MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from asgiref.sync import sync_to_async
from mcp import Client as McpClient
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from mcp_oauth.models import Grant, OAuthClient
from mcp_sessions.models import McpSession

from .clients import TRANSPORTS
from .conftest import IN_CI, login_headers, off_loop
from .interop.harness import ClientFailed, InteropUnavailable, ensure_node_tools, run_mcp_remote

pytestmark = pytest.mark.django_db(transaction=True)
CALLBACK = "http://127.0.0.1:47321/callback"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Documents(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = f"https://127.0.0.1:{self.server.server_address[1]}{self.path}"
        body = json.dumps(
            {
                "client_id": url,
                "client_name": "Python SDK test client",
                "redirect_uris": [CALLBACK],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def https_documents(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = make_certificate(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Documents)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/oauth/client.json", cert
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class LoggedInApprover:
    """The person at the browser: opens the authorization URL with their login and presses "Allow"."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.result: AuthorizationCodeResult | None = None
        self.seen: list[str] = []

    async def redirect(self, url: str) -> None:
        self.seen.append(url)
        async with httpx2.AsyncClient(timeout=30, headers={"Cookie": self.headers["Cookie"]}) as http:
            page = await http.get(url)
            assert page.status_code == 200, page.text[:500]
            data = {"csrfmiddlewaretoken": self.headers["X-CSRFToken"], "decision": "allow"}
            done = await http.post(url, data=data)
        assert done.status_code == 302, done.text[:500]
        params = {k: v[0] for k, v in parse_qs(urlsplit(done.headers["location"]).query).items()}
        self.result = AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_python_sdk_with_a_client_id_metadata_document(
    start_daphne: Any, https_documents: tuple[str, Path], alice: Any, transport: str
) -> None:
    document_url, cert = https_documents
    server = start_daphne(
        overrides={"MCP_GATEWAY_OAUTH_CIMD_ALLOW_LOOPBACK": True}, extra_env={"SSL_CERT_FILE": str(cert)}
    )
    approver = LoggedInApprover(await sync_to_async(login_headers)(alice))
    url = f"{server.url}/mcp/sse" if transport == "sse" else f"{server.url}/mcp/"
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(redirect_uris=[CALLBACK], client_name="Python SDK test client"),
        storage=MemoryStorage(),
        redirect_handler=approver.redirect,
        callback_handler=approver.callback,
        client_metadata_url=document_url,
    )
    if transport == "sse":
        streams = sse_client(url, auth=provider)
    else:
        http = httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30, read=300))
        streams = streamable_http_client(url, http_client=http)
    async with McpClient(streams) as client:
        tools = await client.list_tools()
        result = await client.call_tool("whoami", {})
    if transport != "sse":
        await http.aclose()
    assert "whoami" in [tool.name for tool in tools.tools]
    assert "alice" in str(result.structured_content or result.content)
    assert approver.seen and f"client_id={document_url.replace(':', '%3A').replace('/', '%2F')}" in approver.seen[0]
    client = await OAuthClient.objects.aget(client_id=document_url)
    assert client.kind == "metadata_document"
    grant = await Grant.objects.aget(client=client)
    assert grant.resource == f"{server.url}/mcp"
    if transport == "sse":
        assert await McpSession.objects.filter(credential_ref=grant.ref).aexists()


BROWSER_SCRIPT = """#!{python}
import sys
with open({path!r}, "a") as handle:
    handle.write(sys.argv[-1] + "\\n")
"""


def approve_in_browser(chromium: Any, url: str, username: str, password: str) -> str:
    """Open ``url`` in Chromium, log in with the site's form, press "Allow"; where the browser ends up."""
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_selector("button[value=allow]")
        assert "mcp-remote" in page.content() or "MCP" in page.content()
        page.click("button[value=allow]")
        page.wait_for_url(lambda u: "/oauth/authorize" not in u, timeout=30_000)
        return str(page.url)
    finally:
        context.close()


@pytest.fixture
def frank(make_user: Any) -> Any:
    return make_user("frank")  # password "x"


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_mcp_remote_oauth_in_a_real_browser(
    daphne: Any, frank: Any, chromium: Any, tmp_path: Path, transport: str
) -> None:
    try:
        ensure_node_tools()
    except InteropUnavailable as exc:
        if IN_CI:
            raise
        pytest.skip(str(exc))
    urls = tmp_path / "opened.txt"
    script = tmp_path / "browser.py"
    script.write_text(BROWSER_SCRIPT.format(python=sys.executable, path=str(urls)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    endpoint = f"{daphne.url}/mcp/" if transport == "http" else f"{daphne.url}/mcp/sse"
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            run_mcp_remote, endpoint, transport=transport, tool="whoami", timeout=120, env={"BROWSER": str(script)}
        )
        deadline = time.monotonic() + 60
        while not (urls.exists() and urls.read_text().strip()) and not run.done():
            assert time.monotonic() < deadline, "mcp-remote never opened the authorization URL"
            time.sleep(0.2)
        if not run.done():
            landed = approve_in_browser(chromium, urls.read_text().split()[0], "frank", "x")
            assert "code=" in landed
        try:
            result = run.result(timeout=120)
        except ClientFailed as exc:
            pytest.fail(f"mcp-remote failed: {exc}\n{exc.stderr[-3000:] if exc.stderr else ''}")
    assert "whoami" in result.tools
    assert "frank" in (result.text or "")
    assert off_loop(lambda: Grant.objects.filter(user=frank, client__kind="dynamic").exists())


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_typescript_sdk_oauth_provider_with_dynamic_registration(daphne: Any, alice: Any, transport: str) -> None:
    try:
        tools = ensure_node_tools()
    except InteropUnavailable as exc:
        if IN_CI:
            raise
        pytest.skip(str(exc))
    headers = login_headers(alice)
    endpoint = f"{daphne.url}/mcp/" if transport == "http" else f"{daphne.url}/mcp/sse"
    script = tools.dir / "ts_oauth_client.mjs"
    cmd = [str(tools.node), str(script), "--url", endpoint, "--transport", transport, "--tool", "whoami"]
    cmd += ["--cookie", headers["Cookie"], "--csrf", headers["X-CSRFToken"]]
    done = subprocess.run(cmd, cwd=tools.dir, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, (done.stdout, done.stderr)
    result = json.loads(lines[-1])
    assert result["ok"], result
    assert "whoami" in result["tools"] and "alice" in result["text"]
    assert "resource=" in result["authorizationUrl"] and "code_challenge_method=S256" in result["authorizationUrl"]
    assert OAuthClient.objects.get(client_id=result["clientId"]).kind == "dynamic"
